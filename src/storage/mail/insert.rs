//! Many messages and their deliveries written together: the messages, one
//! counter update per target device, the deliveries and, for a group
//! commit's sends, the senders' receipts, the idempotency records and the
//! outbox rows. Used by the group commit's sends and by inbound
//! transactions, where it replaces a handful of statements per message.
//!
//! On PostgreSQL all of it is one statement (`insert_pg`): every statement
//! is a round trip in the writer's serial conversation with the database,
//! which is what bounds a batch there. SQLite, where a statement costs no
//! round trip, runs a few multi-row statements (`insert_sqlite`).

use std::collections::{BTreeMap, HashMap};

use super::{insert_pg, insert_sqlite};
use crate::storage::{DbConnection, StorageError};
use homing_proto::wire::DeliveryMode;

/// Rows per multi-row statement on SQLite, which allows 32,766 bound
/// values; the widest row there binds 9.
pub const ROWS_PER_STATEMENT: usize = 1_000;

/// A recipient account and its target devices' rows with their key wraps.
pub type AccountTargets = (String, Vec<(i64, Vec<u8>)>);

/// One message to store. Message ids are distinct within one call, and
/// all messages of one call have the same origin.
pub struct NewMessage<'a> {
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

/// A sender's receipt for one recipient: (sender, message id, recipient, state).
pub type ReceiptRow<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A send's idempotency record: (sender, message id, request digest, response).
pub type RecordRow<'a> = (&'a str, &'a str, &'a [u8], String);

/// A message's relay work for one server: (message id, destination, the
/// recipients there as JSON).
pub type OutboxRow<'a> = (&'a str, &'a str, String);

/// What a group commit's sends write beside their messages; nothing for
/// relayed mail.
#[derive(Default)]
pub struct Beside<'a> {
    pub receipts: Vec<ReceiptRow<'a>>,
    pub records: Vec<RecordRow<'a>>,
    pub outbox: Vec<OutboxRow<'a>>,
}

/// One delivery to insert: its message (an index into the batch), its
/// device and what the device needs to open the message.
pub struct DeliveryRow<'a> {
    pub message: usize,
    pub device_row: i64,
    pub recipient_account: &'a str,
    pub key_wrap: &'a [u8],
}

/// The pending messages and bytes a batch adds to each target device, in
/// device row order.
pub type Bumps = BTreeMap<i64, (i64, i64)>;

/// What [`insert`] wrote.
pub struct Written {
    /// The messages' row ids, in the order given.
    pub message_rows: Vec<i64>,
    /// Each delivery's id (its device's cursor) by (message row, device row).
    pub cursors: HashMap<(i64, i64), i64>,
}

impl Written {
    /// The id of the delivery of `message_row` to `device_row`. `insert`
    /// returns an id for every delivery; a gap is a bug.
    pub fn cursor(&self, message_row: i64, device_row: i64) -> Result<i64, StorageError> {
        self.cursors
            .get(&(message_row, device_row))
            .copied()
            .ok_or(StorageError::Query(diesel::result::Error::NotFound))
    }
}

/// Writes `batch` and what goes `beside` it. Device rows are locked (by
/// the counter update, in id order) before any delivery draws its id, so
/// one device's deliveries commit in id order: a device that syncs past a
/// cursor never sees a lower id commit later.
pub fn insert(
    conn: &mut DbConnection,
    batch: &[NewMessage<'_>],
    beside: &Beside<'_>,
    now: i64,
) -> Result<Written, StorageError> {
    if batch.is_empty() {
        return Ok(Written {
            message_rows: Vec::new(),
            cursors: HashMap::new(),
        });
    }
    let mut bumps = Bumps::new();
    let mut deliveries = Vec::new();
    for (index, message) in batch.iter().enumerate() {
        let body_len = message.body.len() as i64;
        for (account, targets) in message.targets {
            for (device_row, wrap) in targets {
                let bump = bumps.entry(*device_row).or_default();
                bump.0 += 1;
                bump.1 = bump.1.saturating_add(body_len);
                deliveries.push(DeliveryRow {
                    message: index,
                    device_row: *device_row,
                    recipient_account: account,
                    key_wrap: wrap,
                });
            }
        }
    }
    let (message_ids, cursors) = match conn {
        DbConnection::Postgres(pg) => {
            insert_pg::store(pg, batch, &bumps, &deliveries, beside, now)?
        }
        DbConnection::Sqlite(c) => {
            let stored = insert_sqlite::store(c, batch, &bumps, &deliveries, beside, now)?;
            // The delivery feed starts with each receipt's first state (on
            // PostgreSQL, in the one statement above).
            let first: Vec<_> = beside
                .receipts
                .iter()
                .map(|&(sender, id, recipient, state)| (sender, id, recipient, state, None))
                .collect();
            super::feed::append(conn, &first, now)?;
            stored
        }
    };
    let message_rows = batch
        .iter()
        .map(|message| {
            message_ids
                .get(message.message_id)
                .copied()
                .ok_or(diesel::result::Error::NotFound.into())
        })
        .collect::<Result<Vec<i64>, StorageError>>()?;
    if cursors.len() != deliveries.len() {
        // A device row that vanished: the counter update found nothing to
        // lock, so its deliveries were not written.
        return Err(diesel::result::Error::NotFound.into());
    }
    Ok(Written {
        message_rows,
        cursors,
    })
}

/// Message rows by message id, and delivery ids by (message row, device row).
pub type Stored = (HashMap<String, i64>, HashMap<(i64, i64), i64>);
