//! The relay's state in the database: which destinations are due, leases so
//! one replica sends to a destination at a time, batches with sticky
//! transaction ids, and back-off after failures.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use diesel::prelude::*;
use rand::Rng;

use super::wire::{
    RecipientResult, Transaction, TxnMessage, TxnResponse, MAX_TXN_BODY_BYTES, MAX_TXN_MESSAGES,
};
use crate::crypto::b64;
use crate::mailbox::{DeliveryMode, RecipientWraps, StatusEvent};
use crate::storage::schema::{delivery_receipts, destinations, messages, outbox};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// Back-off starts here and doubles per consecutive failure…
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// …up to this cap.
const BACKOFF_CAP: Duration = Duration::from_secs(3_600);

/// A batch ready to send.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sent before under this id and never answered.
    pub resent: bool,
    pub txn_id: String,
    pub transaction: Transaction,
    /// `(outbox row, message row, message id, sender)` per message.
    pub rows: Vec<(i64, i64, String, Option<String>)>,
}

/// Makes sure `destination` has a back-off row (called in the send
/// transaction when outbox rows are written).
pub fn ensure_destination(conn: &mut DbConnection, destination: &str) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::insert_into(destinations::table)
        .values(destinations::server_name.eq(destination))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// Destinations with queued mail whose back-off has passed and whose lease
/// is free, oldest first.
pub fn due_destinations(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, StorageError> {
    Ok(with_backend!(conn, c => destinations::table
        .filter(destinations::next_attempt_at.le(now))
        .filter(destinations::lease_expires_at.is_null().or(destinations::lease_expires_at.lt(now)))
        .filter(diesel::dsl::exists(outbox::table.filter(outbox::destination.eq(destinations::server_name))))
        .order(destinations::next_attempt_at.asc())
        .limit(limit)
        .select(destinations::server_name)
        .load(c))?)
}

/// Messages queued in all, and the `limit` destinations with the most
/// queued, largest first, for the metrics.
pub fn queue_summary(
    conn: &mut DbConnection,
    limit: i64,
) -> Result<(i64, Vec<crate::metrics::DestinationQueue>), StorageError> {
    let total: i64 = with_backend!(conn, c => outbox::table.count().get_result(c))?;
    let rows: Vec<(String, i64, Option<i64>)> = with_backend!(conn, c => outbox::table
        .group_by(outbox::destination)
        .select((
            outbox::destination,
            diesel::dsl::count_star(),
            diesel::dsl::min(outbox::created_at),
        ))
        .order(diesel::dsl::count_star().desc())
        .limit(limit)
        .load(c))?;
    let queues = rows
        .into_iter()
        .map(
            |(destination, queued, oldest)| crate::metrics::DestinationQueue {
                destination,
                queued,
                oldest_created_at: oldest.unwrap_or_else(crate::time::now_ms),
            },
        )
        .collect();
    Ok((total, queues))
}

/// The earliest time any destination with mail becomes due, if any.
pub fn next_due_at(conn: &mut DbConnection) -> Result<Option<i64>, StorageError> {
    Ok(with_backend!(conn, c => destinations::table
        .filter(diesel::dsl::exists(outbox::table.filter(outbox::destination.eq(destinations::server_name))))
        .select(diesel::dsl::min(destinations::next_attempt_at))
        .first::<Option<i64>>(c))?)
}

/// Takes the lease on `destination` for `owner` until `now + lease`. One
/// conditional update, so at most one replica holds it; an expired lease
/// (a dead replica) can be taken over.
pub fn claim(
    conn: &mut DbConnection,
    destination: &str,
    owner: &str,
    now: i64,
    lease: Duration,
) -> Result<bool, StorageError> {
    let until = now.saturating_add(crate::time::duration_ms(lease));
    let updated = with_backend!(conn, c => diesel::update(
        destinations::table.find(destination).filter(
            destinations::lease_expires_at
                .is_null()
                .or(destinations::lease_expires_at.lt(now))
                .or(destinations::lease_owner.eq(owner)),
        ),
    )
    .set((destinations::lease_owner.eq(owner), destinations::lease_expires_at.eq(until)))
    .execute(c))?;
    Ok(updated == 1)
}

/// Gives the lease back.
pub fn release(
    conn: &mut DbConnection,
    destination: &str,
    owner: &str,
) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::update(
        destinations::table.find(destination).filter(destinations::lease_owner.eq(owner)),
    )
    .set((destinations::lease_owner.eq(None::<String>), destinations::lease_expires_at.eq(None::<i64>)))
    .execute(c))?;
    Ok(())
}

