//! Admin views and actions on accounts, and server-wide figures.

use diesel::prelude::*;
use serde::Serialize;

use crate::storage::schema::{accounts, deliveries, destinations, devices, messages, outbox};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// One account as an admin sees it (no keys beyond the public account key).
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    pub alias: String,
    pub account_key: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
    pub active_devices: i64,
    pub pending_deliveries: i64,
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<UserInfo>, StorageError> {
    let rows: Vec<(String, String, i64, Option<i64>)> = with_backend!(conn, c => accounts::table
        .order(accounts::alias.asc())
        .select((accounts::alias, accounts::account_key, accounts::created_at, accounts::disabled_at))
        .load(c))?;
    let mut out = Vec::with_capacity(rows.len());
    for (alias, account_key, created_at, disabled_at) in rows {
        let (active_devices, pending): (i64, Option<i64>) = with_backend!(conn, c => devices::table
            .filter(devices::account_key.eq(&account_key))
            .filter(devices::revoked_at.is_null())
            .select((
                diesel::dsl::count_star(),
                diesel::dsl::sql::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>>(
                    "CAST(SUM(pending_messages) AS BIGINT)",
                ),
            ))
            .first(c))?;
        out.push(UserInfo {
            alias,
            account_key,
            created_at,
            disabled_at,
            active_devices,
            pending_deliveries: pending.unwrap_or(0),
        });
    }
    Ok(out)
}

pub use crate::identity::account_changes::{delete, set_disabled};

/// Server-wide figures for `homingd admin stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub accounts: i64,
    pub disabled_accounts: i64,
    pub active_devices: i64,
    pub messages_held: i64,
    pub pending_deliveries: i64,
    pub queued_remote: i64,
    pub destinations_failing: i64,
}

pub fn stats(conn: &mut DbConnection) -> Result<Stats, StorageError> {
    Ok(with_backend!(conn, c => Stats {
        accounts: accounts::table.count().get_result(c)?,
        disabled_accounts: accounts::table.filter(accounts::disabled_at.is_not_null()).count().get_result(c)?,
        active_devices: devices::table.filter(devices::revoked_at.is_null()).count().get_result(c)?,
        messages_held: messages::table.count().get_result(c)?,
        pending_deliveries: deliveries::table.count().get_result(c)?,
        queued_remote: outbox::table.count().get_result(c)?,
        destinations_failing: destinations::table.filter(destinations::failures.gt(0)).count().get_result(c)?,
    }))
}
