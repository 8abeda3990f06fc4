//! Deliveries and messages leaving the mailbox: acknowledged, expired,
//! their device revoked or their account deleted. The per-device pending
//! counters move with the delivery rows, in the same statements' order.

use std::collections::BTreeMap;

use diesel::prelude::*;

use crate::storage::schema::{deliveries, devices, messages, outbox};
use crate::storage::{DbConnection, Reusable, StorageError};
use crate::with_backend;

/// A delivery row removed by one statement: exactly what it deleted, so
/// counters are adjusted once even when replicas race.
#[derive(Debug, Clone, Queryable)]
pub struct RemovedDelivery {
    pub message_row: i64,
    pub device_row: i64,
    pub recipient_account: String,
    pub body_bytes: i64,
}

/// Deletes the given delivery rows and keeps the per-device pending
/// counters in step with what was actually deleted.
pub fn remove_deliveries(
    conn: &mut DbConnection,
    ids: &[i64],
) -> Result<Vec<RemovedDelivery>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let removed: Vec<RemovedDelivery> = with_backend!(conn, c => diesel::delete(
        deliveries::table.filter(deliveries::id.eq_any(ids)),
    )
    .returning((
        deliveries::message_row,
        deliveries::device_row,
        deliveries::recipient_account,
        deliveries::body_bytes,
    ))
    .get_results(c))?;
    // Ordered by device so concurrent removals lock rows in one order.
    let mut per_device: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in &removed {
        let entry = per_device.entry(row.device_row).or_default();
        entry.0 += 1;
        entry.1 += row.body_bytes;
    }
    for (device_row, (count, bytes)) in per_device {
        with_backend!(conn, c => diesel::update(devices::table.find(device_row))
            .set((
                devices::pending_messages.eq(devices::pending_messages - count),
                devices::pending_bytes.eq(devices::pending_bytes - bytes),
            ))
            .execute(c))?;
    }
    Ok(removed)
}

/// Deletes the given messages if nothing refers to them any more.
pub fn remove_finished_messages(
    conn: &mut DbConnection,
    message_rows: &[i64],
) -> Result<usize, StorageError> {
    if message_rows.is_empty() {
        return Ok(0);
    }
    let c = match conn {
        DbConnection::Postgres(pg) => return Ok(remove_finished_pg(pg, message_rows)?),
        DbConnection::Sqlite(c) => c,
    };
    Ok(diesel::delete(
        messages::table
            .filter(messages::id.eq_any(message_rows))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                deliveries::table.filter(deliveries::message_row.eq(messages::id)),
            )))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                outbox::table.filter(outbox::message_row.eq(messages::id)),
            ))),
    )
    .execute(c)?)
}

/// Deletes those of `message_rows` that no delivery or outbox row refers
/// to any more. Each check is a subquery with `LIMIT`, which PostgreSQL
/// never turns into a join: one probe of a unique key per message, so the
/// statement can stay prepared whatever plan it settles on (an anti-join
/// planned while the tables were small would read all their rows).
fn remove_finished_pg(pg: &mut diesel::PgConnection, message_rows: &[i64]) -> QueryResult<usize> {
    Reusable::new(
        "DELETE FROM messages m WHERE m.id = ANY($1) \
         AND (SELECT 1 FROM deliveries d WHERE d.message_row = m.id LIMIT 1) IS NULL \
         AND (SELECT 1 FROM outbox o WHERE o.message_row = m.id LIMIT 1) IS NULL",
    )
    .bind::<diesel::sql_types::Array<diesel::sql_types::BigInt>, _>(message_rows)
    .execute(pg)
}

/// In `any` mode, the deliveries of `message_row` to `recipient`'s other
/// devices expire no later than `until`.
pub fn shorten_deliveries(
    conn: &mut DbConnection,
    message_row: i64,
    recipient: &str,
    until: i64,
) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::update(
        deliveries::table
            .filter(deliveries::message_row.eq(message_row))
            .filter(deliveries::recipient_account.eq(recipient))
            .filter(deliveries::expires_at.gt(until)),
    )
    .set(deliveries::expires_at.eq(until))
    .execute(c))?;
    Ok(())
}

/// Every pending delivery of a deleted account, and the messages that
/// were only waiting for them. Returns how many deliveries went.
pub fn remove_account_mail(conn: &mut DbConnection, account: &str) -> Result<usize, StorageError> {
    let message_rows: Vec<i64> = with_backend!(conn, c => deliveries::table
        .filter(deliveries::recipient_account.eq(account))
        .select(deliveries::message_row)
        .distinct()
        .load(c))?;
    let removed = with_backend!(conn, c => diesel::delete(
        deliveries::table.filter(deliveries::recipient_account.eq(account)),
    )
    .execute(c))?;
    remove_finished_messages(conn, &message_rows)?;
    Ok(removed)
}

/// Every pending delivery of a revoked device, whose counters its caller
/// has cleared with the revocation, and the messages that were only
/// waiting for them.
pub fn remove_device_mail(conn: &mut DbConnection, device_row: i64) -> Result<usize, StorageError> {
    let message_rows: Vec<i64> = with_backend!(conn, c => diesel::delete(
        deliveries::table.filter(deliveries::device_row.eq(device_row)),
    )
    .returning(deliveries::message_row)
    .get_results(c))?;
    remove_finished_messages(conn, &message_rows)?;
    Ok(message_rows.len())
}

/// The device was seen at `now`: recorded unless it was seen after
/// `unless_after` already (a sync records it at most once a minute). A
/// device silent past the inactivity limit loses its deliveries, so this
/// is mail bookkeeping like the pending counters beside it.
pub fn mark_seen(
    conn: &mut DbConnection,
    device_row: i64,
    unless_after: i64,
    now: i64,
) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::update(
        devices::table
            .find(device_row)
            .filter(devices::last_seen_at.lt(unless_after)),
    )
    .set(devices::last_seen_at.eq(now))
    .execute(c))?;
    Ok(())
}
