//! The reads of the send and inbound paths on PostgreSQL, each one
//! statement kept prepared (see `read`).

use diesel::pg::PgConnection;
use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use super::read::{DeviceState, StoredRecord};
use crate::storage::Reusable;

/// The accounts behind `aliases` with their live devices (id order): the
/// recipients' part of [`look_up`], whose other parts cost nothing here.
pub(super) fn load_recipients(
    pg: &mut PgConnection,
    aliases: &[&str],
) -> QueryResult<Vec<RecipientRowOf>> {
    Ok(look_up(pg, &[], aliases)?.recipients)
}

#[derive(QueryableByName)]
struct LookedUp {
    /// 1: an idempotency record; 2: a recipient (and a device); 3: a
    /// federation rule.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    part: i32,
    /// The sender, the alias or the server.
    #[diesel(sql_type = Text)]
    first: String,
    /// The message id, the account or the rule.
    #[diesel(sql_type = Text)]
    second: String,
    #[diesel(sql_type = Nullable<Binary>)]
    request_digest: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    response: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    device_row: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    device_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_seen_at: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pending_messages: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pending_bytes: Option<i64>,
}

/// A recipient row: (alias, account, its device, if it has any).
pub(super) type RecipientRowOf = (String, String, Option<DeviceState>);

/// What [`look_up`] read.
pub(super) struct Read {
    pub records: Vec<StoredRecord>,
    pub recipients: Vec<RecipientRowOf>,
    /// (server, "allow" or "deny").
    pub rules: Vec<(String, String)>,
}

/// The reads of a group commit (see `read::look_up`) in one statement: the
/// idempotency records of `keys`, the accounts of `aliases` with their
/// live devices in id order (the alias is a unique key) and the federation
/// rules (a handful of rows, often none). Prepared, like the writes: each
/// record is looked up by a subquery with `LIMIT`, which PostgreSQL never
/// turns into a join, so even a generic plan made while the table was
/// nearly empty stays one probe per key instead of reading the sender's
/// whole history.
pub(super) fn look_up(
    pg: &mut PgConnection,
    keys: &[(&str, &str)],
    aliases: &[&str],
) -> QueryResult<Read> {
    let rows: Vec<LookedUp> = Reusable::new(
        "SELECT 1 AS part, k.sender_account AS first, k.message_id AS second, \
         s.request_digest, s.response, NULL::bigint AS device_row, NULL::text AS device_id, \
         NULL::bigint AS last_seen_at, NULL::bigint AS pending_messages, \
         NULL::bigint AS pending_bytes \
         FROM unnest($1, $2) AS k(sender_account, message_id) \
         CROSS JOIN LATERAL (SELECT i.request_digest, i.response FROM send_idempotency i \
         WHERE i.sender_account = k.sender_account AND i.message_id = k.message_id LIMIT 1) s \
         UNION ALL \
         SELECT 2, a.alias, a.account_key, NULL, NULL, d.id, d.device_id, d.last_seen_at, \
         d.pending_messages, d.pending_bytes \
         FROM accounts a LEFT JOIN devices d \
         ON d.account_key = a.account_key AND d.revoked_at IS NULL \
         WHERE a.alias = ANY($3) AND a.disabled_at IS NULL \
         UNION ALL \
         SELECT 3, r.server_name, r.rule, NULL, NULL, NULL, NULL, NULL, NULL, NULL \
         FROM federation_rules r \
         ORDER BY part, device_row",
    )
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(aliases)
    .load(pg)?;
    let mut read = Read {
        records: Vec::new(),
        recipients: Vec::new(),
        rules: Vec::new(),
    };
    for row in rows {
        match row.part {
            1 => read.records.push((
                row.first,
                row.second,
                row.request_digest.unwrap_or_default(),
                row.response.unwrap_or_default(),
            )),
            2 => {
                let device = match (row.device_row, row.device_id, row.last_seen_at) {
                    (Some(id), Some(device_id), Some(seen)) => Some((
                        id,
                        device_id,
                        seen,
                        row.pending_messages.unwrap_or(0),
                        row.pending_bytes.unwrap_or(0),
                    )),
                    _ => None,
                };
                read.recipients.push((row.first, row.second, device));
            }
            _ => read.rules.push((row.first, row.second)),
        }
    }
    Ok(read)
}
