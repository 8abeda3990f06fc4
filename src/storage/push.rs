//! `push_subscriptions`, the one module that writes it: each device's
//! Web Push subscription and the wake-up it is owed (`due_at`), which
//! makes the row the push queue too. Claims take a lease so replicas share
//! the work. Here under `storage` because `identity` (revoking a device)
//! and `push` (the wake-ups) both change it.

use diesel::dsl::{exists, max};
use diesel::prelude::*;

use crate::storage::schema::{deliveries, devices, push_subscriptions as subs};
use crate::storage::{write_transaction, DbConnection, StorageError};
use crate::with_backend;
use homing_proto::push::PushSubscriptionInfo;

/// How long a claimed wake-up stays this replica's beyond the request's
/// own time-out: long enough that no other replica sends it twice, short
/// enough that one a crash left claimed goes out soon after.
const LEASE_MARGIN_MS: i64 = 10_000;

/// A subscription as stored: the endpoint URL and the device's RFC 8291
/// keys, already checked (`push::endpoint`).
pub struct NewSubscription<'a> {
    pub endpoint: &'a str,
    pub p256dh: &'a [u8],
    pub auth: &'a [u8],
}

/// Sets `device_row`'s subscription, replacing any it had (a new endpoint
/// starts with a clean slate).
pub fn set(
    conn: &mut DbConnection,
    device_row: i64,
    subscription: &NewSubscription<'_>,
    now: i64,
) -> Result<(), StorageError> {
    let row = (
        subs::device_row.eq(device_row),
        subs::endpoint.eq(subscription.endpoint),
        subs::p256dh.eq(subscription.p256dh),
        subs::auth.eq(subscription.auth),
        subs::created_at.eq(now),
    );
    let fresh = (
        subs::endpoint.eq(subscription.endpoint),
        subs::p256dh.eq(subscription.p256dh),
        subs::auth.eq(subscription.auth),
        subs::created_at.eq(now),
        subs::due_at.eq(None::<i64>),
        subs::attempts.eq(0),
        subs::last_push_at.eq(None::<i64>),
        subs::pushed_cursor.eq(None::<i64>),
        subs::lease_until.eq(None::<i64>),
    );
    with_backend!(conn, c => diesel::insert_into(subs::table)
        .values(row)
        .on_conflict(subs::device_row)
        .do_update()
        .set(fresh)
        .execute(c))?;
    Ok(())
}

/// Removes `device_row`'s subscription; false when it had none.
pub fn clear(conn: &mut DbConnection, device_row: i64) -> Result<bool, StorageError> {
    let removed = with_backend!(conn, c =>
        diesel::delete(subs::table.find(device_row)).execute(c))?;
    Ok(removed > 0)
}

/// What the server holds for `device_row`, without its keys.
pub fn info(
    conn: &mut DbConnection,
    device_row: i64,
) -> Result<Option<PushSubscriptionInfo>, StorageError> {
    let row: Option<(String, i64, Option<i64>)> = with_backend!(conn, c => subs::table
        .find(device_row)
        .select((subs::endpoint, subs::created_at, subs::last_push_at))
        .first(c)
        .optional())?;
    Ok(row.map(
        |(endpoint, created_at, last_push_at)| PushSubscriptionInfo {
            endpoint,
            created_at,
            last_push_at,
        },
    ))
}

/// Owes a wake-up to each of `device_rows` that has a subscription and is
/// owed none yet: now, or when the last one's mail is still unacknowledged,
/// `min_interval_ms` after it. Returns how many are now owed one.
pub fn owe(
    conn: &mut DbConnection,
    device_rows: &[i64],
    now: i64,
    min_interval_ms: i64,
) -> Result<usize, StorageError> {
    // Read first, outside a write transaction: on most servers most
    // devices have no subscription, and on SQLite a write transaction
    // would queue behind (and hold up) the mail writer for nothing.
    let waiting: Vec<(i64, Option<i64>, Option<i64>)> = with_backend!(conn, c => subs::table
        .filter(subs::device_row.eq_any(device_rows))
        .filter(subs::due_at.is_null())
        .select((subs::device_row, subs::last_push_at, subs::pushed_cursor))
        .load(c))?;
    if waiting.is_empty() {
        return Ok(0);
    }
    write_transaction(conn, |conn| {
        let mut owed = 0;
        for (device_row, last_push_at, pushed_cursor) in waiting {
            let due = match (last_push_at, pushed_cursor) {
                (Some(last), Some(cursor)) if unread(conn, device_row, cursor)? => {
                    now.max(last.saturating_add(min_interval_ms))
                }
                _ => now,
            };
            owed += with_backend!(conn, c => diesel::update(subs::table
                .find(device_row)
                .filter(subs::due_at.is_null()))
                .set(subs::due_at.eq(due))
                .execute(c))?;
        }
        Ok(owed)
    })
}

