//! Which outbox rows a relay transaction carries.
//!
//! An open transaction is one row of `outbox_txns` naming its outbox rows,
//! from the moment its id is chosen until its answer is recorded: a retry
//! sends the same rows under the same id, which the remote answers from its
//! record. A new transaction takes the oldest rows of the destination that
//! no open transaction names. (Marking each outbox row with the id instead
//! wrote a new version of every row and an entry in each of its indexes: 12
//! µs a message on the sending server's one writer.)

use diesel::prelude::*;

use crate::crypto::b64;
use crate::storage::schema::{messages, outbox, outbox_txns};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;
use homing_proto::federation::{
    Transaction, TxnMessage, MAX_TXN_BODY_BYTES, MAX_TXN_MESSAGES, MAX_TXN_RECIPIENTS,
};
use homing_proto::wire::{DeliveryMode, RecipientWraps};

/// A batch ready to send.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sent before under this id and never answered.
    pub resent: bool,
    pub txn_id: String,
    pub transaction: Transaction,
    /// `(outbox row, message row, message id, sender)` per message.
    pub rows: Vec<(i64, i64, String, Option<String>)>,
}

/// An outbox row with what its message contributes to a transaction.
#[derive(Queryable)]
struct OutboxRow {
    id: i64,
    message_row: i64,
    message_id: String,
    sender_account: Option<String>,
    recipients: String,
    body: Vec<u8>,
    delivery_mode: String,
    created_at: i64,
    expires_at: i64,
}

/// The next batch for `destination`: with `resend`, an open transaction
/// not in `in_flight` again under its id; else (or when there is none) the
/// oldest rows no open transaction names, under a new id, only those past
/// `after` when given. Runs in the caller's write transaction, which must
/// commit the new transaction's row before the batch is sent.
pub fn next_batch(
    conn: &mut DbConnection,
    origin: &str,
    destination: &str,
    in_flight: &[String],
    resend: bool,
    after: Option<i64>,
) -> Result<Option<Batch>, StorageError> {
    let open = open_transactions(conn, destination)?;
    if resend {
        for (txn_id, ids) in open.iter().filter(|(id, _)| !in_flight.contains(id)) {
            let rows = rows_by_id(conn, destination, ids)?;
            if rows.is_empty() {
                // Everything it carried was bounced or dropped meanwhile.
                with_backend!(conn, c => diesel::delete(outbox_txns::table.find(txn_id)).execute(c))?;
                continue;
            }
            return Ok(Some(batch(origin, txn_id.clone(), true, rows)?));
        }
    }
    let taken: Vec<i64> = open.iter().flat_map(|(_, ids)| ids).copied().collect();
    let mut rows = oldest_untaken(conn, destination, &taken, after)?;
    // The first message always goes, whatever its size (and it names at
    // most `MAX_RECIPIENTS`); receivers refuse more recipients in all.
    let (mut bytes, mut recipients, mut keep) = (0usize, 0usize, 0);
    for row in &rows {
        bytes += row.body.len();
        recipients += recipient_count(&row.recipients);
        if keep > 0 && (bytes > MAX_TXN_BODY_BYTES || recipients > MAX_TXN_RECIPIENTS) {
            break;
        }
        keep += 1;
    }
    rows.truncate(keep);
    if rows.is_empty() {
        return Ok(None);
    }
    let txn_id = new_txn_id();
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let named = serde_json::to_string(&ids).map_err(|e| StorageError::Encode(e.to_string()))?;
    with_backend!(conn, c => diesel::insert_into(outbox_txns::table)
        .values((
            outbox_txns::txn_id.eq(&txn_id),
            outbox_txns::destination.eq(destination),
            outbox_txns::outbox_rows.eq(&named),
            outbox_txns::created_at.eq(crate::time::now_ms()),
        ))
        .execute(c))?;
    Ok(Some(batch(origin, txn_id, false, rows)?))
}

/// The destination's open transactions, oldest first, with their rows.
fn open_transactions(
    conn: &mut DbConnection,
    destination: &str,
) -> Result<Vec<(String, Vec<i64>)>, StorageError> {
    let open: Vec<(String, String)> = with_backend!(conn, c => outbox_txns::table
        .filter(outbox_txns::destination.eq(destination))
        .order((outbox_txns::created_at.asc(), outbox_txns::txn_id.asc()))
        .select((outbox_txns::txn_id, outbox_txns::outbox_rows))
        .load(c))?;
    open.into_iter()
        .map(|(txn_id, named)| {
            let ids = serde_json::from_str(&named).map_err(|e| {
                StorageError::Corrupt(format!("open transaction {txn_id} unreadable: {e}"))
            })?;
            Ok((txn_id, ids))
        })
        .collect()
}

