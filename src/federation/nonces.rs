//! Nonces of signed federation requests already seen (table
//! `federation_nonces`), so a captured request cannot be replayed while
//! its signature is fresh.

use diesel::prelude::*;

use crate::storage::schema::federation_nonces;
use crate::storage::{is_unique_violation, DbConnection, StorageError};
use crate::with_backend;

/// Remembers `nonce` from `origin` until `expires_at`; false when it was
/// seen already.
pub fn remember(
    conn: &mut DbConnection,
    origin: &str,
    nonce: &str,
    expires_at: i64,
) -> Result<bool, StorageError> {
    let inserted = with_backend!(conn, c => diesel::insert_into(federation_nonces::table)
        .values((
            federation_nonces::origin.eq(origin),
            federation_nonces::nonce.eq(nonce),
            federation_nonces::expires_at.eq(expires_at),
        ))
        .execute(c));
    match inserted {
        Ok(_) => Ok(true),
        Err(error) if is_unique_violation(&error) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Forgets nonces whose signatures have expired; returns how many.
pub fn forget_expired(conn: &mut DbConnection, now: i64) -> Result<usize, StorageError> {
    Ok(
        with_backend!(conn, c => diesel::delete(federation_nonces::table.filter(federation_nonces::expires_at.le(now))).execute(c))?,
    )
}
