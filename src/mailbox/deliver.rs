//! Local delivery, shared by local sends and inbound federation: check a
//! recipient's target devices and quota, then write one delivery row per
//! device with the per-device counters.

use std::collections::HashMap;
use std::time::Duration;

use diesel::prelude::*;

use super::{MailboxError, NewDelivery, StaleRecipient, SyncItem};
use crate::address::Address;
use crate::config::Limits;
use crate::storage::schema::{accounts, deliveries, devices};
use crate::storage::DbConnection;
use crate::time::duration_ms;
use crate::with_backend;

/// A recipient's devices checked and ready to be written.
pub(crate) struct Plan {
    pub recipient_account: String,
    pub address: String,
    pub targets: Vec<(i64, Vec<u8>)>,
    /// Some target device is over its pending quota.
    pub full: bool,
}

impl Plan {
    /// The recipient's status in the sender's answer.
    pub fn status(&self) -> &'static str {
        if self.full {
            "mailbox_full"
        } else if self.targets.is_empty() {
            "no_active_devices"
        } else {
            "stored"
        }
    }
}

/// The checks of a send's local recipients, gathered in recipient order.
#[derive(Default)]
pub(crate) struct SendChecks {
    pub plans: Vec<Plan>,
    stale: Vec<StaleRecipient>,
}

impl SendChecks {
    /// Adds one recipient's check; an unknown recipient refuses the send.
    pub fn add(&mut self, check: RecipientCheck, address: &Address) -> Result<(), MailboxError> {
        match check {
            RecipientCheck::Ready(plan) => self.plans.push(plan),
            RecipientCheck::Stale(recipient) => self.stale.push(recipient),
            RecipientCheck::Unknown => {
                return Err(MailboxError::UnknownRecipient(address.to_string()))
            }
        }
        Ok(())
    }

    /// The plans, unless some recipient was stale or (without remote
    /// recipients to carry the send) every mailbox is full.
    pub fn finish(self, has_remote: bool, limits: &Limits) -> Result<Vec<Plan>, MailboxError> {
        if !self.stale.is_empty() {
            return Err(MailboxError::StaleDevices(self.stale));
        }
        if !has_remote && self.plans.iter().all(|p| p.full) {
            return Err(MailboxError::MailboxFull {
                limit_messages: limits.max_pending_messages_per_device,
                limit_bytes: limits.max_pending_bytes_per_device,
            });
        }
        Ok(self.plans)
    }
}

/// The outcome of checking one local recipient.
pub(crate) enum RecipientCheck {
    Ready(Plan),
    Stale(StaleRecipient),
    Unknown,
}

/// What a check needs besides the recipient.
#[derive(Clone, Copy)]
pub(crate) struct CheckRules<'a> {
    pub limits: &'a Limits,
    pub device_inactivity: Duration,
    /// The sending device, which never sends to itself.
    pub exclude: Option<(&'a str, &'a str)>,
    /// The sender's share of each device's quota, and who the sender is
    /// (origin server or local account).
    pub share: Option<(&'a super::share::Share, &'a str)>,
}

/// A live device of a recipient, as a check needs it.
pub(crate) type DeviceState = (i64, String, i64, i64, i64);

/// The account behind each of `aliases` with its live devices (id order),
/// in one statement: one round trip on PostgreSQL however many there are.
/// Unknown or disabled aliases are absent.
pub(crate) fn load_recipients(
    conn: &mut DbConnection,
    aliases: &[&str],
) -> Result<HashMap<String, (String, Vec<DeviceState>)>, MailboxError> {
    // A row per live device, or one row without a device for an account
    // that has none.
    type Row = (String, String, Option<DeviceState>);
    let joined: Vec<Row> = match conn {
        DbConnection::Postgres(pg) => super::rows_pg::load_recipients(pg, aliases)?,
        DbConnection::Sqlite(c) => accounts::table
            .left_join(
                devices::table.on(devices::account_key
                    .eq(accounts::account_key)
                    .and(devices::revoked_at.is_null())),
            )
            .filter(accounts::alias.eq_any(aliases))
            .filter(accounts::disabled_at.is_null())
            .order(devices::id.asc())
            .select((
                accounts::alias,
                accounts::account_key,
                (
                    devices::id,
                    devices::device_id,
                    devices::last_seen_at,
                    devices::pending_messages,
                    devices::pending_bytes,
                )
                    .nullable(),
            ))
            .load(c)?,
    };
    Ok(by_alias(joined))
}

/// Recipient rows (alias, account, a device if it has any) gathered per
/// alias, devices in the rows' order.
pub(crate) fn by_alias(
    rows: Vec<(String, String, Option<DeviceState>)>,
) -> HashMap<String, (String, Vec<DeviceState>)> {
    let mut found: HashMap<String, (String, Vec<DeviceState>)> = HashMap::new();
    for (alias, account, device) in rows {
        let entry = found.entry(alias).or_insert_with(|| (account, Vec::new()));
        entry.1.extend(device);
    }
    found
}

/// Checks `address`'s current devices against the devices the sender
/// wrapped the key for. Devices silent past the inactivity limit are not
/// required (and get no delivery); revoked or unknown ones are `extra`.
pub(crate) fn check_recipient(
    conn: &mut DbConnection,
    rules: &CheckRules<'_>,
    address: &Address,
    wraps: &HashMap<String, Vec<u8>>,
    body_len: i64,
    now: i64,
) -> Result<RecipientCheck, MailboxError> {
    let alias = address.alias().as_str();
    let Some((account, devices)) = load_recipients(conn, &[alias])?.remove(alias) else {
        return Ok(RecipientCheck::Unknown);
    };
    // A local send counts against its sending account's share.
    let Some((sender, _)) = rules.exclude else {
        return Ok(evaluate_recipient(
            rules, address, account, &devices, wraps, body_len, now,
        ));
    };
    let share = super::share::Share::load(
        conn,
        rules.limits,
        super::share::Source::Account,
        &[sender],
        devices.iter(),
    )?;
    let rules = CheckRules {
        share: Some((&share, sender)),
        ..*rules
    };
    Ok(evaluate_recipient(
        &rules, address, account, &devices, wraps, body_len, now,
    ))
}

