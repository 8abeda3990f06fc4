//! Many messages and their deliveries written with a few statements: the
//! messages, one counter update per target device, the deliveries. Used by
//! the group commit's sends and by inbound transactions, where it replaces
//! a handful of statements per message (each a round trip on PostgreSQL).

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;

use super::deliver::MessageRef;
use super::rows_pg::{self, DeliveryRow};
use super::{DeliveryMode, MailboxError, NewDelivery};
use crate::storage::schema::{deliveries, devices, messages};
use crate::storage::DbConnection;

/// Rows per multi-row statement: PostgreSQL allows 65,535 bound values and
/// SQLite 32,766; the widest row here binds 9.
pub(super) const ROWS_PER_STATEMENT: usize = 1_000;

/// A recipient account and its target devices' rows with their key wraps.
pub(super) type AccountTargets = (String, Vec<(i64, Vec<u8>)>);

/// One message to store. Message ids are distinct within one call.
pub(super) struct NewMessage<'a> {
    pub origin: &'a str,
    pub message_id: &'a str,
    /// The local sender's account and device; none for relayed mail.
    pub sender: Option<(&'a str, &'a str)>,
    pub digest: &'a [u8],
    pub body: &'a [u8],
    pub delivery: DeliveryMode,
    pub expires_at: i64,
    pub targets: &'a [AccountTargets],
}

/// What [`insert`] wrote.
pub(super) struct Written {
    /// The messages' row ids, in the order given.
    pub message_rows: Vec<i64>,
    /// Each delivery's id (its device's cursor) by (message row, device row).
    pub cursors: HashMap<(i64, i64), i64>,
}

impl Written {
    /// The gateway's notes of the deliveries of `message` to `targets`.
    pub fn notes(
        &self,
        message: &MessageRef<'_>,
        targets: &[AccountTargets],
        now: i64,
    ) -> Result<Vec<NewDelivery>, MailboxError> {
        let mut notes = Vec::new();
        for (device_row, wrap) in targets.iter().flat_map(|(_, t)| t) {
            // `insert` returns an id for every delivery; a gap is a bug.
            let cursor = *self
                .cursors
                .get(&(message.row, *device_row))
                .ok_or(diesel::result::Error::NotFound)?;
            notes.push(message.new_delivery(*device_row, cursor, wrap, now));
        }
        Ok(notes)
    }
}

