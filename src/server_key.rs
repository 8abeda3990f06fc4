//! The server's ed25519 signing key, used for federation signatures.
//!
//! It lives in the database rather than in a file so that every replica of
//! one server signs with the same key and a rotation is one transaction.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;

use crate::storage::schema::server_keys;
use crate::storage::{Database, StorageError};
use crate::with_backend;

/// The current signing key of this server.
#[derive(Clone)]
pub struct ServerKey {
    key_id: String,
    signing: SigningKey,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret half.
        f.debug_struct("ServerKey")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl ServerKey {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as unpadded base64url, the form used on the wire.
    pub fn public_key_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.verifying_key().as_bytes())
    }
}

/// Key ids are `ed25519:` and the start of the public key, so that a glance
/// tells two keys apart.
fn key_id_for(key: &VerifyingKey) -> String {
    let encoded = URL_SAFE_NO_PAD.encode(key.as_bytes());
    format!("ed25519:{}", &encoded[..8])
}

/// Loads the current key, creating it on the server's first start. Safe when
/// several replicas start at once: at most one key can be current, and the
/// losers of the race read the winner's.
pub async fn load_or_create(db: &Database) -> Result<ServerKey, StorageError> {
    db.run(|conn| {
        if let Some(key) = current(conn)? {
            return Ok(key);
        }
        let signing = SigningKey::generate(&mut OsRng);
        let verifying = signing.verifying_key();
        let now = crate::time::now_ms();
        let row = (
            server_keys::key_id.eq(key_id_for(&verifying)),
            server_keys::public_key.eq(verifying.as_bytes().to_vec()),
            server_keys::secret_key.eq(signing.to_bytes().to_vec()),
            server_keys::is_current.eq(true),
            server_keys::created_at.eq(now),
        );
        with_backend!(conn, c => diesel::insert_into(server_keys::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
        current(conn)?
            .ok_or_else(|| StorageError::Corrupt("no current server key after creating one".into()))
    })
    .await
}

/// The current key as stored now (it may have been rotated since start).
pub async fn load_current(db: &Database) -> Result<ServerKey, StorageError> {
    db.run(|conn| {
        current(conn)?.ok_or_else(|| StorageError::Corrupt("no current server key".into()))
    })
    .await
}

fn current(conn: &mut crate::storage::DbConnection) -> Result<Option<ServerKey>, StorageError> {
    let row: Option<(String, Vec<u8>)> = with_backend!(conn, c => server_keys::table
        .filter(server_keys::is_current.eq(true))
        .select((server_keys::key_id, server_keys::secret_key))
        .first(c)
        .optional())?;
    let Some((key_id, secret)) = row else {
        return Ok(None);
    };
    let bytes: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("server key {key_id} is not 32 bytes")))?;
    Ok(Some(ServerKey {
        key_id,
        signing: SigningKey::from_bytes(&bytes),
    }))
}

/// Makes a new current key. The old one stays published and accepted until
/// `now + grace`, so requests signed just before the rotation still verify
/// and peers that cached it have time to fetch the new one.
pub fn rotate(
    conn: &mut crate::storage::DbConnection,
    grace: std::time::Duration,
) -> Result<String, StorageError> {
    crate::storage::write_transaction(conn, |conn| {
        let now = crate::time::now_ms();
        let until = now.saturating_add(crate::time::duration_ms(grace));
        with_backend!(conn, c => diesel::update(server_keys::table.filter(server_keys::is_current.eq(true)))
            .set((server_keys::is_current.eq(false), server_keys::expires_at.eq(Some(until))))
            .execute(c))?;
        let signing = SigningKey::generate(&mut OsRng);
        let verifying = signing.verifying_key();
        let key_id = key_id_for(&verifying);
        with_backend!(conn, c => diesel::insert_into(server_keys::table)
            .values((
                server_keys::key_id.eq(&key_id),
                server_keys::public_key.eq(verifying.as_bytes().to_vec()),
                server_keys::secret_key.eq(signing.to_bytes().to_vec()),
                server_keys::is_current.eq(true),
                server_keys::created_at.eq(now),
            ))
            .execute(c))?;
        Ok(key_id)
    })
}
