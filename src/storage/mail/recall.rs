//! What a recall reads: the sender's message, its deliveries (all
//! unacknowledged: an acknowledged delivery is gone already) and the relay
//! work that is certainly still here. Work in a transaction may be in the
//! remote server's custody already, and a destination some replica holds
//! the lease of may be getting a transaction built right now: both stay.

use diesel::prelude::*;

use crate::storage::schema::{accounts, deliveries, destinations, messages, outbox, outbox_txns};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// The row of the message `sender` sent from this server as `message_id`.
pub fn sent_message(
    conn: &mut DbConnection,
    origin: &str,
    sender: &str,
    message_id: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(with_backend!(conn, c => messages::table
        .filter(messages::origin.eq(origin))
        .filter(messages::message_id.eq(message_id))
        .filter(messages::sender_account.eq(sender))
        .select(messages::id)
        .first(c)
        .optional())?)
}

/// The message's deliveries still pending.
pub fn message_deliveries(
    conn: &mut DbConnection,
    message_row: i64,
) -> Result<Vec<i64>, StorageError> {
    Ok(with_backend!(conn, c => deliveries::table
        .filter(deliveries::message_row.eq(message_row))
        .select(deliveries::id)
        .load(c))?)
}

/// The message's relay work no transaction carries, to destinations no
/// replica is sending to: (outbox row, recipients as JSON). On PostgreSQL
/// the destination's row stays locked until the caller commits, so no
/// relay can claim it and build a transaction over these rows meanwhile
/// (a relay claims the lease before it builds one).
pub fn unsent_relay_work(
    conn: &mut DbConnection,
    message_row: i64,
    now: i64,
) -> Result<Vec<(i64, String)>, StorageError> {
    let rows: Vec<(i64, String, String)> = with_backend!(conn, c => outbox::table
        .filter(outbox::message_row.eq(message_row))
        .order(outbox::id.asc())
        .select((outbox::id, outbox::destination, outbox::recipients))
        .load(c))?;
    let mut unsent = Vec::new();
    for (id, destination, recipients) in rows {
        let lease: Option<Option<i64>> = match conn {
            DbConnection::Postgres(c) => destinations::table
                .find(&destination)
                .select(destinations::lease_expires_at)
                .for_update()
                .first(c)
                .optional()?,
            DbConnection::Sqlite(c) => destinations::table
                .find(&destination)
                .select(destinations::lease_expires_at)
                .first(c)
                .optional()?,
        };
        if lease.flatten().is_some_and(|until| until >= now) {
            continue;
        }
        let open: Vec<String> = with_backend!(conn, c => outbox_txns::table
            .filter(outbox_txns::destination.eq(&destination))
            .select(outbox_txns::outbox_rows)
            .load(c))?;
        let carried = open.iter().any(|named| {
            serde_json::from_str::<Vec<i64>>(named).map_or(true, |ids| ids.contains(&id))
        });
        if !carried {
            unsent.push((id, recipients));
        }
    }
    Ok(unsent)
}

/// The row of the message `origin` relayed here as `message_id`.
pub fn relayed_message(
    conn: &mut DbConnection,
    origin: &str,
    message_id: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(with_backend!(conn, c => messages::table
        .filter(messages::origin.eq(origin))
        .filter(messages::message_id.eq(message_id))
        .select(messages::id)
        .first(c)
        .optional())?)
}

/// The pending deliveries of `message_row` to the accounts of `aliases`,
/// as (alias, delivery row).
pub fn deliveries_by_alias(
    conn: &mut DbConnection,
    message_row: i64,
    aliases: &[String],
) -> Result<Vec<(String, i64)>, StorageError> {
    let accounts: Vec<(String, String)> = with_backend!(conn, c => accounts::table
        .filter(accounts::alias.eq_any(aliases))
        .select((accounts::alias, accounts::account_key))
        .load(c))?;
    let keys: Vec<&String> = accounts.iter().map(|(_, key)| key).collect();
    let rows: Vec<(String, i64)> = with_backend!(conn, c => deliveries::table
        .filter(deliveries::message_row.eq(message_row))
        .filter(deliveries::recipient_account.eq_any(&keys))
        .select((deliveries::recipient_account, deliveries::id))
        .load(c))?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, id)| {
            let alias = accounts.iter().find(|(_, k)| *k == key)?.0.clone();
            Some((alias, id))
        })
        .collect())
}