type OutboxRow = (
    i64,
    i64,
    String,
    Option<String>,
    String,
    Vec<u8>,
    String,
    i64,
    i64,
    Option<String>,
);

/// The next batch for `destination`: with `resend`, the rows of an
/// unanswered transaction again under the same id; else (or when there is
/// none) the oldest unsent rows under a new id. Transactions in
/// `in_flight` (sent and not yet answered) are skipped. Runs in the
/// caller's write transaction, which must commit the new id before the
/// batch is sent.
pub fn next_batch(
    conn: &mut DbConnection,
    origin: &str,
    destination: &str,
    in_flight: &[String],
    resend: bool,
) -> Result<Option<Batch>, StorageError> {
    let select = |conn: &mut DbConnection, pending: bool| -> Result<Vec<OutboxRow>, StorageError> {
        Ok(with_backend!(conn, c => {
            let query = outbox::table
                .inner_join(messages::table)
                .filter(outbox::destination.eq(destination))
                .order(outbox::id.asc())
                .limit(MAX_TXN_MESSAGES as i64)
                .select((
                    outbox::id,
                    outbox::message_row,
                    messages::message_id,
                    messages::sender_account,
                    outbox::recipients,
                    messages::body,
                    messages::delivery_mode,
                    messages::created_at,
                    messages::expires_at,
                    outbox::txn_id,
                ));
            if pending {
                query
                    .filter(outbox::txn_id.is_not_null())
                    .filter(outbox::txn_id.ne_all(in_flight))
                    .load(c)
            } else {
                query.filter(outbox::txn_id.is_null()).load(c)
            }
        })?)
    };
    let mut rows = if resend {
        select(conn, true)?
    } else {
        Vec::new()
    };
    let resent = !rows.is_empty();
    let txn_id = match rows.first().and_then(|row| row.9.clone()) {
        Some(txn_id) => {
            rows.retain(|row| row.9.as_deref() == Some(txn_id.as_str()));
            txn_id
        }
        None => {
            rows = select(conn, false)?;
            let mut bytes = 0usize;
            let mut keep = 0;
            for row in &rows {
                bytes += row.5.len();
                if keep > 0 && bytes > MAX_TXN_BODY_BYTES {
                    break;
                }
                keep += 1;
            }
            rows.truncate(keep);
            if rows.is_empty() {
                return Ok(None);
            }
            let txn_id = new_txn_id();
            let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
            match conn {
                // diesel never keeps an `UPDATE` prepared; this one has a
                // single plan (by primary key).
                DbConnection::Postgres(pg) => crate::storage::Reusable::new(
                    "UPDATE outbox SET txn_id = $1 WHERE id = ANY($2)",
                )
                .bind::<diesel::sql_types::Text, _>(&txn_id)
                .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(&ids)
                .execute(pg)?,
                DbConnection::Sqlite(c) => {
                    diesel::update(outbox::table.filter(outbox::id.eq_any(&ids)))
                        .set(outbox::txn_id.eq(&txn_id))
                        .execute(c)?
                }
            };
            txn_id
        }
    };
    let mut messages_out = Vec::with_capacity(rows.len());
    let mut refs = Vec::with_capacity(rows.len());
    for (id, message_row, message_id, sender, recipients, body, mode, created_at, expires_at, _) in
        rows
    {
        let recipients: Vec<RecipientWraps> = serde_json::from_str(&recipients)
            .map_err(|e| StorageError::Migration(format!("outbox row {id} unreadable: {e}")))?;
        messages_out.push(TxnMessage {
            message_id: message_id.clone(),
            body: b64(&body),
            delivery: DeliveryMode::from_db(&mode),
            created_at,
            expires_at,
            recipients,
        });
        refs.push((id, message_row, message_id, sender));
    }
    Ok(Some(Batch {
        resent,
        txn_id,
        transaction: Transaction {
            origin: origin.to_string(),
            messages: messages_out,
        },
        rows: refs,
    }))
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

fn new_txn_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    b64(&bytes)
}