/// True while the device still holds mail the last wake-up announced.
fn unread(conn: &mut DbConnection, device_row: i64, cursor: i64) -> Result<bool, StorageError> {
    Ok(
        with_backend!(conn, c => diesel::select(exists(deliveries::table
        .filter(deliveries::device_row.eq(device_row))
        .filter(deliveries::id.le(cursor))))
        .get_result(c))?,
    )
}

/// Owes a wake-up to every subscribed device holding mail no wake-up
/// announced: at start (a hint lost in a crash) and when hints overflowed.
pub fn owe_unannounced(conn: &mut DbConnection, now: i64) -> Result<usize, StorageError> {
    // Plain SQL both backends read alike: a correlated sub-query with a
    // COALESCE the query builder spells badly. `now` is an integer.
    let sql = format!(
        "UPDATE push_subscriptions SET due_at = {now} \
         WHERE due_at IS NULL AND EXISTS (SELECT 1 FROM deliveries d \
           WHERE d.device_row = push_subscriptions.device_row \
           AND d.id > COALESCE(push_subscriptions.pushed_cursor, 0))"
    );
    Ok(with_backend!(conn, c => diesel::sql_query(sql).execute(c))?)
}

/// A wake-up this replica claimed. No `Debug`: the endpoint is a
/// capability and `auth` a secret.
#[derive(Clone)]
pub struct Claimed {
    pub device_row: i64,
    pub endpoint: String,
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
    pub attempts: i32,
    /// The newest pending delivery; `None`: the mail was read already.
    pub cursor: Option<i64>,
    pub revoked: bool,
    /// The lease taken: what is recorded afterwards applies only while
    /// the row still holds it (not after the device subscribed anew, or
    /// after the lease ran out and another replica took the row).
    pub lease_until: i64,
}

/// Claims up to `limit` wake-ups due by `now` that no replica holds, for
/// requests that take at most `request_timeout_ms`.
pub fn claim(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
    request_timeout_ms: i64,
) -> Result<Vec<Claimed>, StorageError> {
    type Row = (i64, String, Vec<u8>, Vec<u8>, i32);
    // Read outside a write transaction (nothing is due most of the time);
    // the lease below is checked again as it is taken.
    let free = subs::lease_until.is_null().or(subs::lease_until.le(now));
    let rows: Vec<Row> = with_backend!(conn, c => subs::table
        .filter(subs::due_at.le(now))
        .filter(free)
        .order(subs::due_at.asc())
        .limit(limit)
        .select((subs::device_row, subs::endpoint, subs::p256dh, subs::auth, subs::attempts))
        .load(c))?;
    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    write_transaction(conn, |conn| {
        // The lease is checked again as it is taken: on PostgreSQL another
        // replica may have read the same rows and leased them first, and
        // this update then waits for its commit and must not lease them
        // again. Only the rows it changed are this replica's.
        let lease_until = now + request_timeout_ms + LEASE_MARGIN_MS;
        let free = subs::lease_until.is_null().or(subs::lease_until.le(now));
        let ids: Vec<i64> = with_backend!(conn, c => diesel::update(subs::table
            .filter(subs::device_row.eq_any(&ids))
            .filter(subs::due_at.le(now))
            .filter(free))
            .set(subs::lease_until.eq(lease_until))
            .returning(subs::device_row)
            .get_results(c))?;
        let cursors: Vec<(i64, Option<i64>)> = with_backend!(conn, c => deliveries::table
            .filter(deliveries::device_row.eq_any(&ids))
            .group_by(deliveries::device_row)
            .select((deliveries::device_row, max(deliveries::id)))
            .load(c))?;
        let revoked: Vec<i64> = with_backend!(conn, c => devices::table
            .filter(devices::id.eq_any(&ids))
            .filter(devices::revoked_at.is_not_null())
            .select(devices::id)
            .load(c))?;
        Ok(rows
            .into_iter()
            .filter(|row| ids.contains(&row.0))
            .map(|(device_row, endpoint, p256dh, auth, attempts)| Claimed {
                device_row,
                endpoint,
                p256dh,
                auth,
                attempts,
                cursor: cursors
                    .iter()
                    .find(|(row, _)| *row == device_row)
                    .and_then(|(_, cursor)| *cursor),
                revoked: revoked.contains(&device_row),
                lease_until,
            })
            .collect())
    })
}