/// Writes `batch`: messages, device counters, deliveries.
pub(super) fn insert(
    conn: &mut DbConnection,
    batch: &[NewMessage<'_>],
    now: i64,
) -> Result<Written, MailboxError> {
    if batch.is_empty() {
        return Ok(Written {
            message_rows: Vec::new(),
            cursors: HashMap::new(),
        });
    }
    let message_rows = insert_messages(conn, batch, now)?;
    // Device rows are locked (by the counter update, in id order) before
    // any delivery draws its id, so one device's deliveries commit in id
    // order: a device that syncs past a cursor never sees a lower id
    // commit later.
    let mut bumps: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for message in batch {
        let body_len = message.body.len() as i64;
        for (device_row, _) in message.targets.iter().flat_map(|(_, t)| t) {
            let bump = bumps.entry(*device_row).or_default();
            bump.0 += 1;
            bump.1 = bump.1.saturating_add(body_len);
        }
    }
    for (&device_row, &(count, bytes)) in &bumps {
        match conn {
            DbConnection::Postgres(pg) => rows_pg::bump_counters(pg, device_row, count, bytes)?,
            DbConnection::Sqlite(c) => diesel::update(devices::table.find(device_row))
                .set((
                    devices::pending_messages.eq(devices::pending_messages + count),
                    devices::pending_bytes.eq(devices::pending_bytes + bytes),
                ))
                .execute(c)?,
        };
    }
    let cursors = insert_deliveries(conn, batch, &message_rows, now)?;
    Ok(Written {
        message_rows,
        cursors,
    })
}

fn insert_messages(
    conn: &mut DbConnection,
    batch: &[NewMessage<'_>],
    now: i64,
) -> Result<Vec<i64>, MailboxError> {
    let ids: HashMap<String, i64> = match conn {
        DbConnection::Postgres(pg) => rows_pg::insert_messages(pg, batch, now)?
            .into_iter()
            .collect(),
        DbConnection::Sqlite(c) => insert_messages_sqlite(c, batch, now)?,
    };
    batch
        .iter()
        .map(|message| {
            ids.get(message.message_id)
                .copied()
                .ok_or(diesel::result::Error::NotFound.into())
        })
        .collect()
}

fn insert_messages_sqlite(
    c: &mut diesel::SqliteConnection,
    batch: &[NewMessage<'_>],
    now: i64,
) -> QueryResult<HashMap<String, i64>> {
    let rows: Vec<_> = batch
        .iter()
        .map(|message| {
            (
                messages::origin.eq(message.origin),
                messages::message_id.eq(message.message_id),
                messages::sender_account.eq(message.sender.map(|(account, _)| account)),
                messages::sender_device.eq(message.sender.map(|(_, device)| device)),
                messages::request_digest.eq(message.digest),
                messages::body.eq(message.body),
                messages::delivery_mode.eq(message.delivery.as_str()),
                messages::created_at.eq(now),
                messages::expires_at.eq(message.expires_at),
            )
        })
        .collect();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let returned: Vec<(String, i64)> = diesel::insert_into(messages::table)
            .values(chunk)
            .returning((messages::message_id, messages::id))
            .get_results(c)?;
        ids.extend(returned);
    }
    Ok(ids)
}

fn insert_deliveries(
    conn: &mut DbConnection,
    batch: &[NewMessage<'_>],
    message_rows: &[i64],
    now: i64,
) -> Result<HashMap<(i64, i64), i64>, MailboxError> {
    let mut rows = Vec::new();
    for (message, message_row) in batch.iter().zip(message_rows) {
        for (account, targets) in message.targets {
            for (device_row, wrap) in targets {
                rows.push(DeliveryRow {
                    message_row: *message_row,
                    device_row: *device_row,
                    recipient_account: account,
                    key_wrap: wrap,
                    body_bytes: message.body.len() as i64,
                    expires_at: message.expires_at,
                });
            }
        }
    }
    let mut cursors = HashMap::with_capacity(rows.len());
    match conn {
        DbConnection::Postgres(pg) => {
            let returned = rows_pg::insert_deliveries(pg, &rows, now)?;
            cursors.extend(returned.into_iter().map(|(m, d, id)| ((m, d), id)));
        }
        DbConnection::Sqlite(c) => {
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let values: Vec<_> = chunk
                    .iter()
                    .map(|d| {
                        (
                            deliveries::message_row.eq(d.message_row),
                            deliveries::device_row.eq(d.device_row),
                            deliveries::recipient_account.eq(d.recipient_account),
                            deliveries::key_wrap.eq(d.key_wrap),
                            deliveries::body_bytes.eq(d.body_bytes),
                            deliveries::created_at.eq(now),
                            deliveries::expires_at.eq(d.expires_at),
                        )
                    })
                    .collect();
                let returned: Vec<(i64, i64, i64)> = diesel::insert_into(deliveries::table)
                    .values(values)
                    .returning((
                        deliveries::message_row,
                        deliveries::device_row,
                        deliveries::id,
                    ))
                    .get_results(c)?;
                cursors.extend(returned.into_iter().map(|(m, d, id)| ((m, d), id)));
            }
        }
    }
    Ok(cursors)
}

/// The devices' pending counts after a delivery of `body_len` bytes to
/// each of `targets`, so that later messages of the same batch are checked
/// against the quota as if the earlier ones were stored already.
pub(super) fn count_pending(
    devices: &mut [super::deliver::DeviceState],
    targets: &[(i64, Vec<u8>)],
    body_len: i64,
) {
    for device in devices.iter_mut() {
        if targets.iter().any(|(row, _)| *row == device.0) {
            device.3 += 1;
            device.4 = device.4.saturating_add(body_len);
        }
    }
}
