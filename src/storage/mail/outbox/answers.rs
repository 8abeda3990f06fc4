//! What a remote's `200` changes: the transaction's outbox rows and its
//! record go, the senders' receipts take each recipient's result, the
//! destination's back-off resets and the lease is renewed, and messages
//! nothing refers to any more are removed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;

use super::Batch;
use crate::crypto::identity::{DeviceId, MAX_DEVICES};
use crate::storage::schema::{delivery_receipts, destinations, outbox, outbox_txns};
use crate::storage::{DbConnection, Reusable, StorageError};
use crate::with_backend;
use homing_proto::federation::{RecipientResult, TxnResponse};
use homing_proto::wire::StatusEvent;

/// The answer's bookkeeping on PostgreSQL in one statement, which the
/// writer's connection keeps prepared: each statement is a round trip in
/// the writer's serial conversation, and diesel plans an `UPDATE` afresh
/// on every run. The messages' check sees the statement's snapshot, in
/// which the outbox rows it deletes are still there, so it looks past
/// them; every look-up is a probe of a key, whatever plan it settles on.
/// The lease is renewed as `claim` would: only when it is free, expired or
/// this replica's. (`Reusable` takes each placeholder once, in order, so a
/// value used twice is bound twice.)
const ANSWERED: &str = "WITH o AS (DELETE FROM outbox WHERE id = ANY($1)), \
     t AS (DELETE FROM outbox_txns WHERE txn_id = $2), \
     d AS (UPDATE destinations SET failures = 0, next_attempt_at = 0, last_error = NULL, \
     last_success_at = $3, \
     lease_owner = CASE WHEN lease_expires_at IS NULL OR lease_expires_at < $4 \
     OR lease_owner = $5 THEN $6 ELSE lease_owner END, \
     lease_expires_at = CASE WHEN lease_expires_at IS NULL OR lease_expires_at < $7 \
     OR lease_owner = $8 THEN $9 ELSE lease_expires_at END \
     WHERE server_name = $10) \
     DELETE FROM messages m WHERE m.id = ANY($11) \
     AND (SELECT 1 FROM deliveries d WHERE d.message_row = m.id LIMIT 1) IS NULL \
     AND (SELECT 1 FROM outbox r WHERE r.message_row = m.id AND r.id <> ALL($12) LIMIT 1) IS NULL";

/// The remote answered 200 for `batch`, sent to `destination` under
/// `owner`'s lease: records it, renews the lease for `lease`, and returns
/// the senders' status events. Runs in the caller's write transaction.
///
/// Only the recipients this batch carried are updated, whatever else the
/// answer names; one it leaves out bounces. Receipts of recipients the
/// remote accepted become `relayed` in one statement (one per sender on
/// SQLite); other statuses (rare) one by one, with their details.
pub fn complete(
    conn: &mut DbConnection,
    destination: &str,
    owner: &str,
    lease: Duration,
    batch: &Batch,
    response: &TxnResponse,
    now: i64,
) -> Result<Vec<StatusEvent>, StorageError> {
    use diesel::sql_types::{Array, BigInt, Text};
    let (relayed_receipts, others) = classify(batch, response);
    let ids: Vec<i64> = batch.rows.iter().map(|row| row.0).collect();
    let message_rows: Vec<i64> = batch.rows.iter().map(|row| row.1).collect();
    let updated = match conn {
        DbConnection::Postgres(pg) => {
            // The receipts first: the statement after them holds the
            // destination's row until the commit, which sends to the
            // destination may be waiting for.
            let updated = mark_relayed_postgres(pg, &relayed_receipts, now)?;
            let until = now.saturating_add(crate::time::duration_ms(lease));
            Reusable::new(ANSWERED)
                .bind::<Array<BigInt>, _>(&ids)
                .bind::<Text, _>(&batch.txn_id)
                .bind::<BigInt, _>(now)
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(owner)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(now)
                .bind::<Text, _>(owner)
                .bind::<BigInt, _>(until)
                .bind::<Text, _>(destination)
                .bind::<Array<BigInt>, _>(&message_rows)
                .bind::<Array<BigInt>, _>(&ids)
                .execute(pg)?;
            updated
        }
        DbConnection::Sqlite(c) => {
            diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids))).execute(c)?;
            diesel::delete(outbox_txns::table.find(&batch.txn_id)).execute(c)?;
            diesel::update(destinations::table.find(destination))
                .set((
                    destinations::failures.eq(0),
                    destinations::next_attempt_at.eq(0),
                    destinations::last_error.eq(None::<String>),
                    destinations::last_success_at.eq(Some(now)),
                ))
                .execute(c)?;
            mark_relayed_sqlite(c, &relayed_receipts, now)?
        }
    };
    let mut events: Vec<StatusEvent> = updated
        .into_iter()
        .map(|(sender_account, message_id, recipient)| {
            StatusEvent::new(sender_account, message_id, recipient, "relayed", now)
        })
        .collect();
    for (sender, message_id, recipient) in others {
        events.extend(record_result(conn, sender, message_id, &recipient, now)?);
    }
    if let DbConnection::Sqlite(_) = conn {
        crate::storage::mail::remove_finished_messages(conn, &message_rows)?;
        super::claim(conn, destination, owner, now, lease)?;
    }
    // The delivery feed, in the same transaction as the receipts: one
    // statement for the answer's changes however many.
    let details: Vec<Option<String>> = events.iter().map(detail_of).collect();
    let changes: Vec<_> = events
        .iter()
        .zip(&details)
        .map(|(e, detail)| {
            let (sender, id, recipient) = (&e.sender_account, &e.message_id, &e.recipient);
            (
                sender.as_str(),
                id.as_str(),
                recipient.as_str(),
                e.state.as_str(),
                detail.as_deref(),
            )
        })
        .collect();
    super::super::feed::append(conn, &changes, now)?;
    Ok(events)
}

