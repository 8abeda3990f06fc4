//! The purge task: expired deliveries, devices gone silent, finished
//! messages and stale bookkeeping, removed in bounded batches. Every step is
//! a set of deletes of rows that qualify by time, so running it on several
//! replicas at once is safe: a row is deleted (and counted) once.

use std::time::Duration;

use super::status::{mark_expired, StatusEvent};
use super::{remove_deliveries, remove_finished_messages, MailboxError};
use crate::storage::mail;
use crate::storage::{write_transaction, DbConnection};
use crate::time::duration_ms;

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
    let expired = mail::expired_deliveries(conn, now, batch)?;
    report.expired_deliveries = report.add(remove_and_report(conn, &expired, now)?);

    // Devices silent past the inactivity limit stop being targets.
    let silent_before = now.saturating_sub(duration_ms(settings.device_inactivity));
    let inactive = mail::silent_device_deliveries(conn, silent_before, batch)?;
    report.inactive_deliveries = report.add(remove_and_report(conn, &inactive, now)?);

    // Relay work past the maximum pending age: bounce it to the sender.
    report.bounced = report.add(bounce_expired_outbox(conn, now, batch)?);

    // Expired messages nothing refers to any more (the steps above remove
    // the messages they finish).
    let finished = mail::finished_messages(conn, now, batch)?;
    report.finished_messages +=
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
) -> Result<Removed, MailboxError> {
    let rows = mail::expired_relay_work(conn, now, batch)?;
    if rows.is_empty() {
        return Ok(Removed::default());
    }
    write_transaction(conn, |conn| {
        let mut events = Vec::new();
        let mut removed = 0;
        for (id, _, message_id, sender, recipients) in &rows {
            removed += mail::remove_relay_work(conn, *id)?;
            let Some(sender) = sender else { continue };
            let recipients: Vec<super::RecipientWraps> =
                serde_json::from_str(recipients).unwrap_or_default();
            for recipient in recipients {
                let receipt = (
                    sender.as_str(),
                    message_id.as_str(),
                    recipient.address.as_str(),
                );
                if mail::settle_queued(conn, receipt, "bounced", now)? {
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
        let message_rows: Vec<i64> = rows.iter().map(|row| row.1).collect();
        let finished = remove_finished_messages(conn, &message_rows)?;
        Ok(Removed {
            rows: removed,
            finished_messages: finished,
            events,
        })
    })
}

/// What one step removed: its rows, the messages they finished, and what
/// their senders learn.
#[derive(Default)]
struct Removed {
    rows: usize,
    finished_messages: usize,
    events: Vec<StatusEvent>,
}

impl PurgeReport {
    /// Takes in a step's removals; returns how many rows it removed.
    fn add(&mut self, removed: Removed) -> usize {
        self.finished_messages += removed.finished_messages;
        self.status_events.extend(removed.events);
        removed.rows
    }
}

fn remove_and_report(
    conn: &mut DbConnection,
    ids: &[i64],
    now: i64,
) -> Result<Removed, MailboxError> {
    if ids.is_empty() {
        return Ok(Removed::default());
    }
    write_transaction(conn, |conn| {
        let removed = remove_deliveries(conn, ids)?;
        let mut events = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for row in &removed {
            if !seen.insert((row.message_row, row.recipient_account.clone())) {
                continue;
            }
            let remaining = mail::deliveries_left(conn, row.message_row, &row.recipient_account)?;
            if remaining == 0 {
                if let Some(event) =
                    mark_expired(conn, row.message_row, &row.recipient_account, now)?
                {
                    events.push(event);
                }
            }
        }
        let message_rows: Vec<i64> = seen.iter().map(|(row, _)| *row).collect();
        let finished = remove_finished_messages(conn, &message_rows)?;
        Ok(Removed {
            rows: removed.len(),
            finished_messages: finished,
            events,
        })
    })
}

/// Records whose purpose has passed: idempotency records, receipts and
/// inbound transaction answers.
fn purge_bookkeeping(
    conn: &mut DbConnection,
    settings: &PurgeSettings,
    now: i64,
) -> Result<usize, MailboxError> {
    let old = now.saturating_sub(duration_ms(settings.max_pending_age));
    let mut removed = 0;
    // Every change of a receipt comes before its message's pending age
    // runs out, so two pending ages from its creation keep it at least one
    // past its last change; keyed on a column no change touches.
    let receipts_old = old.saturating_sub(duration_ms(settings.max_pending_age));
    removed += mail::forget_old_records(conn, old, receipts_old)?;
    Ok(removed)
}
