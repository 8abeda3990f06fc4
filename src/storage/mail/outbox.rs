//! The relay's state in the database: which destinations are due, leases so
//! one replica sends to a destination at a time, transactions that keep
//! their id until answered (`batches`), what an answer changes (`answers`),
//! and back-off after failures.

mod answers;
mod batches;
pub mod recalls;

use std::time::Duration;

use diesel::dsl::{exists, Eq, Filter};
use diesel::prelude::*;
use rand::Rng;

use crate::storage::schema::{destinations, messages, outbound_recalls, outbox};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

pub use answers::complete;
pub use batches::{next_batch, Batch};

/// Back-off starts here and doubles per consecutive failure…
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// …up to this cap.
const BACKOFF_CAP: Duration = Duration::from_secs(3_600);

/// Makes sure `destination` has a back-off row (called in the send
/// transaction when outbox rows are written).
pub fn ensure_destination(conn: &mut DbConnection, destination: &str) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::insert_into(destinations::table)
        .values(destinations::server_name.eq(destination))
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(())
}

/// One destination's relay queue.
#[derive(Debug, Clone)]
pub struct DestinationQueue {
    pub destination: String,
    pub queued: i64,
    pub oldest_created_at: i64,
}

/// A destination due for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub server_name: String,
    /// It answered before and has not failed since: a peer that works.
    pub proven: bool,
}

/// Destinations with queued mail whose back-off has passed and whose lease
/// is free: those not failing first, then the longest due.
pub fn due_destinations(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<Due>, StorageError> {
    let rows: Vec<(String, i32, Option<i64>)> = with_backend!(conn, c => destinations::table
        .filter(destinations::next_attempt_at.le(now))
        .filter(destinations::lease_expires_at.is_null().or(destinations::lease_expires_at.lt(now)))
        .filter(has_work())
        .order((destinations::failures.asc(), destinations::next_attempt_at.asc()))
        .limit(limit)
        .select((destinations::server_name, destinations::failures, destinations::last_success_at))
        .load(c))?;
    Ok(rows
        .into_iter()
        .map(|(server_name, failures, last_success_at)| Due {
            server_name,
            proven: failures == 0 && last_success_at.is_some(),
        })
        .collect())
}

/// Messages queued in all, and the `limit` destinations with the most
/// queued, largest first, for the metrics.
pub fn queue_summary(
    conn: &mut DbConnection,
    limit: i64,
) -> Result<(i64, Vec<DestinationQueue>), StorageError> {
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
        .map(|(destination, queued, oldest)| DestinationQueue {
            destination,
            queued,
            oldest_created_at: oldest.unwrap_or_else(crate::time::now_ms),
        })
        .collect();
    Ok((total, queues))
}

/// A destination has work: mail in its queue, or recalls to send.
#[diesel::dsl::auto_type]
fn has_work() -> _ {
    let mail_queued: exists<
        Filter<outbox::table, Eq<outbox::destination, destinations::server_name>>,
    > = exists(outbox::table.filter(outbox::destination.eq(destinations::server_name)));
    let recalls_queued: exists<
        Filter<
            outbound_recalls::table,
            Eq<outbound_recalls::destination, destinations::server_name>,
        >,
    > = exists(
        outbound_recalls::table.filter(outbound_recalls::destination.eq(destinations::server_name)),
    );
    mail_queued.or(recalls_queued)
}

/// The earliest time any destination with mail becomes due, if any.
pub fn next_due_at(conn: &mut DbConnection) -> Result<Option<i64>, StorageError> {
    Ok(with_backend!(conn, c => destinations::table
        .filter(has_work())
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

/// The attempt failed: back off exponentially with jitter, and record the
/// error and when it happened. The rows keep their transaction id, so the
/// retry is the same transaction.
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
            destinations::last_failure_at.eq(Some(now)),
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

/// Drops a destination's queue, its recalls too: the senders' receipts
/// become `dropped`.
/// Returns how many queued messages were dropped. Runs in the caller's
/// transaction.
pub fn drop_queue(conn: &mut DbConnection, destination: &str) -> Result<usize, StorageError> {
    let rows: Vec<(i64, i64, String, Option<String>, String)> = with_backend!(conn, c => outbox::table
        .inner_join(messages::table)
        .filter(outbox::destination.eq(destination))
        .select((outbox::id, outbox::message_row, messages::message_id, messages::sender_account, outbox::recipients))
        .load(c))?;
    let now = crate::time::now_ms();
    for (_, _, message_id, sender, recipients) in &rows {
        let Some(sender) = sender else { continue };
        let recipients: Vec<homing_proto::wire::RecipientWraps> =
            serde_json::from_str(recipients).unwrap_or_default();
        for recipient in recipients {
            let recipient = recipient.address.as_str();
            super::settle_queued(conn, (sender, message_id, recipient), "dropped", now)?;
        }
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
    with_backend!(conn, c => diesel::delete(outbox::table.filter(outbox::id.eq_any(&ids))).execute(c))?;
    // Open transactions stay: one the relay has out now is answered
    // (and its record removed) as usual, and one whose rows are all
    // gone is forgotten by the next attempt. Deleting them here could
    // remove one the relay opened over mail queued after the read.
    let message_rows: Vec<i64> = rows.iter().map(|row| row.1).collect();
    super::remove_finished_messages(conn, &message_rows)?;
    recalls::drop_for(conn, destination, now)?;
    with_backend!(conn, c => diesel::update(destinations::table.find(destination))
        .set((destinations::failures.eq(0), destinations::next_attempt_at.eq(0), destinations::last_error.eq(None::<String>)))
        .execute(c))?;
    Ok(rows.len())
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
