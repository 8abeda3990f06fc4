//! Other servers' signing keys: fetched from their key document, cached in
//! the database at most seven days, fetched again on an unknown key id.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use ed25519_dalek::VerifyingKey;

use super::resolver::FederationClient;
use crate::address::ServerName;
use crate::api::keys::KeysDocument;
use crate::storage::schema::peer_keys;
use crate::storage::{Database, StorageError};
use crate::time::{duration_ms, now_ms};
use crate::with_backend;

/// Longest a peer key is trusted from one fetch.
const MAX_CACHE: Duration = Duration::from_secs(7 * 86_400);
/// After a failed fetch, do not ask the same origin again for this long, so
/// forged key ids cannot make this server hammer (or be made to hammer) a peer.
const FETCH_BACKOFF: Duration = Duration::from_secs(30);
/// Largest key document read.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why a peer key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0} has no key {1}")]
    UnknownKey(String, String),
    #[error("fetching the keys of {0} failed: {1}")]
    Fetch(String, String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Looks up and fetches peer keys.
pub struct PeerKeys {
    db: Database,
    recent_failures: Mutex<HashMap<String, Instant>>,
}

impl PeerKeys {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            recent_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The key `key_id` of `origin`, from the cache or fetched.
    pub async fn key(
        &self,
        client: &FederationClient,
        origin: &ServerName,
        key_id: &str,
    ) -> Result<VerifyingKey, KeyError> {
        if let Some(key) = self.cached(origin, key_id).await? {
            return Ok(key);
        }
        if self.recently_failed(origin) {
            return Err(KeyError::Fetch(
                origin.to_string(),
                "recently failed; try later".into(),
            ));
        }
        if let Err(error) = self.fetch(client, origin).await {
            self.note_failure(origin);
            return Err(error);
        }
        self.cached(origin, key_id)
            .await?
            .ok_or_else(|| KeyError::UnknownKey(origin.to_string(), key_id.to_string()))
    }

    async fn cached(
        &self,
        origin: &ServerName,
        key_id: &str,
    ) -> Result<Option<VerifyingKey>, StorageError> {
        let (origin, key_id) = (origin.to_string(), key_id.to_string());
        let now = now_ms();
        let bytes: Option<Vec<u8>> = self
            .db
            .run(move |conn| {
                Ok::<_, StorageError>(with_backend!(conn, c => peer_keys::table
                    .find((&origin, &key_id))
                    .filter(peer_keys::valid_until.gt(now))
                    .select(peer_keys::public_key)
                    .first(c)
                    .optional())?)
            })
            .await?;
        Ok(bytes
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok()))
    }

    fn recently_failed(&self, origin: &ServerName) -> bool {
        let failures = match self.recent_failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        failures
            .get(origin.as_str())
            .is_some_and(|at| at.elapsed() < FETCH_BACKOFF)
    }

    fn note_failure(&self, origin: &ServerName) {
        let mut failures = match self.recent_failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if failures.len() > 10_000 {
            failures.retain(|_, at| at.elapsed() < FETCH_BACKOFF);
        }
        failures.insert(origin.to_string(), Instant::now());
    }

    /// Fetches `origin`'s key document and caches every key in it.
    async fn fetch(&self, client: &FederationClient, origin: &ServerName) -> Result<(), KeyError> {
        let failed = |e: &dyn std::fmt::Display| KeyError::Fetch(origin.to_string(), e.to_string());
        let destination = client.resolve(origin).await.map_err(|e| failed(&e))?;
        let url = format!("{}/.well-known/homing/keys", destination.base_url);
        let response = client
            .http()
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| failed(&e))?;
        if !response.status().is_success() {
            return Err(failed(&format!("status {}", response.status())));
        }
        let body = super::client::read_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| failed(&e))?;
        let document: KeysDocument = serde_json::from_slice(&body).map_err(|e| failed(&e))?;
        if ServerName::parse(&document.server_name).ok().as_ref() != Some(origin) {
            return Err(failed(&"the key document names another server"));
        }
        let now = now_ms();
        let cap = now.saturating_add(duration_ms(MAX_CACHE));
        let mut rows = Vec::new();
        for key in document.keys.iter().take(32) {
            let Ok(bytes) = URL_SAFE_NO_PAD.decode(&key.public_key) else {
                continue;
            };
            if bytes.len() != 32 || key.algorithm != "ed25519" || key.key_id.len() > 64 {
                continue;
            }
            let valid_until = key.expires_at.map_or(cap, |expires| expires.min(cap));
            rows.push((key.key_id.clone(), bytes, valid_until));
        }
        let origin_name = origin.to_string();
        self.db
            .run(move |conn| {
                for (key_id, bytes, valid_until) in rows {
                    with_backend!(conn, c => diesel::insert_into(peer_keys::table)
                        .values((
                            peer_keys::server_name.eq(&origin_name),
                            peer_keys::key_id.eq(&key_id),
                            peer_keys::public_key.eq(&bytes),
                            peer_keys::valid_until.eq(valid_until),
                            peer_keys::fetched_at.eq(now),
                        ))
                        .on_conflict((peer_keys::server_name, peer_keys::key_id))
                        .do_update()
                        .set((
                            peer_keys::public_key.eq(&bytes),
                            peer_keys::valid_until.eq(valid_until),
                            peer_keys::fetched_at.eq(now),
                        ))
                        .execute(c))?;
                }
                Ok::<_, StorageError>(())
            })
            .await?;
        Ok(())
    }
}
