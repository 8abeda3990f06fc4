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
use crate::federation::wire::{Transaction, TxnMessage, MAX_TXN_BODY_BYTES, MAX_TXN_MESSAGES};
use crate::mailbox::{DeliveryMode, RecipientWraps};
use crate::storage::schema::{messages, outbox, outbox_txns};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

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
#[derive(QueryableByName, Queryable)]
struct OutboxRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    message_row: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    sender_account: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    recipients: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    body: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    delivery_mode: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created_at: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    expires_at: i64,
}

/// The next batch for `destination`: with `resend`, an open transaction
/// not in `in_flight` again under its id; else (or when there is none) the
/// oldest rows no open transaction names, under a new id. Runs in the
/// caller's write transaction, which must commit the new transaction's row
/// before the batch is sent.
pub fn next_batch(
    conn: &mut DbConnection,
    origin: &str,
    destination: &str,
    in_flight: &[String],
    resend: bool,
) -> Result<Option<Batch>, StorageError> {
    let open = open_transactions(conn, destination)?;
    if resend {
        for (txn_id, ids) in open.iter().filter(|(id, _)| !in_flight.contains(id)) {
            let rows = rows_by_id(conn, ids)?;
            if rows.is_empty() {
                // Everything it carried was bounced or dropped meanwhile.
                with_backend!(conn, c => diesel::delete(outbox_txns::table.find(txn_id)).execute(c))?;
                continue;
            }
            return Ok(Some(batch(origin, txn_id.clone(), true, rows)?));
        }
    }
    let taken: Vec<i64> = open.iter().flat_map(|(_, ids)| ids).copied().collect();
    let mut rows = oldest_untaken(conn, destination, &taken)?;
    // The first message always goes, whatever its size.
    let (mut bytes, mut keep) = (0usize, 0);
    for row in &rows {
        bytes += row.body.len();
        if keep > 0 && bytes > MAX_TXN_BODY_BYTES {
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
    let named = serde_json::to_string(&ids).map_err(|e| StorageError::Migration(e.to_string()))?;
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
                StorageError::Migration(format!("open transaction {txn_id} unreadable: {e}"))
            })?;
            Ok((txn_id, ids))
        })
        .collect()
}

/// These outbox rows, those still there, in id order.
fn rows_by_id(conn: &mut DbConnection, ids: &[i64]) -> Result<Vec<OutboxRow>, StorageError> {
    Ok(with_backend!(conn, c => outbox::table
        .inner_join(messages::table)
        .filter(outbox::id.eq_any(ids))
        .order(outbox::id.asc())
        .select(OUTBOX_ROW)
        .load(c))?)
}

const OUTBOX_ROW: (
    outbox::id,
    outbox::message_row,
    messages::message_id,
    messages::sender_account,
    outbox::recipients,
    messages::body,
    messages::delivery_mode,
    messages::created_at,
    messages::expires_at,
) = (
    outbox::id,
    outbox::message_row,
    messages::message_id,
    messages::sender_account,
    outbox::recipients,
    messages::body,
    messages::delivery_mode,
    messages::created_at,
    messages::expires_at,
);

/// The destination's oldest rows outside `taken`, as many as a transaction
/// holds. On PostgreSQL planned for each call: the index on (destination,
/// id) read in order from the start, past the rows of open transactions,
/// is the plan for a queue of any length, and PostgreSQL sizes the table
/// from its pages at planning time; a generic plan made while the queue
/// was a page could sort the whole queue once it is long.
fn oldest_untaken(
    conn: &mut DbConnection,
    destination: &str,
    taken: &[i64],
) -> Result<Vec<OutboxRow>, StorageError> {
    use diesel::sql_types::{Array, BigInt, Text};
    let limit = MAX_TXN_MESSAGES as i64;
    Ok(match conn {
        DbConnection::Postgres(pg) => diesel::sql_query(
            "SELECT o.id, o.message_row, m.message_id, m.sender_account, o.recipients, m.body, \
             m.delivery_mode, m.created_at, m.expires_at \
             FROM outbox o JOIN messages m ON m.id = o.message_row \
             WHERE o.destination = $1 AND o.id <> ALL($2) ORDER BY o.id LIMIT $3",
        )
        .bind::<Text, _>(destination)
        .bind::<Array<BigInt>, _>(taken)
        .bind::<BigInt, _>(limit)
        .load(pg)?,
        DbConnection::Sqlite(c) => outbox::table
            .inner_join(messages::table)
            .filter(outbox::destination.eq(destination))
            .filter(outbox::id.ne_all(taken))
            .order(outbox::id.asc())
            .limit(limit)
            .select(OUTBOX_ROW)
            .load(c)?,
    })
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
        let recipients: Vec<RecipientWraps> =
            serde_json::from_str(&row.recipients).map_err(|e| {
                StorageError::Migration(format!("outbox row {} unreadable: {e}", row.id))
            })?;
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

fn new_txn_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    b64(&bytes)
}
