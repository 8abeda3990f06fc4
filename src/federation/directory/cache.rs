//! Bounds on what remote identity look-ups leave behind. A look-up stores
//! the fetched document (up to 256 KiB) and the pin of the address's
//! account key in `remote_identities`. The document is a cache: once it
//! expires the purge empties it, so a stranger who makes people's server
//! look up made-up addresses leaves a few hundred bytes per address, not the
//! documents. The pin outlives the cache, since it is what reports a changed
//! key; a pin nobody has looked up for `PIN_UNUSED` is forgotten too.

use std::time::Duration;

use diesel::prelude::*;

use crate::storage::schema::remote_identities;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// How long a pin is kept after the last look-up of its address.
pub const PIN_UNUSED: Duration = Duration::from_secs(180 * 86_400);

/// What one purge pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IdentityPurge {
    /// Expired documents emptied.
    pub documents: usize,
    /// Pins forgotten.
    pub pins: usize,
}

/// Empties up to `batch` expired documents and forgets up to `batch` pins
/// unused for `PIN_UNUSED`, as of `now` (Unix ms).
pub fn purge(conn: &mut DbConnection, now: i64, batch: i64) -> Result<IdentityPurge, StorageError> {
    let expired: Vec<String> = with_backend!(conn, c => remote_identities::table
        .filter(remote_identities::expires_at.le(now))
        .filter(remote_identities::document.ne(""))
        .select(remote_identities::address)
        .limit(batch)
        .load(c))?;
    let documents = with_backend!(conn, c => diesel::update(
        remote_identities::table
            .filter(remote_identities::address.eq_any(&expired))
            .filter(remote_identities::expires_at.le(now)),
    )
    .set(remote_identities::document.eq(""))
    .execute(c))?;
    let unused_since = now.saturating_sub(crate::time::duration_ms(PIN_UNUSED));
    let stale: Vec<String> = with_backend!(conn, c => remote_identities::table
        .filter(remote_identities::fetched_at.lt(unused_since))
        .select(remote_identities::address)
        .limit(batch)
        .load(c))?;
    let pins = with_backend!(conn, c => diesel::delete(
        remote_identities::table
            .filter(remote_identities::address.eq_any(&stale))
            .filter(remote_identities::fetched_at.lt(unused_since)),
    )
    .execute(c))?;
    Ok(IdentityPurge { documents, pins })
}

/// Ends the cached copy of `address`'s identity, so the next look-up
/// fetches the device list its server holds now (after a `stale_devices`
/// answer). The pin stays.
pub fn expire_copy(conn: &mut DbConnection, address: &str, now: i64) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::update(
        remote_identities::table
            .find(address)
            .filter(remote_identities::expires_at.gt(now)),
    )
    .set(remote_identities::expires_at.eq(now))
    .execute(c))?;
    Ok(())
}