/// What became of a claimed wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The push service took it.
    Sent { cursor: i64 },
    /// Nothing to send after all (the device connected or read its mail),
    /// or the push service refused it for good: none owed now.
    Dropped,
    /// Try again at `at`, after `attempts` failures.
    Retry { at: i64, attempts: i32 },
    /// The subscription is gone (the push service said so, or the device
    /// was revoked).
    Unsubscribed,
}

/// Records what became of `claimed`, if the row still holds its lease.
/// Mail stored while the request was out found a wake-up already owed
/// and owed none of its own: when some is pending past what the claim
/// saw, one is owed again, `min_interval_ms` after one that was sent.
pub fn settle(
    conn: &mut DbConnection,
    claimed: &Claimed,
    settled: Settled,
    now: i64,
    min_interval_ms: i64,
) -> Result<(), StorageError> {
    write_transaction(conn, |conn| {
        let row = subs::table
            .find(claimed.device_row)
            .filter(subs::lease_until.eq(claimed.lease_until))
            .filter(subs::endpoint.eq(&claimed.endpoint));
        let none = None::<i64>;
        let newer = |conn: &mut DbConnection| -> Result<bool, StorageError> {
            let seen = claimed.cursor.unwrap_or(0);
            Ok(
                with_backend!(conn, c => diesel::select(exists(deliveries::table
                .filter(deliveries::device_row.eq(claimed.device_row))
                .filter(deliveries::id.gt(seen))))
                .get_result(c))?,
            )
        };
        match settled {
            Settled::Sent { cursor } => {
                let due = newer(conn)?.then_some(now + min_interval_ms);
                with_backend!(conn, c => diesel::update(row)
                    .set((
                        subs::due_at.eq(due),
                        subs::attempts.eq(0),
                        subs::lease_until.eq(none),
                        subs::last_push_at.eq(now),
                        subs::pushed_cursor.eq(cursor),
                    ))
                    .execute(c))?;
            }
            Settled::Dropped => {
                let due = newer(conn)?.then_some(now);
                with_backend!(conn, c => diesel::update(row)
                    .set((subs::due_at.eq(due), subs::attempts.eq(0), subs::lease_until.eq(none)))
                    .execute(c))?;
            }
            Settled::Retry { at, attempts } => {
                with_backend!(conn, c => diesel::update(row)
                    .set((subs::due_at.eq(at), subs::attempts.eq(attempts), subs::lease_until.eq(none)))
                    .execute(c))?;
            }
            Settled::Unsubscribed => {
                with_backend!(conn, c => diesel::delete(row).execute(c))?;
            }
        }
        Ok(())
    })
}

/// When the loop should look again: the earliest wake-up due that no
/// replica holds, or the earliest lease to run out. Wake-ups in flight
/// here are not counted: their tasks wake the loop when they end.
pub fn next_due(conn: &mut DbConnection, now: i64) -> Result<Option<i64>, StorageError> {
    let free = subs::lease_until.is_null().or(subs::lease_until.le(now));
    let due: Option<i64> = with_backend!(conn, c => subs::table
        .filter(free)
        .select(diesel::dsl::min(subs::due_at))
        .first(c))?;
    let lease_ends: Option<i64> = with_backend!(conn, c => subs::table
        .filter(subs::due_at.is_not_null())
        .filter(subs::lease_until.gt(now))
        .select(diesel::dsl::min(subs::lease_until))
        .first(c))?;
    Ok(match (due, lease_ends) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
