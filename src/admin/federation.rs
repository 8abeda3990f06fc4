//! Admin views and actions on federation: destinations and their queues,
//! run-time allow/deny rules, and server key rotation.

use diesel::prelude::*;
use serde::Serialize;

use crate::storage::mail::outbox;
use crate::storage::schema::{destinations, outbox as outbox_table};
use crate::storage::{write_transaction, DbConnection, StorageError};
use crate::with_backend;

/// One destination's queue and back-off state.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationInfo {
    pub server_name: String,
    pub queued: i64,
    pub oldest_queued_at: Option<i64>,
    pub failures: i32,
    pub next_attempt_at: i64,
    /// The error of the last failed attempt; cleared by a success.
    pub last_error: Option<String>,
    /// When the last attempt failed (Unix ms); kept after a success.
    pub last_failure_at: Option<i64>,
    pub last_success_at: Option<i64>,
}

/// Every destination with its queue, oldest queued message and back-off.
pub fn destinations(conn: &mut DbConnection) -> Result<Vec<DestinationInfo>, StorageError> {
    type Row = (String, i32, i64, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = with_backend!(conn, c => destinations::table
        .order(destinations::server_name.asc())
        .select((
            destinations::server_name,
            destinations::failures,
            destinations::next_attempt_at,
            destinations::last_error,
            destinations::last_failure_at,
            destinations::last_success_at,
        ))
        .load(c))?;
    let mut out = Vec::with_capacity(rows.len());
    for (server_name, failures, next_attempt_at, last_error, last_failure_at, last_success_at) in
        rows
    {
        let (queued, oldest): (i64, Option<i64>) = with_backend!(conn, c => outbox_table::table
            .filter(outbox_table::destination.eq(&server_name))
            .select((diesel::dsl::count_star(), diesel::dsl::min(outbox_table::created_at)))
            .first(c))?;
        out.push(DestinationInfo {
            server_name,
            queued,
            oldest_queued_at: oldest,
            failures,
            next_attempt_at,
            last_error,
            last_failure_at,
            last_success_at,
        });
    }
    Ok(out)
}

/// Retry a destination now; false when it is unknown.
pub fn retry(conn: &mut DbConnection, destination: &str) -> Result<bool, StorageError> {
    outbox::retry_now(conn, destination)
}

/// Drops a destination's queue: the senders' receipts become `dropped`.
/// Returns how many queued messages were dropped.
pub fn drop_queue(conn: &mut DbConnection, destination: &str) -> Result<usize, StorageError> {
    write_transaction(conn, |conn| outbox::drop_queue(conn, destination))
}