/// A change's device ids as its receipt and the feed store them
/// (`stale_devices`).
fn detail_of(event: &StatusEvent) -> Option<String> {
    (!event.missing.is_empty() || !event.extra.is_empty())
        .then(|| serde_json::json!({"missing": event.missing, "extra": event.extra}).to_string())
}

/// A recipient's answer: (sender, message id, result).
type Answer<'a> = (&'a String, &'a String, Cow<'a, RecipientResult>);

/// (sender, message id, recipient) of each message whose recipients were
/// all accepted, and the answers of the other messages.
fn classify<'a>(
    batch: &'a Batch,
    response: &'a TxnResponse,
) -> (Vec<(&'a str, &'a str, &'a str)>, Vec<Answer<'a>>) {
    let mut relayed_receipts = Vec::new();
    let mut others = Vec::new();
    for ((_, _, message_id, sender), sent) in batch.rows.iter().zip(&batch.transaction.messages) {
        let Some(sender) = sender else { continue };
        let result = response
            .results
            .iter()
            .find(|r| &r.message_id == message_id);
        // A recipient the answer leaves out bounces: a retry of this
        // transaction would be answered from the remote's record, so
        // nothing would ever change its receipt.
        let answers: Vec<Cow<'_, RecipientResult>> = sent
            .recipients
            .iter()
            .map(|wraps| {
                result
                    .and_then(|r| r.recipients.iter().find(|a| a.address == wraps.address))
                    .map(Cow::Borrowed)
                    .unwrap_or_else(|| {
                        Cow::Owned(RecipientResult::new(wraps.address.clone(), "bounced"))
                    })
            })
            .collect();
        if answers.iter().all(|a| a.status == "accepted") {
            relayed_receipts.extend(
                sent.recipients
                    .iter()
                    .map(|r| (sender.as_str(), message_id.as_str(), r.address.as_str())),
            );
        } else {
            others.extend(answers.into_iter().map(|a| (sender, message_id, a)));
        }
    }
    (relayed_receipts, others)
}

/// (sender, message id, recipient) of a receipt.
type ReceiptKey = (String, String, String);

#[derive(QueryableByName)]
struct Relayed {
    #[diesel(sql_type = diesel::sql_types::Text)]
    sender_account: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    recipient: String,
}

/// Marks these queued receipts relayed: one primary-key probe each.
/// Planned on every call: a generic plan made while the table was small
/// could scan it once it is large. (diesel never keeps a `sql_query`
/// prepared, so PostgreSQL plans it for each call's values.)
fn mark_relayed_postgres(
    pg: &mut diesel::PgConnection,
    keys: &[(&str, &str, &str)],
    now: i64,
) -> Result<Vec<ReceiptKey>, StorageError> {
    use diesel::sql_types::{Array, BigInt, Text};
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let updated: Vec<Relayed> = diesel::sql_query(
        "UPDATE delivery_receipts r SET state = 'relayed', detail = NULL, updated_at = $1 \
         FROM unnest($2, $3, $4) AS k(sender_account, message_id, recipient) \
         WHERE r.sender_account = k.sender_account AND r.message_id = k.message_id \
         AND r.recipient = k.recipient AND r.state = 'queued' \
         RETURNING r.sender_account, r.message_id, r.recipient",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .load(pg)?;
    Ok(updated
        .into_iter()
        .map(|r| (r.sender_account, r.message_id, r.recipient))
        .collect())
}

/// The same on SQLite, one statement per sender: SQLite probes the
/// primary key for each combination of the two `IN` lists. Every recipient
/// of these messages on this destination was in the batch, so the product
/// of a sender's message ids and recipients names exactly their receipts.
fn mark_relayed_sqlite(
    c: &mut diesel::SqliteConnection,
    keys: &[(&str, &str, &str)],
    now: i64,
) -> Result<Vec<ReceiptKey>, StorageError> {
    let mut by_sender: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for &(sender, message_id, recipient) in keys {
        let (message_ids, recipients) = by_sender.entry(sender).or_default();
        if message_ids.last() != Some(&message_id) {
            message_ids.push(message_id);
        }
        recipients.push(recipient);
    }
    let mut all = Vec::new();
    for (sender, (message_ids, mut recipients)) in by_sender {
        recipients.sort_unstable();
        recipients.dedup();
        let updated: Vec<(String, String)> = diesel::update(
            delivery_receipts::table
                .filter(delivery_receipts::sender_account.eq(sender))
                .filter(delivery_receipts::message_id.eq_any(&message_ids))
                .filter(delivery_receipts::recipient.eq_any(&recipients))
                .filter(delivery_receipts::state.eq("queued")),
        )
        .set((
            delivery_receipts::state.eq("relayed"),
            delivery_receipts::detail.eq(None::<String>),
            delivery_receipts::updated_at.eq(now),
        ))
        .returning((delivery_receipts::message_id, delivery_receipts::recipient))
        .get_results(c)?;
        all.extend(
            updated
                .into_iter()
                .map(|(message_id, recipient)| (sender.to_string(), message_id, recipient)),
        );
    }
    Ok(all)
}

/// One recipient's result on its sender's receipt, if still queued. A
/// `stale_devices` answer keeps the device ids it names (those that are
/// device ids, at most a device list's worth each).
fn record_result(
    conn: &mut DbConnection,
    sender: &str,
    message_id: &str,
    recipient: &RecipientResult,
    now: i64,
) -> Result<Option<StatusEvent>, StorageError> {
    let state = if recipient.status == "accepted" {
        "relayed"
    } else {
        recipient.status.as_str()
    };
    let event = StatusEvent {
        missing: device_ids(&recipient.missing),
        extra: device_ids(&recipient.extra),
        ..StatusEvent::new(sender, message_id, recipient.address.as_str(), state, now)
    };
    let detail = detail_of(&event);
    let updated = with_backend!(conn, c => diesel::update(
        delivery_receipts::table
            .find((sender, message_id, &recipient.address))
            .filter(delivery_receipts::state.eq("queued")),
    )
    .set((
        delivery_receipts::state.eq(state),
        delivery_receipts::detail.eq(detail),
        delivery_receipts::updated_at.eq(now),
    ))
    .execute(c))?;
    Ok((updated == 1).then_some(event))
}

/// The well-formed device ids of a remote's list, at most `MAX_DEVICES`:
/// what a remote says is stored and shown to the sender, so it is bounded.
fn device_ids(ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| DeviceId::parse(id).is_ok())
        .take(MAX_DEVICES)
        .cloned()
        .collect()
}
