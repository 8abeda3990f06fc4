//! Device sign-in without passwords: a single-use challenge, signed by the
//! device key together with the server's name, is exchanged for a bearer
//! token. Tokens are random, stored only as SHA-256 hashes, expire, and die
//! with their device.

use std::time::Duration;

use diesel::prelude::*;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::crypto::identity::{AuthStatement, DeviceId};
use crate::crypto::{b64, b64_array, PublicKey, SignatureBytes};
use crate::storage::schema::{accounts, auth_challenges, auth_revocations, auth_tokens, devices};
use crate::storage::{DbConnection, StorageError};
use crate::time::{duration_ms, now_ms};
use crate::with_backend;

/// Tokens start with this, so secret scanners and people recognise them.
const TOKEN_PREFIX: &str = "hmg_";

/// Why sign-in failed. Deliberately vague towards the client: which part
/// was wrong is logged, not returned.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the challenge is unknown, used or expired")]
    InvalidChallenge,
    #[error("unknown device, revoked device or disabled account")]
    UnknownDevice,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("missing bearer token")]
    MissingToken,
    #[error("the token is invalid, expired or revoked")]
    InvalidToken,
    /// The account signed in too often; only proven sign-ins count, so a
    /// stranger naming someone's key cannot lock them out.
    #[error("too many sign-ins for this account")]
    TooManySignIns { retry_after: Duration },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for AuthError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Storage(StorageError::Query(error))
    }
}

/// A fresh challenge for a device to sign.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Challenge {
    pub nonce: String,
    pub expires_at: i64,
}

/// A token handed to a device. The plain token exists only here.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenGrant {
    pub token: String,
    pub expires_at: i64,
    pub account_key: String,
    pub device_id: String,
}

/// The device behind a valid token: all an authenticated endpoint knows.
#[derive(Debug, Clone)]
pub struct AuthenticatedDevice {
    pub account_key: String,
    pub device_id: String,
    pub device_row: i64,
    pub token_hash: Vec<u8>,
    /// When the token expires (Unix ms).
    pub token_expires_at: i64,
}

/// A token request, already parsed.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub account_key: PublicKey,
    pub device_id: DeviceId,
    pub nonce: String,
    pub signature: SignatureBytes,
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// False for anything that cannot be one of our tokens, so it is refused
/// before any look-up.
pub fn well_formed(token: &str) -> bool {
    token.starts_with(TOKEN_PREFIX) && token.len() <= 128
}

/// Tells every daemon on this database that some token stopped working
/// before its expiry. Call it in the transaction that revokes: daemons drop
/// their cached token checks when the counter moves (see `token_cache`).
pub fn bump_revocations(conn: &mut DbConnection) -> Result<(), diesel::result::Error> {
    with_backend!(conn, c => diesel::insert_into(auth_revocations::table)
        .values((auth_revocations::id.eq(1), auth_revocations::epoch.eq(1i64)))
        .on_conflict(auth_revocations::id)
        .do_update()
        .set(auth_revocations::epoch.eq(auth_revocations::epoch + 1i64))
        .execute(c))?;
    Ok(())
}

/// The revocation counter; 0 before the first revocation.
pub fn revocation_epoch(conn: &mut DbConnection) -> Result<i64, diesel::result::Error> {
    let epoch: Vec<i64> = with_backend!(conn, c => auth_revocations::table
        .select(auth_revocations::epoch)
        .load(c))?;
    Ok(epoch.first().copied().unwrap_or(0))
}

/// Ends every token of a revoked device.
pub fn end_device_tokens(
    conn: &mut DbConnection,
    device_row: i64,
) -> Result<(), diesel::result::Error> {
    with_backend!(conn, c => diesel::delete(auth_tokens::table.filter(auth_tokens::device_row.eq(device_row))).execute(c))?;
    Ok(())
}

/// Forgets challenges and tokens that have expired; returns how many.
pub fn forget_expired(conn: &mut DbConnection, now: i64) -> Result<usize, diesel::result::Error> {
    let mut removed = with_backend!(conn, c => diesel::delete(auth_challenges::table.filter(auth_challenges::expires_at.le(now))).execute(c))?;
    removed += with_backend!(conn, c => diesel::delete(auth_tokens::table.filter(auth_tokens::expires_at.le(now))).execute(c))?;
    Ok(removed)
}

/// Creates a single-use challenge, and clears expired ones.
pub fn create_challenge(conn: &mut DbConnection, ttl: Duration) -> Result<Challenge, AuthError> {
    let now = now_ms();
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let expires_at = now.saturating_add(duration_ms(ttl));
    with_backend!(conn, c => diesel::delete(auth_challenges::table.filter(auth_challenges::expires_at.lt(now))).execute(c))?;
    with_backend!(conn, c => diesel::insert_into(auth_challenges::table)
        .values((auth_challenges::nonce.eq(nonce.to_vec()), auth_challenges::expires_at.eq(expires_at)))
        .execute(c))?;
    Ok(Challenge {
        nonce: b64(&nonce),
        expires_at,
    })
}

