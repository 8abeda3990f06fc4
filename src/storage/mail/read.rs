//! What the send and inbound paths read before they write, for both
//! backends: idempotency records, the recipients' accounts with their live
//! devices, the federation rules, and which relayed ids are held already.
//! On PostgreSQL the first three are one statement (`read_pg`), so one
//! round trip in the writer's serial conversation; on SQLite a few.

use std::collections::HashMap;

use diesel::prelude::*;

use super::read_pg;
use crate::storage::schema::{accounts, devices, federation_rules, messages, send_idempotency};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// A live device of a recipient: (row, device id, last seen, pending
/// messages, pending bytes).
pub type DeviceState = (i64, String, i64, i64, i64);

/// Each recipient's account and live devices (id order), by alias.
pub type Recipients = HashMap<String, (String, Vec<DeviceState>)>;

/// A stored idempotency record: (sender, message id, digest, response).
pub type StoredRecord = (String, String, Vec<u8>, String);

/// What a group commit's sends read.
pub struct SendReads {
    /// The records of the (sender, message id) pairs already sent.
    pub records: Vec<StoredRecord>,
    pub recipients: Recipients,
    /// The run-time federation rules, (server, "allow" or "deny"); read
    /// only when asked for.
    pub rules: Vec<(String, String)>,
}

/// The idempotency records of `keys`, the accounts of `aliases` and, when
/// `with_rules`, the federation rules.
pub fn send_reads(
    conn: &mut DbConnection,
    keys: &[(&str, &str)],
    aliases: &[&str],
    with_rules: bool,
) -> Result<SendReads, StorageError> {
    let c = match conn {
        DbConnection::Postgres(pg) => {
            let read = read_pg::look_up(pg, keys, aliases)?;
            return Ok(SendReads {
                records: read.records,
                recipients: by_alias(read.recipients),
                rules: read.rules,
            });
        }
        DbConnection::Sqlite(c) => c,
    };
    let records = sqlite_records(c, keys)?;
    let rules = if with_rules {
        federation_rules(conn)?
    } else {
        Vec::new()
    };
    Ok(SendReads {
        records,
        recipients: load_recipients(conn, aliases)?,
        rules,
    })
}

/// The run-time federation rules: (server, "allow" or "deny").
pub fn federation_rules(conn: &mut DbConnection) -> Result<Vec<(String, String)>, StorageError> {
    Ok(with_backend!(conn, c => federation_rules::table
        .select((federation_rules::server_name, federation_rules::rule))
        .load(c))?)
}

/// The account behind each of `aliases` with its live devices (id order),
/// in one statement: one round trip on PostgreSQL however many there are.
/// Unknown or disabled aliases are absent.
pub fn load_recipients(
    conn: &mut DbConnection,
    aliases: &[&str],
) -> Result<Recipients, StorageError> {
    // A row per live device, or one row without a device for an account
    // that has none.
    type Row = (String, String, Option<DeviceState>);
    let joined: Vec<Row> = match conn {
        DbConnection::Postgres(pg) => read_pg::load_recipients(pg, aliases)?,
        DbConnection::Sqlite(c) => accounts::table
            .left_join(
                devices::table.on(devices::account_key
                    .eq(accounts::account_key)
                    .and(devices::revoked_at.is_null())),
            )
            .filter(accounts::alias.eq_any(aliases))
            .filter(accounts::disabled_at.is_null())
            .order(devices::id.asc())
            .select((
                accounts::alias,
                accounts::account_key,
                (
                    devices::id,
                    devices::device_id,
                    devices::last_seen_at,
                    devices::pending_messages,
                    devices::pending_bytes,
                )
                    .nullable(),
            ))
            .load(c)?,
    };
    Ok(by_alias(joined))
}

/// Recipient rows (alias, account, a device if it has any) gathered per
/// alias, devices in the rows' order.
fn by_alias(rows: Vec<(String, String, Option<DeviceState>)>) -> Recipients {
    let mut found = Recipients::new();
    for (alias, account, device) in rows {
        let entry = found.entry(alias).or_insert_with(|| (account, Vec::new()));
        entry.1.extend(device);
    }
    found
}

/// The records of these (sender, message id) pairs. Both key columns, so
/// the look-up seeks the primary key.
fn sqlite_records(
    c: &mut diesel::SqliteConnection,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<StoredRecord>> {
    let mut senders: Vec<&str> = keys.iter().map(|k| k.0).collect();
    senders.sort_unstable();
    senders.dedup();
    let ids: Vec<&str> = keys.iter().map(|k| k.1).collect();
    send_idempotency::table
        .filter(send_idempotency::sender_account.eq_any(&senders))
        .filter(send_idempotency::message_id.eq_any(&ids))
        .select((
            send_idempotency::sender_account,
            send_idempotency::message_id,
            send_idempotency::request_digest,
            send_idempotency::response,
        ))
        .load::<StoredRecord>(c)
}

#[derive(diesel::QueryableByName)]
struct HeldId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
}

/// Which of `ids` from `origin` this server holds already. On PostgreSQL,
/// one probe of the unique key per id, whatever the statistics say: with
/// `= ANY`, statistics taken before this origin's mail arrived made the
/// planner read every message held from the origin and filter the ids (3
/// ms per inbound transaction after a few seconds of load, growing with
/// the origin's mail). A scalar subquery is never turned into a join, so
/// it stays a look-up per id, and the statement can stay prepared.
pub fn held_already(
    conn: &mut DbConnection,
    origin: &str,
    ids: &[&str],
) -> Result<Vec<String>, StorageError> {
    use diesel::sql_types::{Array, Text};
    Ok(match conn {
        DbConnection::Postgres(pg) => crate::storage::Reusable::new(
            "SELECT k.message_id FROM unnest($1) AS k(message_id) WHERE (SELECT m.id FROM messages m \
             WHERE m.origin = $2 AND m.message_id = k.message_id) IS NOT NULL",
        )
        .bind::<Array<Text>, _>(ids)
        .bind::<Text, _>(origin)
        .load::<HeldId>(pg)?
        .into_iter()
        .map(|held| held.message_id)
        .collect(),
        DbConnection::Sqlite(c) => messages::table
            .filter(messages::origin.eq(origin))
            .filter(messages::message_id.eq_any(ids))
            .select(messages::message_id)
            .load::<String>(c)?,
    })
}
