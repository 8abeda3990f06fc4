//! Fetching and acknowledging a device's pending deliveries.

use std::collections::BTreeSet;
use std::time::Duration;

use diesel::prelude::*;

use super::status::{mark_delivered, StatusEvent};
use super::{
    remove_deliveries, remove_finished_messages, DeliveryMode, MailboxError, SyncItem, SyncPage,
};
use crate::crypto::b64;
use crate::storage::schema::{accounts, deliveries, messages};
use crate::storage::DbConnection;
use crate::time::duration_ms;
use crate::with_backend;

/// Most items one sync returns.
pub const MAX_SYNC_LIMIT: i64 = 500;
/// Most message ids one ack names.
pub const MAX_ACK_IDS: usize = 500;
/// `last_seen_at` is written at most this often per device, so syncing
/// does not turn every read into a write.
const SEEN_GRANULARITY_MS: i64 = 60_000;

type Row = (i64, String, String, Vec<u8>, Vec<u8>, String, i64, i64);

/// Pending deliveries of `device_row` after `cursor`, oldest first. The
/// query walks the `(device_row, id)` index only, so its cost does not grow
/// with other devices' mail.
pub fn sync(
    conn: &mut DbConnection,
    device_row: i64,
    cursor: i64,
    limit: i64,
) -> Result<SyncPage, MailboxError> {
    let limit = limit.clamp(1, MAX_SYNC_LIMIT);
    let now = crate::time::now_ms();
    let mut rows: Vec<Row> = with_backend!(conn, c => deliveries::table
        .inner_join(messages::table)
        .filter(deliveries::device_row.eq(device_row))
        .filter(deliveries::id.gt(cursor))
        .filter(deliveries::expires_at.gt(now))
        .order(deliveries::id.asc())
        .limit(limit + 1)
        .select((
            deliveries::id,
            messages::message_id,
            messages::origin,
            messages::body,
            deliveries::key_wrap,
            messages::delivery_mode,
            deliveries::created_at,
            deliveries::expires_at,
        ))
        .load(c))?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    crate::storage::mail::mark_seen(conn, device_row, now - SEEN_GRANULARITY_MS, now)?;
    let items: Vec<SyncItem> = rows.into_iter().map(item_from_row).collect();
    Ok(SyncPage {
        cursor: items.last().map_or(cursor, |item| item.cursor),
        items,
        more,
    })
}

fn item_from_row(row: Row) -> SyncItem {
    let (cursor, message_id, origin, body, key_wrap, mode, received_at, expires_at) = row;
    SyncItem {
        cursor,
        message_id,
        origin,
        body: b64(&body),
        key_wrap: b64(&key_wrap),
        delivery: DeliveryMode::from_db(&mode),
        received_at,
        expires_at,
    }
}

/// The newest pending delivery of `device_row` after `cursor`, for a device
/// that reconnects with a resume point.
pub fn latest_pending(
    conn: &mut DbConnection,
    device_row: i64,
    cursor: i64,
) -> Result<Option<i64>, MailboxError> {
    let now = crate::time::now_ms();
    Ok(with_backend!(conn, c => deliveries::table
        .filter(deliveries::device_row.eq(device_row))
        .filter(deliveries::id.gt(cursor))
        .filter(deliveries::expires_at.gt(now))
        .select(diesel::dsl::max(deliveries::id))
        .first::<Option<i64>>(c))?)
}

/// What an ack changed.
#[derive(Debug, Clone, Default)]
pub struct AckOutcome {
    pub acknowledged: usize,
    pub purged_messages: usize,
    pub status_events: Vec<StatusEvent>,
}

/// Checks an ack's size before it queues for a writer.
pub fn check_ack(message_ids: &[String]) -> Result<(), MailboxError> {
    if message_ids.len() > MAX_ACK_IDS {
        return Err(MailboxError::Invalid(format!(
            "at most {MAX_ACK_IDS} ids per ack"
        )));
    }
    Ok(())
}

/// `ACK(message_id, device)` for each id, inside the group commit's
/// transaction (which rolls back every row of a failed ack): the device's
/// deliveries of those messages end. Ids of unknown messages or other
/// devices' deliveries change nothing. `message_ids` must have passed
/// `check_ack`.
pub fn ack_within(
    conn: &mut DbConnection,
    device_row: i64,
    message_ids: &[String],
    max_keep: Duration,
) -> Result<AckOutcome, MailboxError> {
    if message_ids.is_empty() {
        return Ok(AckOutcome::default());
    }
    let now = crate::time::now_ms();
    let own: Vec<(i64, i64, String, String)> = with_backend!(conn, c => deliveries::table
            .inner_join(messages::table)
            .filter(deliveries::device_row.eq(device_row))
            .filter(messages::message_id.eq_any(message_ids))
            .select((deliveries::id, deliveries::message_row, deliveries::recipient_account, messages::delivery_mode))
            .load(c))?;
    let ids: Vec<i64> = own.iter().map(|row| row.0).collect();
    let removed = remove_deliveries(conn, &ids)?;
    let mut outcome = AckOutcome {
        acknowledged: removed.len(),
        ..AckOutcome::default()
    };
    let mut touched = BTreeSet::new();
    for (_, message_row, recipient, mode) in &own {
        if !touched.insert((*message_row, recipient.clone())) {
            continue;
        }
        if DeliveryMode::from_db(mode) == DeliveryMode::Any {
            end_for_other_devices(conn, *message_row, recipient, now, max_keep)?;
        }
        let remaining: i64 = with_backend!(conn, c => deliveries::table
                .filter(deliveries::message_row.eq(message_row))
                .filter(deliveries::recipient_account.eq(recipient))
                .filter(deliveries::expires_at.gt(now))
                .count()
                .get_result(c))?;
        let kept_for_others = DeliveryMode::from_db(mode) == DeliveryMode::Any;
        if remaining == 0 || kept_for_others {
            if let Some(event) = mark_delivered(conn, *message_row, recipient, now)? {
                outcome.status_events.push(event);
            }
        }
    }
    let message_rows: Vec<i64> = touched.iter().map(|(row, _)| *row).collect();
    outcome.purged_messages = remove_finished_messages(conn, &message_rows)?;
    Ok(outcome)
}

/// In `any` mode the first ack ends the message for the recipient's other
/// devices: at once under purge-on-ack, or after the recipient's `keep`
/// duration (capped by the server) for devices that sync later.
fn end_for_other_devices(
    conn: &mut DbConnection,
    message_row: i64,
    recipient: &str,
    now: i64,
    max_keep: Duration,
) -> Result<(), MailboxError> {
    let keep_ms: Option<Option<i64>> = with_backend!(conn, c => accounts::table
        .find(recipient)
        .select(accounts::retention_keep_ms)
        .first(c)
        .optional())?;
    match keep_ms.flatten() {
        Some(keep) => {
            let until = now.saturating_add(keep.min(duration_ms(max_keep)));
            crate::storage::mail::shorten_deliveries(conn, message_row, recipient, until)?;
        }
        None => {
            let others: Vec<i64> = with_backend!(conn, c => deliveries::table
                .filter(deliveries::message_row.eq(message_row))
                .filter(deliveries::recipient_account.eq(recipient))
                .select(deliveries::id)
                .load(c))?;
            remove_deliveries(conn, &others)?;
        }
    }
    Ok(())
}
