//! Device linking rendezvous: a new device leaves a request (its public
//! keys), an existing device of the account answers it with the account key
//! sealed to the new device. The server only relays opaque blobs; the link
//! code the new device shows carries a hash of its request, so the server
//! cannot substitute keys.

use std::time::Duration;

use diesel::prelude::*;
use rand::RngCore;

use super::IdentityError;
use crate::crypto::b64;
use crate::storage::schema::device_links;
use crate::storage::DbConnection;
use crate::time::{duration_ms, now_ms};
use crate::with_backend;

/// How long a link request waits for an answer.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// Largest request or response blob.
pub const MAX_LINK_BLOB: usize = 4 * 1024;

/// A link as the devices see it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Link {
    pub link_id: String,
    /// The new device's request, base64url.
    pub request: String,
    /// The sealed answer, base64url, once an existing device gave it.
    pub response: Option<String>,
    pub expires_at: i64,
}

/// Stores a new device's request; returns the link.
pub fn create(conn: &mut DbConnection, request: &[u8]) -> Result<Link, IdentityError> {
    let now = now_ms();
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let link_id = b64(&id);
    let expires_at = now.saturating_add(duration_ms(LINK_TTL));
    with_backend!(conn, c => diesel::delete(device_links::table.filter(device_links::expires_at.le(now))).execute(c))?;
    with_backend!(conn, c => diesel::insert_into(device_links::table)
        .values((
            device_links::link_id.eq(&link_id),
            device_links::request.eq(request),
            device_links::created_at.eq(now),
            device_links::expires_at.eq(expires_at),
        ))
        .execute(c))?;
    Ok(Link {
        link_id,
        request: b64(request),
        response: None,
        expires_at,
    })
}

/// The link, unless unknown or expired.
pub fn get(conn: &mut DbConnection, link_id: &str) -> Result<Option<Link>, IdentityError> {
    let now = now_ms();
    let row: Option<(Vec<u8>, Option<Vec<u8>>, i64)> = with_backend!(conn, c => device_links::table
        .find(link_id)
        .filter(device_links::expires_at.gt(now))
        .select((device_links::request, device_links::response, device_links::expires_at))
        .first(c)
        .optional())?;
    Ok(row.map(|(request, response, expires_at)| Link {
        link_id: link_id.to_string(),
        request: b64(&request),
        response: response.map(|r| b64(&r)),
        expires_at,
    }))
}

/// Records the answer once; false when the link is unknown, expired or
/// already answered.
pub fn answer(
    conn: &mut DbConnection,
    link_id: &str,
    response: &[u8],
) -> Result<bool, IdentityError> {
    let now = now_ms();
    let updated = with_backend!(conn, c => diesel::update(
        device_links::table
            .find(link_id)
            .filter(device_links::expires_at.gt(now))
            .filter(device_links::response.is_null()),
    )
    .set(device_links::response.eq(Some(response)))
    .execute(c))?;
    Ok(updated == 1)
}
