//! The purge task: expired deliveries, devices gone silent, finished
//! messages and stale bookkeeping, removed in bounded batches. Every step is
//! a set of deletes of rows that qualify by time, so running it on several
//! replicas at once is safe: a row is deleted (and counted) once.

use std::time::Duration;

use diesel::prelude::*;

use super::status::{mark_expired, StatusEvent};
use super::{remove_deliveries, remove_finished_messages, MailboxError};
use crate::storage::schema::{
    auth_challenges, auth_tokens, deliveries, delivery_receipts, devices, federation_nonces,
    inbound_txns, messages, outbox, send_idempotency,
};
use crate::storage::{write_transaction, DbConnection};
use crate::time::duration_ms;
use crate::with_backend;

/// What the purge task needs to know.
#[derive(Debug, Clone)]
pub struct PurgeSettings {
    pub max_pending_age: Duration,
    pub device_inactivity: Duration,
    /// Most rows of each kind one pass removes.
    pub batch: i64,
}

/// What one pass removed.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub expired_deliveries: usize,
    pub inactive_deliveries: usize,
    pub finished_messages: usize,
    pub bounced: usize,
    pub bookkeeping_rows: usize,
    pub status_events: Vec<StatusEvent>,
}

impl PurgeReport {
    /// True when some batch was full, so another pass should follow soon.
    pub fn saturated(&self, batch: i64) -> bool {
        let batch = usize::try_from(batch).unwrap_or(usize::MAX);
        self.expired_deliveries >= batch
            || self.inactive_deliveries >= batch
            || self.finished_messages >= batch
    }
}

/// One pass of every purge step at time `now`.
pub fn purge_once(
    conn: &mut DbConnection,
    settings: &PurgeSettings,
    now: i64,
) -> Result<PurgeReport, MailboxError> {
    let mut report = PurgeReport::default();
    let batch = settings.batch.max(1);

    // Deliveries past their expiry: the sender learns they expired.
    let expired: Vec<i64> = with_backend!(conn, c => deliveries::table
        .filter(deliveries::expires_at.le(now))
        .order(deliveries::id.asc())
        .limit(batch)
        .select(deliveries::id)
        .load(c))?;
    let (count, events) = remove_and_report(conn, &expired, now)?;
    report.expired_deliveries = count;
    report.status_events.extend(events);

    // Devices silent past the inactivity limit stop being targets.
    let silent_before = now.saturating_sub(duration_ms(settings.device_inactivity));
    let inactive: Vec<i64> = with_backend!(conn, c => deliveries::table
        .inner_join(devices::table)
        .filter(devices::last_seen_at.lt(silent_before))
        .order(deliveries::id.asc())
        .limit(batch)
        .select(deliveries::id)
        .load(c))?;
    let (count, events) = remove_and_report(conn, &inactive, now)?;
    report.inactive_deliveries = count;
    report.status_events.extend(events);

    // Relay work past the maximum pending age: bounce it to the sender.
    let (count, events) = bounce_expired_outbox(conn, now, batch)?;
    report.bounced = count;
    report.status_events.extend(events);

    // Messages nothing refers to any more (all acked, or expired).
    let finished: Vec<i64> = with_backend!(conn, c => messages::table
        .filter(diesel::dsl::not(diesel::dsl::exists(
            deliveries::table.filter(deliveries::message_row.eq(messages::id)),
        )))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            outbox::table.filter(outbox::message_row.eq(messages::id)),
        )))
        .limit(batch)
        .select(messages::id)
        .load(c))?;
    report.finished_messages =
        write_transaction(conn, |conn| remove_finished_messages(conn, &finished))?;

    report.bookkeeping_rows = purge_bookkeeping(conn, settings, now)?;
    Ok(report)
}

/// Outbox rows whose message expired before the destination took it: the
/// sender's receipts for those recipients become `bounced`.
fn bounce_expired_outbox(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<(usize, Vec<StatusEvent>), MailboxError> {
    type Row = (i64, String, Option<String>, String);
    let rows: Vec<Row> = with_backend!(conn, c => outbox::table
        .inner_join(messages::table)
        .filter(messages::expires_at.le(now))
        .order(outbox::id.asc())
        .limit(batch)
        .select((outbox::id, messages::message_id, messages::sender_account, outbox::recipients))
        .load(c))?;
    if rows.is_empty() {
        return Ok((0, Vec::new()));
    }
    write_transaction(conn, |conn| {
        let mut events = Vec::new();
        let mut removed = 0;
        for (id, message_id, sender, recipients) in &rows {
            removed += with_backend!(conn, c => diesel::delete(outbox::table.find(id)).execute(c))?;
            let Some(sender) = sender else { continue };
            let recipients: Vec<super::RecipientWraps> =
                serde_json::from_str(recipients).unwrap_or_default();
            for recipient in recipients {
                let updated = with_backend!(conn, c => diesel::update(
                    delivery_receipts::table
                        .find((sender, message_id, &recipient.address))
                        .filter(delivery_receipts::state.eq("queued")),
                )
                .set((delivery_receipts::state.eq("bounced"), delivery_receipts::updated_at.eq(now)))
                .execute(c))?;
                if updated == 1 {
                    events.push(StatusEvent::new(
                        sender.clone(),
                        message_id.clone(),
                        recipient.address,
                        "bounced",
                        now,
                    ));
                }
            }
        }
        Ok((removed, events))
    })
}

fn remove_and_report(
    conn: &mut DbConnection,
    ids: &[i64],
    now: i64,
) -> Result<(usize, Vec<StatusEvent>), MailboxError> {
    if ids.is_empty() {
        return Ok((0, Vec::new()));
    }
    write_transaction(conn, |conn| {
        let removed = remove_deliveries(conn, ids)?;
        let mut events = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for row in &removed {
            if !seen.insert((row.message_row, row.recipient_account.clone())) {
                continue;
            }
            let remaining: i64 = with_backend!(conn, c => deliveries::table
                .filter(deliveries::message_row.eq(row.message_row))
                .filter(deliveries::recipient_account.eq(&row.recipient_account))
                .count()
                .get_result(c))?;
            if remaining == 0 {
                if let Some(event) =
                    mark_expired(conn, row.message_row, &row.recipient_account, now)?
                {
                    events.push(event);
                }
            }
        }
        Ok((removed.len(), events))
    })
}

/// Challenges, tokens, nonces and records whose purpose has passed.
fn purge_bookkeeping(
    conn: &mut DbConnection,
    settings: &PurgeSettings,
    now: i64,
) -> Result<usize, MailboxError> {
    let old = now.saturating_sub(duration_ms(settings.max_pending_age));
    let mut removed = 0;
    removed += with_backend!(conn, c => diesel::delete(auth_challenges::table.filter(auth_challenges::expires_at.le(now))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(auth_tokens::table.filter(auth_tokens::expires_at.le(now))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(federation_nonces::table.filter(federation_nonces::expires_at.le(now))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(send_idempotency::table.filter(send_idempotency::created_at.le(old))).execute(c))?;
    // Every change of a receipt comes before its message's pending age
    // runs out, so two pending ages from its creation keep it at least one
    // past its last change; keyed on a column no change touches.
    let receipts_old = old.saturating_sub(duration_ms(settings.max_pending_age));
    removed += with_backend!(conn, c => diesel::delete(delivery_receipts::table.filter(delivery_receipts::created_at.le(receipts_old))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(inbound_txns::table.filter(inbound_txns::received_at.le(old))).execute(c))?;
    Ok(removed)
}