/// The check itself, on devices already loaded (with any pending counts
/// the caller has added since).
pub(crate) fn evaluate_recipient(
    rules: &CheckRules<'_>,
    address: &Address,
    account: String,
    devices: &[DeviceState],
    wraps: &HashMap<String, Vec<u8>>,
    body_len: i64,
    now: i64,
) -> RecipientCheck {
    let inactive_before = now.saturating_sub(duration_ms(rules.device_inactivity));
    let candidates: Vec<_> = devices
        .iter()
        .filter(|(_, id, ..)| rules.exclude != Some((account.as_str(), id.as_str())))
        .collect();
    let mut missing: Vec<String> = candidates
        .iter()
        .filter(|(_, id, last_seen, ..)| *last_seen >= inactive_before && !wraps.contains_key(id))
        .map(|(_, id, ..)| id.clone())
        .collect();
    let mut extra: Vec<String> = wraps
        .keys()
        .filter(|id| !candidates.iter().any(|(_, known, ..)| known == *id))
        .cloned()
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        missing.sort();
        extra.sort();
        return RecipientCheck::Stale(StaleRecipient {
            address: address.to_string(),
            missing,
            extra,
        });
    }
    let max_messages = i64::from(rules.limits.max_pending_messages_per_device);
    let max_bytes = i64::try_from(rules.limits.max_pending_bytes_per_device).unwrap_or(i64::MAX);
    let mut full = false;
    let mut targets = Vec::new();
    for (row, id, last_seen, pending_messages, pending_bytes) in candidates {
        if *last_seen < inactive_before {
            continue;
        }
        full |=
            *pending_messages >= max_messages || pending_bytes.saturating_add(body_len) > max_bytes;
        if let Some((share, sender)) = rules.share {
            full |= share.over(*row, sender, body_len);
        }
        if let Some(wrap) = wraps.get(id) {
            targets.push((*row, wrap.clone()));
        }
    }
    RecipientCheck::Ready(Plan {
        recipient_account: account,
        address: address.to_string(),
        targets,
        full,
    })
}

/// The message a delivery belongs to, for inlining into `DM_NOTIFY`.
pub(crate) struct MessageRef<'a> {
    pub row: i64,
    pub message_id: &'a str,
    pub origin: &'a str,
    /// The body as base64url when it is small enough to inline.
    pub inline_body: Option<&'a str>,
    pub delivery: super::DeliveryMode,
    pub expires_at: i64,
    pub body_len: i64,
}

/// Writes the deliveries of `plan` and raises the devices' counters.
pub(crate) fn store_deliveries(
    conn: &mut DbConnection,
    message: &MessageRef<'_>,
    plan: &Plan,
    now: i64,
) -> Result<Vec<NewDelivery>, MailboxError> {
    if plan.targets.is_empty() {
        return Ok(Vec::new());
    }
    let device_rows: Vec<i64> = plan.targets.iter().map(|(row, _)| *row).collect();
    // The counter update locks the device rows (in id order, as everywhere)
    // before the deliveries draw their ids, so deliveries for one device
    // commit in id order: a device that syncs past a cursor can never have
    // a lower id commit later.
    with_backend!(conn, c => diesel::update(devices::table.filter(devices::id.eq_any(&device_rows)))
        .set((
            devices::pending_messages.eq(devices::pending_messages + 1),
            devices::pending_bytes.eq(devices::pending_bytes + message.body_len),
        ))
        .execute(c))?;
    let rows: Vec<_> = plan
        .targets
        .iter()
        .map(|(device_row, wrap)| {
            (
                deliveries::message_row.eq(message.row),
                deliveries::device_row.eq(*device_row),
                deliveries::recipient_account.eq(&plan.recipient_account),
                deliveries::key_wrap.eq(wrap),
                deliveries::body_bytes.eq(message.body_len),
                deliveries::created_at.eq(now),
                deliveries::expires_at.eq(message.expires_at),
            )
        })
        .collect();
    let ids: HashMap<i64, i64> = with_backend!(conn, c => diesel::insert_into(deliveries::table)
        .values(&rows)
        .returning((deliveries::device_row, deliveries::id))
        .get_results::<(i64, i64)>(c))?
    .into_iter()
    .collect();
    let mut created = Vec::with_capacity(plan.targets.len());
    for (device_row, wrap) in &plan.targets {
        // RETURNING yields a row per inserted row; a gap would be a bug.
        let id = *ids.get(device_row).ok_or(diesel::result::Error::NotFound)?;
        created.push(message.new_delivery(*device_row, id, wrap, now));
    }
    Ok(created)
}

impl MessageRef<'_> {
    /// The gateway's note of one stored delivery of this message.
    pub(crate) fn new_delivery(
        &self,
        device_row: i64,
        cursor: i64,
        wrap: &[u8],
        now: i64,
    ) -> NewDelivery {
        let inline = self.inline_body.map(|body| SyncItem {
            cursor,
            message_id: self.message_id.to_string(),
            origin: self.origin.to_string(),
            body: body.to_string(),
            key_wrap: crate::crypto::b64(wrap),
            delivery: self.delivery,
            received_at: now,
            expires_at: self.expires_at,
        });
        NewDelivery {
            device_row,
            cursor,
            inline,
        }
    }
}
