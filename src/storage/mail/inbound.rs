//! The answers this server gave to other servers' transactions
//! (`inbound_txns`), kept so a retried transaction gets the same answer.

use diesel::prelude::*;

use crate::storage::schema::inbound_txns;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// The request digest and answer recorded for (`origin`, `txn_id`).
pub fn recorded_txn(
    conn: &mut DbConnection,
    origin: &str,
    txn_id: &str,
) -> Result<Option<(Vec<u8>, String)>, StorageError> {
    Ok(with_backend!(conn, c => inbound_txns::table
        .find((origin, txn_id))
        .select((inbound_txns::request_digest, inbound_txns::response))
        .first(c)
        .optional())?)
}

/// Records the answer to a transaction and keeps only `origin`'s newest
/// `keep` records.
pub fn record_txn(
    conn: &mut DbConnection,
    (origin, txn_id): (&str, &str),
    digest: &[u8],
    response: &str,
    now: i64,
    keep: u32,
) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::insert_into(inbound_txns::table)
        .values((
            inbound_txns::origin.eq(origin),
            inbound_txns::txn_id.eq(txn_id),
            inbound_txns::request_digest.eq(digest),
            inbound_txns::response.eq(response),
            inbound_txns::received_at.eq(now),
        ))
        .execute(c))?;
    forget_old_records(conn, origin, keep)?;
    Ok(())
}

/// Keeps `origin`'s newest `keep` transaction records and forgets the rest.
/// A sender retries only transactions still awaiting an answer (at most
/// four, the newest), so this costs honest peers nothing and stops one
/// peer from filling the table for `retention.max_pending_age`. Walks at
/// most `keep` entries of the (origin, received_at) index.
fn forget_old_records(
    conn: &mut DbConnection,
    origin: &str,
    keep: u32,
) -> Result<(), diesel::result::Error> {
    let newest_forgotten: Option<i64> = with_backend!(conn, c => inbound_txns::table
        .filter(inbound_txns::origin.eq(origin))
        .order(inbound_txns::received_at.desc())
        .select(inbound_txns::received_at)
        .offset(i64::from(keep))
        .first(c)
        .optional())?;
    if let Some(cutoff) = newest_forgotten {
        with_backend!(conn, c => diesel::delete(
            inbound_txns::table
                .filter(inbound_txns::origin.eq(origin))
                .filter(inbound_txns::received_at.le(cutoff)),
        )
        .execute(c))?;
    }
    Ok(())
}
