//! Device linking rendezvous (federation-spec/linking.md): a new device
//! leaves a request (the address it joins and its public keys), an existing
//! device of that account answers it with the account key sealed to the new
//! device. The server reads only the address in the request, to take the
//! answer from that account's devices alone; the link code the new device
//! shows carries a hash of its request, so the server cannot substitute
//! keys.

use std::time::Duration;

use diesel::prelude::*;
use rand::RngCore;

use super::IdentityError;
use crate::address::{Address, Alias, ServerName};
use crate::crypto::b64;
use crate::storage::schema::device_links;
use crate::storage::DbConnection;
use crate::time::{duration_ms, now_ms};
use crate::with_backend;

/// How long a link request waits for an answer.
pub const LINK_TTL: Duration = Duration::from_secs(600);
/// Largest request or response blob.
pub const MAX_LINK_BLOB: usize = 4 * 1024;
/// The `type` of a link request.
pub const LINK_REQUEST_TYPE: &str = "homing.link_request.v1";

/// What became of an answer to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Recorded; the new device can fetch it.
    Recorded,
    /// The link is unknown, expired or already answered.
    Closed,
    /// The caller is not a device of the account the request names.
    Forbidden,
}

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

/// The alias a link request asks to join: a Homing link request for an
/// address on `server`.
fn requested_alias(request: &[u8], server: &ServerName) -> Option<Alias> {
    let request: serde_json::Value = serde_json::from_slice(request).ok()?;
    if request.get("type")?.as_str()? != LINK_REQUEST_TYPE {
        return None;
    }
    let address = Address::parse(request.get("address")?.as_str()?).ok()?;
    (address.server() == server).then(|| address.alias().clone())
}

/// Records the answer once, given by a device of `account_key`, which must
/// be the account on `server` that the request names: otherwise anyone
/// who saw the link code could hand the new device an account of theirs.
pub fn answer(
    conn: &mut DbConnection,
    link_id: &str,
    response: &[u8],
    account_key: &str,
    server: &ServerName,
) -> Result<Answered, IdentityError> {
    let now = now_ms();
    let request: Option<Vec<u8>> = with_backend!(conn, c => device_links::table
        .find(link_id)
        .filter(device_links::expires_at.gt(now))
        .filter(device_links::response.is_null())
        .select(device_links::request)
        .first(c)
        .optional())?;
    let Some(request) = request else {
        return Ok(Answered::Closed);
    };
    let owner = match requested_alias(&request, server) {
        Some(alias) => super::identity_by_alias(conn, alias.as_str())?,
        None => None,
    };
    if owner
        .map(|identity| identity.account_key.to_string())
        .as_deref()
        != Some(account_key)
    {
        return Ok(Answered::Forbidden);
    }
    let updated = with_backend!(conn, c => diesel::update(
        device_links::table
            .find(link_id)
            .filter(device_links::expires_at.gt(now))
            .filter(device_links::response.is_null()),
    )
    .set(device_links::response.eq(Some(response)))
    .execute(c))?;
    Ok(if updated == 1 {
        Answered::Recorded
    } else {
        Answered::Closed
    })
}
