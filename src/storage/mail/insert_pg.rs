//! The batch on PostgreSQL, in one statement (see `insert`). It takes its
//! rows as one array per column, so its text is the same for every batch
//! and the writer's connection keeps it prepared (`storage::reusable`).

use std::collections::HashMap;

use diesel::pg::PgConnection;
use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

use super::insert::{Beside, Bumps, DeliveryRow, NewMessage, Stored};
use crate::storage::Reusable;

#[derive(QueryableByName)]
struct StoredRow {
    /// A message's id, on the rows that name a message.
    #[diesel(sql_type = Nullable<Text>)]
    message_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    message_row: i64,
    /// A delivery's device and id, on the rows that name a delivery.
    #[diesel(sql_type = Nullable<BigInt>)]
    device_row: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    delivery_id: Option<i64>,
}

/// The batch in one statement. Its parts depend on each other only through
/// what they return: a delivery joins its message's new row (`m`) and its
/// device's counter update (`c`), so the device row is locked before the
/// delivery draws its id; the outbox rows join their messages; the
/// delivery feed takes each new receipt's first state. Foreign
/// keys are checked at the statement's end, when the messages exist. A
/// destination row is inserted only when none is there: `ON CONFLICT`
/// alone would wait for a relay answer that is updating the row to commit.
const STORE: &str = "WITH m AS (\
     INSERT INTO messages (origin, message_id, sender_account, sender_device, request_digest, \
     body, delivery_mode, created_at, expires_at) \
     SELECT m.origin, m.message_id, m.sender_account, m.sender_device, m.digest, m.body, \
     m.delivery_mode, $1, m.expires_at \
     FROM unnest($2, $3, $4, $5, $6, $7, $8, $9) AS m(origin, message_id, sender_account, \
     sender_device, digest, body, delivery_mode, expires_at) \
     RETURNING message_id, id, expires_at, octet_length(body) AS body_bytes), \
     c AS (UPDATE devices SET pending_messages = devices.pending_messages + b.count, \
     pending_bytes = devices.pending_bytes + b.bytes \
     FROM unnest($10, $11, $12) AS b(device_row, count, bytes) WHERE devices.id = b.device_row \
     RETURNING devices.id), \
     d AS (INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, \
     body_bytes, created_at, expires_at) \
     SELECT m.id, t.device_row, t.recipient_account, t.key_wrap, m.body_bytes, $13, m.expires_at \
     FROM unnest($14, $15, $16, $17) AS t(message_id, device_row, recipient_account, key_wrap) \
     JOIN m ON m.message_id = t.message_id JOIN c ON c.id = t.device_row \
     RETURNING message_row, device_row, id), \
     r AS (INSERT INTO delivery_receipts (sender_account, message_id, recipient, state, \
     updated_at, created_at) \
     SELECT r.sender_account, r.message_id, r.recipient, r.state, n.now, n.now \
     FROM (VALUES ($18::bigint)) AS n(now), \
     unnest($19, $20, $21, $22) AS r(sender_account, message_id, recipient, state) \
     RETURNING sender_account, message_id, recipient, state, created_at), \
     f AS (INSERT INTO status_feed (sender_account, message_id, recipient, state, created_at) \
     SELECT sender_account, message_id, recipient, state, created_at FROM r), \
     i AS (INSERT INTO send_idempotency (sender_account, message_id, request_digest, response, \
     created_at) \
     SELECT i.sender_account, i.message_id, i.request_digest, i.response, $23 \
     FROM unnest($24, $25, $26, $27) AS i(sender_account, message_id, request_digest, response)), \
     s AS (INSERT INTO destinations (server_name) \
     SELECT DISTINCT s.server_name FROM unnest($28) AS s(server_name) \
     WHERE (SELECT 1 FROM destinations e WHERE e.server_name = s.server_name LIMIT 1) IS NULL \
     ON CONFLICT DO NOTHING), \
     o AS (INSERT INTO outbox (message_row, destination, recipients, created_at) \
     SELECT m.id, o.destination, o.recipients, $29 \
     FROM unnest($30, $31, $32) AS o(message_id, destination, recipients) \
     JOIN m ON m.message_id = o.message_id) \
     SELECT m.message_id, m.id AS message_row, NULL::bigint AS device_row, \
     NULL::bigint AS delivery_id FROM m \
     UNION ALL SELECT NULL, d.message_row, d.device_row, d.id FROM d";

/// Writes the batch, its counters, deliveries and what goes beside it in
/// one round trip.
pub(super) fn store(
    pg: &mut PgConnection,
    batch: &[NewMessage<'_>],
    bumps: &Bumps,
    deliveries: &[DeliveryRow<'_>],
    beside: &Beside<'_>,
    now: i64,
) -> QueryResult<Stored> {
    fn column<'r, T, U>(rows: &'r [T], f: impl Fn(&'r T) -> U) -> Vec<U> {
        rows.iter().map(f).collect()
    }
    let (receipts, records, outbox) = (&beside.receipts, &beside.records, &beside.outbox);
    let rows: Vec<StoredRow> = Reusable::new(STORE)
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(column(batch, |m| m.origin))
        .bind::<Array<Text>, _>(column(batch, |m| m.message_id))
        .bind::<Array<Nullable<Text>>, _>(column(batch, |m| m.sender.map(|s| s.0)))
        .bind::<Array<Nullable<Text>>, _>(column(batch, |m| m.sender.map(|s| s.1)))
        .bind::<Array<Binary>, _>(column(batch, |m| m.digest))
        .bind::<Array<Binary>, _>(column(batch, |m| m.body))
        .bind::<Array<Text>, _>(column(batch, |m| m.delivery.as_str()))
        .bind::<Array<BigInt>, _>(column(batch, |m| m.expires_at))
        .bind::<Array<BigInt>, _>(bumps.keys().copied().collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(bumps.values().map(|b| b.0).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(bumps.values().map(|b| b.1).collect::<Vec<_>>())
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(column(deliveries, |d| batch[d.message].message_id))
        .bind::<Array<BigInt>, _>(column(deliveries, |d| d.device_row))
        .bind::<Array<Text>, _>(column(deliveries, |d| d.recipient_account))
        .bind::<Array<Binary>, _>(column(deliveries, |d| d.key_wrap))
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(column(receipts, |r| r.0))
        .bind::<Array<Text>, _>(column(receipts, |r| r.1))
        .bind::<Array<Text>, _>(column(receipts, |r| r.2))
        .bind::<Array<Text>, _>(column(receipts, |r| r.3))
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(column(records, |r| r.0))
        .bind::<Array<Text>, _>(column(records, |r| r.1))
        .bind::<Array<Binary>, _>(column(records, |r| r.2))
        .bind::<Array<Text>, _>(column(records, |r| r.3.as_str()))
        .bind::<Array<Text>, _>(column(outbox, |o| o.1))
        .bind::<BigInt, _>(now)
        .bind::<Array<Text>, _>(column(outbox, |o| o.0))
        .bind::<Array<Text>, _>(column(outbox, |o| o.1))
        .bind::<Array<Text>, _>(column(outbox, |o| o.2.as_str()))
        .load(pg)?;
    let mut message_rows = HashMap::with_capacity(batch.len());
    let mut cursors = HashMap::with_capacity(deliveries.len());
    for row in rows {
        match (row.message_id, row.device_row, row.delivery_id) {
            (Some(message_id), _, _) => {
                message_rows.insert(message_id, row.message_row);
            }
            (None, Some(device_row), Some(id)) => {
                cursors.insert((row.message_row, device_row), id);
            }
            _ => {}
        }
    }
    Ok((message_rows, cursors))
}