/// The remote answered 200: the rows are done, the senders learn each
/// recipient's result, and the destination's back-off resets. Runs in the
/// caller's write transaction.
///
/// Only the recipients this batch carried are updated, whatever else the
/// answer names; one it leaves out bounces. Receipts of recipients the
/// remote accepted become `relayed` in one statement (one per sender on
/// SQLite); other statuses (rare) one by one, with their details.
pub fn complete(
    conn: &mut DbConnection,
    destination: &str,
    batch: &Batch,
    response: &TxnResponse,
    now: i64,
) -> Result<Vec<StatusEvent>, StorageError> {
    let ids: Vec<i64> = batch.rows.iter().map(|row| row.0).collect();
    with_backend!(conn, c => diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids))).execute(c))?;
    // (sender, message id, recipient) of each message whose recipients
    // were all accepted.
    let mut relayed_receipts: Vec<(&str, &str, &str)> = Vec::new();
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
    let updated = match conn {
        DbConnection::Postgres(pg) => mark_relayed_postgres(pg, &relayed_receipts, now)?,
        DbConnection::Sqlite(c) => mark_relayed_sqlite(c, &relayed_receipts, now)?,
    };
    let mut events: Vec<StatusEvent> = updated
        .into_iter()
        .map(|(sender_account, message_id, recipient)| StatusEvent {
            sender_account,
            message_id,
            recipient,
            state: "relayed".into(),
            updated_at: now,
        })
        .collect();
    for (sender, message_id, recipient) in others {
        events.extend(record_result(conn, sender, message_id, &recipient, now)?);
    }
    with_backend!(conn, c => diesel::update(destinations::table.find(destination))
        .set((
            destinations::failures.eq(0),
            destinations::next_attempt_at.eq(0),
            destinations::last_error.eq(None::<String>),
            destinations::last_success_at.eq(Some(now)),
        ))
        .execute(c))?;
    let message_rows: Vec<i64> = batch.rows.iter().map(|row| row.1).collect();
    crate::mailbox::remove_finished_messages(conn, &message_rows)?;
    Ok(events)
}

/// One recipient's result on its sender's receipt, if still queued.
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
    let detail = (!recipient.missing.is_empty() || !recipient.extra.is_empty()).then(|| {
        serde_json::json!({"missing": recipient.missing, "extra": recipient.extra}).to_string()
    });
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
    Ok((updated == 1).then(|| StatusEvent {
        sender_account: sender.to_string(),
        message_id: message_id.to_string(),
        recipient: recipient.address.clone(),
        state: state.to_string(),
        updated_at: now,
    }))
}

/// The attempt failed: back off exponentially with jitter. The rows keep
/// their transaction id, so the retry is the same transaction.
pub fn fail(
    conn: &mut DbConnection,
    destination: &str,
    error: &str,
    now: i64,
) -> Result<Duration, StorageError> {
    let failures: i32 = with_backend!(conn, c => destinations::table
        .find(destination)
        .select(destinations::failures)
        .first(c)
        .optional())?
    .unwrap_or(0);
    let delay = backoff(failures.saturating_add(1));
    let error: String = error.chars().take(500).collect();
    with_backend!(conn, c => diesel::update(destinations::table.find(destination))
        .set((
            destinations::failures.eq(failures.saturating_add(1)),
            destinations::next_attempt_at.eq(now.saturating_add(crate::time::duration_ms(delay))),
            destinations::last_error.eq(Some(error)),
        ))
        .execute(c))?;
    Ok(delay)
}

/// Delay after `failures` consecutive failures: 1 s doubling to an hour,
/// with ±25 % jitter so peers of a recovering server do not retry in step.
pub fn backoff(failures: i32) -> Duration {
    let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(BACKOFF_CAP);
    let jitter = rand::thread_rng().gen_range(0.75..1.25);
    base.mul_f64(jitter)
}

/// The destination says it is back (`hello`), or an admin asked: retry now.
pub fn retry_now(conn: &mut DbConnection, destination: &str) -> Result<bool, StorageError> {
    let updated = with_backend!(conn, c => diesel::update(destinations::table.find(destination))
        .set(destinations::next_attempt_at.eq(0))
        .execute(c))?;
    Ok(updated == 1)
}

/// Peers worth greeting at start-up: destinations we send to and servers
/// that sent to us recently (at most 1,000).
pub fn known_peers(conn: &mut DbConnection) -> Result<Vec<String>, StorageError> {
    use crate::storage::schema::inbound_txns;
    let mut peers: Vec<String> = with_backend!(conn, c => destinations::table
        .select(destinations::server_name)
        .limit(1_000)
        .load(c))?;
    let origins: Vec<String> = with_backend!(conn, c => inbound_txns::table
        .select(inbound_txns::origin)
        .distinct()
        .limit(1_000)
        .load(c))?;
    peers.extend(origins);
    peers.sort();
    peers.dedup();
    peers.truncate(1_000);
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250));
        let fifth = backoff(5);
        assert!(fifth >= Duration::from_secs(12) && fifth <= Duration::from_secs(20));
        let late = backoff(40);
        assert!(late >= Duration::from_secs(2_700) && late <= Duration::from_secs(4_500));
    }
}