/// These outbox rows of `destination`, those still there, in id order.
fn rows_by_id(
    conn: &mut DbConnection,
    destination: &str,
    ids: &[i64],
) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(with_backend!(conn, c => outbox::table
        .inner_join(messages::table)
        .filter(outbox::id.eq_any(ids))
        .filter(outbox::destination.eq(destination))
        .order(outbox::id.asc())
        .select((
            outbox::id,
            outbox::message_row,
            messages::message_id,
            messages::sender_account,
            outbox::recipients,
            messages::body,
            messages::delivery_mode,
            messages::created_at,
            messages::expires_at,
        ))
        .load(c))?)
}

/// The destination's oldest rows outside `taken`, as many as a transaction
/// holds: the ids at the head of its queue, as many more as are taken, less
/// those taken, then those rows. (Filtering the rows by `id <> ALL(taken)`
/// in the database compared every row passed with every taken id.)
///
/// The head is the index on (destination, id) read in order from `after`
/// (or the start), whatever the queue's length. From the start it steps
/// over an entry for every row answered since the table was last
/// vacuumed, a minute's worth under load: 0.6 ms a transaction where from
/// `after` it is 0.1. And PostgreSQL's statistics lag a queue that changes
/// by thousands of rows a second: from an estimate of a few hundred rows
/// it would rather collect the destination's every row through a bitmap
/// and sort them (7 ms with 5,000 queued), so the caller's transaction
/// reads it with bitmap scans off.
fn oldest_untaken(
    conn: &mut DbConnection,
    destination: &str,
    taken: &[i64],
    after: Option<i64>,
) -> Result<Vec<OutboxRow>, StorageError> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let limit = MAX_TXN_MESSAGES;
    let head = (limit + taken.len()) as i64;
    let after = after.unwrap_or(i64::MIN);
    let head: Vec<i64> = match conn {
        DbConnection::Postgres(pg) => {
            diesel::sql_query("SET LOCAL enable_bitmapscan = off").execute(pg)?;
            diesel::sql_query(
                "SELECT id FROM outbox WHERE destination = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind::<Text, _>(destination)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(head)
            .load::<Id>(pg)?
            .into_iter()
            .map(|row| row.id)
            .collect()
        }
        DbConnection::Sqlite(c) => outbox::table
            .filter(outbox::destination.eq(destination))
            .filter(outbox::id.gt(after))
            .order(outbox::id.asc())
            .limit(head)
            .select(outbox::id)
            .load(c)?,
    };
    let taken: std::collections::HashSet<i64> = taken.iter().copied().collect();
    let ids: Vec<i64> = head
        .into_iter()
        .filter(|id| !taken.contains(id))
        .take(limit)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    rows_by_id(conn, destination, &ids)
}

fn batch(
    origin: &str,
    txn_id: String,
    resent: bool,
    rows: Vec<OutboxRow>,
) -> Result<Batch, StorageError> {
    let mut messages_out = Vec::with_capacity(rows.len());
    let mut refs = Vec::with_capacity(rows.len());
    for row in rows {
        let recipients: Vec<RecipientWraps> = serde_json::from_str(&row.recipients)
            .map_err(|e| StorageError::Corrupt(format!("outbox row {} unreadable: {e}", row.id)))?;
        messages_out.push(TxnMessage {
            message_id: row.message_id.clone(),
            body: b64(&row.body),
            delivery: DeliveryMode::from_db(&row.delivery_mode),
            created_at: row.created_at,
            expires_at: row.expires_at,
            recipients,
        });
        refs.push((row.id, row.message_row, row.message_id, row.sender_account));
    }
    Ok(Batch {
        resent,
        txn_id,
        transaction: Transaction {
            origin: origin.to_string(),
            messages: messages_out,
        },
        rows: refs,
    })
}

/// How many recipients an outbox row's JSON names; an unreadable row
/// counts as none here and fails where the batch is built.
fn recipient_count(recipients: &str) -> usize {
    serde_json::from_str::<Vec<serde::de::IgnoredAny>>(recipients).map_or(0, |list| list.len())
}

fn new_txn_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    b64(&bytes)
}