/// Exchanges a signed challenge for a token. The challenge is spent by the
/// attempt, whether or not the signature verifies. `admit` is asked only
/// once the signature verified (the per-account sign-in limit): charging
/// it earlier would let anyone who knows an account key, which is public,
/// exhaust it with junk and lock the owner out.
pub fn issue_token(
    conn: &mut DbConnection,
    server_name: &str,
    ttl: Duration,
    request: &TokenRequest,
    admit: impl FnOnce() -> Result<(), Duration>,
) -> Result<TokenGrant, AuthError> {
    let now = now_ms();
    let nonce =
        b64_array::<32>(&request.nonce, "nonce").map_err(|_| AuthError::InvalidChallenge)?;
    let spent = with_backend!(conn, c => diesel::delete(
        auth_challenges::table
            .filter(auth_challenges::nonce.eq(nonce.to_vec()))
            .filter(auth_challenges::expires_at.ge(now)),
    )
    .execute(c))?;
    if spent != 1 {
        return Err(AuthError::InvalidChallenge);
    }
    let device: Option<(i64, Vec<u8>)> = with_backend!(conn, c => devices::table
        .inner_join(accounts::table)
        .filter(devices::account_key.eq(request.account_key.to_string()))
        .filter(devices::device_id.eq(request.device_id.as_str()))
        .filter(devices::revoked_at.is_null())
        .filter(accounts::disabled_at.is_null())
        .select((devices::id, devices::sign_key))
        .first(c)
        .optional())?;
    let (device_row, sign_key) = device.ok_or(AuthError::UnknownDevice)?;
    let sign_key: [u8; 32] = sign_key
        .as_slice()
        .try_into()
        .map_err(|_| AuthError::UnknownDevice)?;
    let sign_key = PublicKey::from_bytes(&sign_key).map_err(|_| AuthError::UnknownDevice)?;
    AuthStatement::new(
        server_name,
        &request.nonce,
        &request.account_key,
        &request.device_id,
    )
    .verify(&sign_key, &request.signature)
    .map_err(|_| AuthError::BadSignature)?;
    admit().map_err(|retry_after| AuthError::TooManySignIns { retry_after })?;

    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let token = format!("{TOKEN_PREFIX}{}", b64(&secret));
    let expires_at = now.saturating_add(duration_ms(ttl));
    with_backend!(conn, c => diesel::insert_into(auth_tokens::table)
        .values((
            auth_tokens::token_hash.eq(token_hash(&token)),
            auth_tokens::device_row.eq(device_row),
            auth_tokens::created_at.eq(now),
            auth_tokens::expires_at.eq(expires_at),
        ))
        .execute(c))?;
    crate::storage::mail::mark_seen(conn, device_row, now, now)?;
    Ok(TokenGrant {
        token,
        expires_at,
        account_key: request.account_key.to_string(),
        device_id: request.device_id.to_string(),
    })
}

/// The device a token belongs to, if the token is valid now. Takes the
/// token's hash (`token_hash`), which callers work out once for their cache
/// too, of a token that passed `well_formed`.
pub fn authenticate(
    conn: &mut DbConnection,
    hash: Vec<u8>,
) -> Result<AuthenticatedDevice, AuthError> {
    let now = now_ms();
    // `load`, not `first`: the token hash is unique, and SQLite re-prepares a
    // statement whose LIMIT is a bound parameter on every run, which made
    // this check (one per request) a tenth of the daemon's time under load.
    let found: Option<(String, String, i64, i64)> = with_backend!(conn, c => auth_tokens::table
        .inner_join(devices::table.inner_join(accounts::table))
        .filter(auth_tokens::token_hash.eq(&hash))
        .filter(auth_tokens::expires_at.gt(now))
        .filter(devices::revoked_at.is_null())
        .filter(accounts::disabled_at.is_null())
        .select((devices::account_key, devices::device_id, devices::id, auth_tokens::expires_at))
        .load::<(String, String, i64, i64)>(c))?
    .into_iter()
    .next();
    let (account_key, device_id, device_row, token_expires_at) =
        found.ok_or(AuthError::InvalidToken)?;
    Ok(AuthenticatedDevice {
        account_key,
        device_id,
        device_row,
        token_hash: hash,
        token_expires_at,
    })
}

/// Which of `hashes` still belong to working tokens: not signed out, the
/// device not revoked, the account neither disabled nor deleted. Expiry is
/// not looked at: a gateway session ends at its token's expiry by itself.
pub fn still_valid(
    conn: &mut DbConnection,
    hashes: &[Vec<u8>],
) -> Result<std::collections::HashSet<Vec<u8>>, AuthError> {
    let mut valid = std::collections::HashSet::new();
    for chunk in hashes.chunks(500) {
        let found: Vec<Vec<u8>> = with_backend!(conn, c => auth_tokens::table
            .inner_join(devices::table.inner_join(accounts::table))
            .filter(auth_tokens::token_hash.eq_any(chunk))
            .filter(devices::revoked_at.is_null())
            .filter(accounts::disabled_at.is_null())
            .select(auth_tokens::token_hash)
            .load(c))?;
        valid.extend(found);
    }
    Ok(valid)
}

/// Ends one token (sign-out). Expired tokens are cleared on the way.
pub fn revoke_token(conn: &mut DbConnection, hash: &[u8]) -> Result<(), AuthError> {
    let now = now_ms();
    crate::storage::write_transaction(conn, |conn| {
        with_backend!(conn, c => diesel::delete(
            auth_tokens::table.filter(auth_tokens::token_hash.eq(hash).or(auth_tokens::expires_at.le(now))),
        )
        .execute(c))?;
        bump_revocations(conn)?;
        Ok(())
    })
}
