//! Which servers this one federates with: `federation.allow` / `.deny` from
//! the configuration plus rules an admin sets at run time (table
//! `federation_rules`). Enforced in both directions.

use diesel::prelude::*;

use crate::address::ServerName;
use crate::config::FederationSettings;
use crate::storage::schema::federation_rules;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// A run-time rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Allow,
    Deny,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Allow => "allow",
            Rule::Deny => "deny",
        }
    }
}

/// True when `server` may exchange mail with this one. A deny (in the
/// config or at run time) always wins; when any allow rule exists, only
/// allowed servers pass.
pub fn is_allowed(
    conn: &mut DbConnection,
    settings: &FederationSettings,
    server: &ServerName,
) -> Result<bool, StorageError> {
    if settings.deny.contains(server) {
        return Ok(false);
    }
    Ok(settings.permits(server, &load_rules(conn)?))
}

/// The run-time rules: (server, "allow" or "deny").
pub fn load_rules(conn: &mut DbConnection) -> Result<Vec<(String, String)>, StorageError> {
    crate::storage::mail::federation_rules(conn)
}

/// Sets (or replaces) the run-time rule for `server`.
pub fn set_rule(
    conn: &mut DbConnection,
    server: &ServerName,
    rule: Rule,
) -> Result<(), StorageError> {
    let now = crate::time::now_ms();
    with_backend!(conn, c => diesel::insert_into(federation_rules::table)
        .values((
            federation_rules::server_name.eq(server.as_str()),
            federation_rules::rule.eq(rule.as_str()),
            federation_rules::created_at.eq(now),
        ))
        .on_conflict(federation_rules::server_name)
        .do_update()
        .set((federation_rules::rule.eq(rule.as_str()), federation_rules::created_at.eq(now)))
        .execute(c))?;
    Ok(())
}

/// Removes the run-time rule for `server`; false when there was none.
pub fn clear_rule(conn: &mut DbConnection, server: &ServerName) -> Result<bool, StorageError> {
    let removed = with_backend!(conn, c => diesel::delete(federation_rules::table.find(server.as_str())).execute(c))?;
    Ok(removed > 0)
}

/// Every run-time rule, as (server, rule).
pub fn list_rules(conn: &mut DbConnection) -> Result<Vec<(String, String)>, StorageError> {
    Ok(with_backend!(conn, c => federation_rules::table
        .order(federation_rules::server_name.asc())
        .select((federation_rules::server_name, federation_rules::rule))
        .load(c))?)
}
