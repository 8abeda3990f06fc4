//! Invite codes for `registration.policy = "invite"`. A code is shown once,
//! at creation; the database keeps only its hash and a short public id.

use std::time::Duration;

use diesel::prelude::*;
use rand::RngCore;
use serde::Serialize;

use super::{invite_hash, IdentityError};
use crate::crypto::b64;
use crate::storage::schema::invites;
use crate::storage::{DbConnection, StorageError};
use crate::time::{duration_ms, now_ms};
use crate::with_backend;

/// A newly created invite; `code` is never stored.
#[derive(Debug, Clone, Serialize)]
pub struct NewInvite {
    pub invite_id: String,
    pub code: String,
    pub max_uses: i32,
    pub expires_at: Option<i64>,
}

/// An invite as listed.
#[derive(Debug, Clone, Serialize, Queryable)]
pub struct InviteInfo {
    pub invite_id: String,
    pub max_uses: i32,
    pub uses: i32,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn random_b64(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    b64(&buffer)
}

pub fn create(
    conn: &mut DbConnection,
    max_uses: i32,
    expires_in: Option<Duration>,
) -> Result<NewInvite, StorageError> {
    let now = now_ms();
    let invite = NewInvite {
        invite_id: random_b64(6),
        code: random_b64(18),
        max_uses,
        expires_at: expires_in.map(|d| now.saturating_add(duration_ms(d))),
    };
    with_backend!(conn, c => diesel::insert_into(invites::table)
        .values((
            invites::invite_id.eq(&invite.invite_id),
            invites::code_hash.eq(invite_hash(&invite.code)),
            invites::max_uses.eq(max_uses),
            invites::created_at.eq(now),
            invites::expires_at.eq(invite.expires_at),
        ))
        .execute(c))?;
    Ok(invite)
}

pub fn list(conn: &mut DbConnection) -> Result<Vec<InviteInfo>, StorageError> {
    Ok(with_backend!(conn, c => invites::table
        .order(invites::created_at.asc())
        .select((
            invites::invite_id,
            invites::max_uses,
            invites::uses,
            invites::created_at,
            invites::expires_at,
            invites::revoked_at,
        ))
        .load(c))?)
}

/// Revokes an invite; false when there is no such (unrevoked) invite.
pub fn revoke(conn: &mut DbConnection, invite_id: &str) -> Result<bool, StorageError> {
    let updated = with_backend!(conn, c => diesel::update(
        invites::table
            .filter(invites::invite_id.eq(invite_id))
            .filter(invites::revoked_at.is_null()),
    )
    .set(invites::revoked_at.eq(now_ms()))
    .execute(c))?;
    Ok(updated == 1)
}

/// Uses one of the invite's uses, if it has one left and is neither
/// revoked nor expired.
pub(super) fn consume(conn: &mut DbConnection, hash: &[u8]) -> Result<(), IdentityError> {
    let now = crate::time::now_ms();
    let updated = with_backend!(conn, c => diesel::update(
        invites::table
            .filter(invites::code_hash.eq(hash))
            .filter(invites::uses.lt(invites::max_uses))
            .filter(invites::revoked_at.is_null())
            .filter(invites::expires_at.is_null().or(invites::expires_at.gt(now))),
    )
    .set(invites::uses.eq(invites::uses + 1))
    .execute(c))?;
    if updated == 1 {
        Ok(())
    } else {
        Err(IdentityError::InviteInvalid)
    }
}
