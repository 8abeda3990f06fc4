//! The batch inserts on PostgreSQL: each takes its rows as one array per
//! column, so its text is the same for every batch and the writer's
//! connection keeps it prepared (see `storage::reusable`). SQLite, which
//! has no arrays, uses diesel's multi-row inserts instead.

use diesel::pg::PgConnection;
use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use super::rows::NewMessage;
use crate::storage::Reusable;

#[derive(QueryableByName)]
struct MessageRow {
    #[diesel(sql_type = Text)]
    message_id: String,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Inserts `batch`; returns each message's id with its row.
pub(super) fn insert_messages(
    pg: &mut PgConnection,
    batch: &[NewMessage<'_>],
    now: i64,
) -> QueryResult<Vec<(String, i64)>> {
    let rows: Vec<MessageRow> = Reusable::new(
        "INSERT INTO messages (origin, message_id, sender_account, sender_device, \
         request_digest, body, delivery_mode, created_at, expires_at) \
         SELECT m.origin, m.message_id, m.sender_account, m.sender_device, m.digest, m.body, \
         m.delivery_mode, $1, m.expires_at \
         FROM unnest($2, $3, $4, $5, $6, $7, $8, $9) AS m(origin, message_id, \
         sender_account, sender_device, digest, body, delivery_mode, expires_at) \
         RETURNING message_id, id",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(batch.iter().map(|m| m.origin).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(batch.iter().map(|m| m.message_id).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        batch
            .iter()
            .map(|m| m.sender.map(|s| s.0))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(
        batch
            .iter()
            .map(|m| m.sender.map(|s| s.1))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Binary>, _>(batch.iter().map(|m| m.digest).collect::<Vec<_>>())
    .bind::<Array<Binary>, _>(batch.iter().map(|m| m.body).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        batch
            .iter()
            .map(|m| m.delivery.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<BigInt>, _>(batch.iter().map(|m| m.expires_at).collect::<Vec<_>>())
    .load(pg)?;
    Ok(rows
        .into_iter()
        .map(|row| (row.message_id, row.id))
        .collect())
}

/// One delivery to insert.
pub(super) struct DeliveryRow<'a> {
    pub message_row: i64,
    pub device_row: i64,
    pub recipient_account: &'a str,
    pub key_wrap: &'a [u8],
    pub body_bytes: i64,
    pub expires_at: i64,
}

#[derive(QueryableByName)]
struct DeliveryId {
    #[diesel(sql_type = BigInt)]
    message_row: i64,
    #[diesel(sql_type = BigInt)]
    device_row: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Inserts `rows`; returns (message row, device row, delivery id) of each.
pub(super) fn insert_deliveries(
    pg: &mut PgConnection,
    rows: &[DeliveryRow<'_>],
    now: i64,
) -> QueryResult<Vec<(i64, i64, i64)>> {
    let numbers = |f: fn(&DeliveryRow<'_>) -> i64| rows.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<DeliveryId> = Reusable::new(
        "INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, \
         body_bytes, created_at, expires_at) \
         SELECT d.message_row, d.device_row, d.recipient_account, d.key_wrap, d.body_bytes, \
         $1, d.expires_at \
         FROM unnest($2, $3, $4, $5, $6, $7) \
         AS d(message_row, device_row, recipient_account, key_wrap, body_bytes, expires_at) \
         RETURNING message_row, device_row, id",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<BigInt>, _>(numbers(|d| d.message_row))
    .bind::<Array<BigInt>, _>(numbers(|d| d.device_row))
    .bind::<Array<Text>, _>(rows.iter().map(|d| d.recipient_account).collect::<Vec<_>>())
    .bind::<Array<Binary>, _>(rows.iter().map(|d| d.key_wrap).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(numbers(|d| d.body_bytes))
    .bind::<Array<BigInt>, _>(numbers(|d| d.expires_at))
    .load(pg)?;
    Ok(ids
        .into_iter()
        .map(|d| (d.message_row, d.device_row, d.id))
        .collect())
}

/// A sender's receipt for one recipient: (sender, message id, recipient, state).
pub(super) type ReceiptRow<'a> = (&'a str, &'a str, &'a str, &'a str);

pub(super) fn insert_receipts(
    pg: &mut PgConnection,
    rows: &[ReceiptRow<'_>],
    now: i64,
) -> QueryResult<usize> {
    Reusable::new(
        "INSERT INTO delivery_receipts (sender_account, message_id, recipient, state, updated_at) \
         SELECT r.sender_account, r.message_id, r.recipient, r.state, $1 \
         FROM unnest($2, $3, $4, $5) AS r(sender_account, message_id, recipient, state)",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.3).collect::<Vec<_>>())
    .execute(pg)
}

/// A send's idempotency record: (sender, message id, request digest, response).
pub(super) type RecordRow<'a> = (&'a str, &'a str, &'a [u8], String);

pub(super) fn insert_records(
    pg: &mut PgConnection,
    rows: &[RecordRow<'_>],
    now: i64,
) -> QueryResult<usize> {
    Reusable::new(
        "INSERT INTO send_idempotency (sender_account, message_id, request_digest, response, \
         created_at) \
         SELECT r.sender_account, r.message_id, r.request_digest, r.response, $1 \
         FROM unnest($2, $3, $4, $5) AS r(sender_account, message_id, request_digest, response)",
    )
    .bind::<BigInt, _>(now)
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind::<Array<Binary>, _>(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.3.as_str()).collect::<Vec<_>>())
    .execute(pg)
}

/// Adds a batch's deliveries to a device's pending counters. diesel never
/// keeps an `UPDATE` prepared; this one has a single plan (by primary key).
pub(super) fn bump_counters(
    pg: &mut PgConnection,
    device_row: i64,
    count: i64,
    bytes: i64,
) -> QueryResult<usize> {
    Reusable::new(
        "UPDATE devices SET pending_messages = pending_messages + $1, \
         pending_bytes = pending_bytes + $2 WHERE id = $3",
    )
    .bind::<BigInt, _>(count)
    .bind::<BigInt, _>(bytes)
    .bind::<BigInt, _>(device_row)
    .execute(pg)
}

/// A stored idempotency record: (sender, message id, digest, response).
pub(super) type StoredRecord = (String, String, Vec<u8>, String);

#[derive(QueryableByName)]
struct RecordFound {
    #[diesel(sql_type = Text)]
    sender_account: String,
    #[diesel(sql_type = Text)]
    message_id: String,
    #[diesel(sql_type = Binary)]
    request_digest: Vec<u8>,
    #[diesel(sql_type = Text)]
    response: String,
}

/// The idempotency records of these (sender, message id) pairs: one index
/// probe per pair. Planned on every call, never prepared: a generic plan
/// made while the table is small could scan it once it is large (see
/// `storage::plan_each_time`).
pub(super) fn find_records(
    pg: &mut PgConnection,
    keys: &[(&str, &str)],
) -> QueryResult<Vec<StoredRecord>> {
    let found: Vec<RecordFound> = diesel::sql_query(
        "SELECT s.sender_account, s.message_id, s.request_digest, s.response \
         FROM unnest($1, $2) AS k(sender_account, message_id) \
         JOIN send_idempotency s \
         ON s.sender_account = k.sender_account AND s.message_id = k.message_id",
    )
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .load(pg)?;
    Ok(found
        .into_iter()
        .map(|r| (r.sender_account, r.message_id, r.request_digest, r.response))
        .collect())
}
