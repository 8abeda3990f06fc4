//! What the purge task finds and removes by time: expired deliveries,
//! deliveries to devices gone silent, relay work past its message's
//! expiry, finished messages and records whose purpose has passed. Every
//! step deletes rows that qualify by time, so replicas purging at once
//! each delete (and count) a row once.

use diesel::prelude::*;

use crate::storage::schema::{
    deliveries, delivery_receipts, devices, inbound_txns, messages, outbox, send_idempotency,
};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// Up to `batch` deliveries that expired by `now`, first expired first.
/// In expiry order, so the look-up walks the expiry index from its start
/// and stops at the first delivery not yet expired: ordered by id, the
/// planner walked the whole table when few or none had expired.
pub fn expired_deliveries(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<Vec<i64>, StorageError> {
    Ok(with_backend!(conn, c => deliveries::table
        .filter(deliveries::expires_at.le(now))
        .order(deliveries::expires_at.asc())
        .limit(batch)
        .select(deliveries::id)
        .load(c))?)
}

/// Up to `batch` deliveries to devices not seen since `silent_before`:
/// the silent devices that hold mail first (by when they were last seen),
/// then their deliveries (by device). Both walk an index and stop at the
/// batch, however much mail the server holds.
pub fn silent_device_deliveries(
    conn: &mut DbConnection,
    silent_before: i64,
    batch: i64,
) -> Result<Vec<i64>, StorageError> {
    let silent: Vec<i64> = with_backend!(conn, c => devices::table
        .filter(devices::last_seen_at.lt(silent_before))
        .filter(devices::pending_messages.gt(0))
        .order(devices::last_seen_at.asc())
        .limit(batch)
        .select(devices::id)
        .load(c))?;
    if silent.is_empty() {
        return Ok(Vec::new());
    }
    Ok(with_backend!(conn, c => deliveries::table
        .filter(deliveries::device_row.eq_any(&silent))
        .order((deliveries::device_row.asc(), deliveries::id.asc()))
        .limit(batch)
        .select(deliveries::id)
        .load(c))?)
}

/// Deliveries of `message_row` still pending for `recipient`.
pub fn deliveries_left(
    conn: &mut DbConnection,
    message_row: i64,
    recipient: &str,
) -> Result<i64, StorageError> {
    Ok(with_backend!(conn, c => deliveries::table
        .filter(deliveries::message_row.eq(message_row))
        .filter(deliveries::recipient_account.eq(recipient))
        .count()
        .get_result(c))?)
}

/// Relay work whose message expired before the destination took it:
/// (outbox row, message row, message id, local sender, recipients as
/// JSON).
pub type ExpiredRelay = (i64, i64, String, Option<String>, String);

/// Up to `batch` outbox rows whose message expired by `now`.
pub fn expired_relay_work(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<Vec<ExpiredRelay>, StorageError> {
    Ok(with_backend!(conn, c => outbox::table
        .inner_join(messages::table)
        .filter(messages::expires_at.le(now))
        .order(outbox::id.asc())
        .limit(batch)
        .select((outbox::id, outbox::message_row, messages::message_id, messages::sender_account, outbox::recipients))
        .load(c))?)
}

/// Removes one outbox row; 0 when another replica removed it first.
pub fn remove_relay_work(conn: &mut DbConnection, id: i64) -> Result<usize, StorageError> {
    Ok(with_backend!(conn, c => diesel::delete(outbox::table.find(id)).execute(c))?)
}

/// Up to `batch` expired messages nothing refers to any more. Every path
/// that removes a delivery or an outbox row removes its message once it
/// is finished; what is left for this sweep are messages that had nothing
/// to deliver from the start (no active device), and only once they
/// expire: walking the expiry index, not every message held.
pub fn finished_messages(
    conn: &mut DbConnection,
    now: i64,
    batch: i64,
) -> Result<Vec<i64>, StorageError> {
    Ok(with_backend!(conn, c => messages::table
        .filter(messages::expires_at.le(now))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            deliveries::table.filter(deliveries::message_row.eq(messages::id)),
        )))
        .filter(diesel::dsl::not(diesel::dsl::exists(
            outbox::table.filter(outbox::message_row.eq(messages::id)),
        )))
        .order(messages::expires_at.asc())
        .limit(batch)
        .select(messages::id)
        .load(c))?)
}

/// Idempotency records, inbound transaction records and delivery feed
/// changes older than `old`, receipts created before `receipts_old`.
/// Returns the rows removed.
pub fn forget_old_records(
    conn: &mut DbConnection,
    old: i64,
    receipts_old: i64,
) -> Result<usize, StorageError> {
    let mut removed = 0;
    removed += with_backend!(conn, c => diesel::delete(send_idempotency::table.filter(send_idempotency::created_at.le(old))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(delivery_receipts::table.filter(delivery_receipts::created_at.le(receipts_old))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(inbound_txns::table.filter(inbound_txns::received_at.le(old))).execute(c))?;
    removed += super::feed::forget(conn, old)?;
    Ok(removed)
}
