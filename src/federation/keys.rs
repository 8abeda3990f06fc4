//! Other servers' signing keys: fetched from their key document, cached in
//! the database at most seven days, fetched again on an unknown key id —
//! one fetch at a time per origin, and not again within a minute of a fetch
//! that did not yield the key asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use ed25519_dalek::VerifyingKey;

use super::resolver::FederationClient;
use crate::address::ServerName;
use crate::storage::schema::peer_keys;
use crate::storage::{Database, StorageError};
use crate::time::{duration_ms, now_ms};
use crate::with_backend;
use homing_proto::documents::KeysDocument;

/// Longest a peer key is trusted from one fetch.
const MAX_CACHE: Duration = Duration::from_secs(7 * 86_400);
/// After a fetch that did not yield the key it was for (it failed, or the
/// document does not list that key id), the origin's keys are not fetched
/// again for this long: key ids a stranger makes up cost at most one fetch
/// of the origin's document a minute.
const FETCH_PAUSE: Duration = Duration::from_secs(60);
/// Most origins whose fetch state is remembered, so forged origins cannot
/// grow the map without bound.
const MAX_TRACKED_ORIGINS: usize = 10_000;
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

/// What this server remembers about fetching one origin's keys.
struct OriginFetches {
    /// One fetch at a time: requests that arrive during a fetch wait for it
    /// and then find its keys in the cache instead of fetching again.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// When a fetch last came back without the key it was for.
    missed_at: Option<Instant>,
}

impl OriginFetches {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.gate) > 1
    }

    fn paused(&self) -> bool {
        self.missed_at.is_some_and(|at| at.elapsed() < FETCH_PAUSE)
    }
}

/// Looks up and fetches peer keys.
pub struct PeerKeys {
    db: Database,
    fetches: Mutex<HashMap<String, OriginFetches>>,
}

impl PeerKeys {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            fetches: Mutex::new(HashMap::new()),
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
        let gate = self.gate(origin.as_str());
        let _turn = gate.lock().await;
        // A fetch that ended while this request waited may have brought it.
        if let Some(key) = self.cached(origin, key_id).await? {
            return Ok(key);
        }
        if self.paused(origin.as_str()) {
            return Err(KeyError::Fetch(
                origin.to_string(),
                "fetched recently without this key; try later".into(),
            ));
        }
        let found = match self.fetch(client, origin).await {
            Ok(()) => self.cached(origin, key_id).await.map_err(KeyError::from),
            Err(error) => Err(error),
        };
        match found {
            Ok(Some(key)) => Ok(key),
            Ok(None) => {
                self.note_miss(origin.as_str());
                Err(KeyError::UnknownKey(origin.to_string(), key_id.to_string()))
            }
            Err(error) => {
                self.note_miss(origin.as_str());
                Err(error)
            }
        }
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

    fn fetches(&self) -> std::sync::MutexGuard<'_, HashMap<String, OriginFetches>> {
        match self.fetches.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The gate that lets one request at a time fetch `origin`'s keys.
    fn gate(&self, origin: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut fetches = self.fetches();
        if let Some(entry) = fetches.get(origin) {
            return entry.gate.clone();
        }
        if fetches.len() >= MAX_TRACKED_ORIGINS {
            make_room(&mut fetches);
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let entry = OriginFetches {
            gate: gate.clone(),
            missed_at: None,
        };
        fetches.insert(origin.to_string(), entry);
        gate
    }

    fn paused(&self, origin: &str) -> bool {
        self.fetches()
            .get(origin)
            .is_some_and(OriginFetches::paused)
    }

    fn note_miss(&self, origin: &str) {
        let mut fetches = self.fetches();
        if let Some(entry) = fetches.get_mut(origin) {
            entry.missed_at = Some(Instant::now());
            return;
        }
        // Evicted while its fetch ran (the map was full of others).
        if fetches.len() >= MAX_TRACKED_ORIGINS {
            make_room(&mut fetches);
        }
        let entry = OriginFetches {
            gate: Arc::new(tokio::sync::Mutex::new(())),
            missed_at: Some(Instant::now()),
        };
        fetches.insert(origin.to_string(), entry);
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

/// Drops what no longer matters (no fetch running or awaited, no pause in
/// force), then, if the map is still full, the origin paused longest ago.
fn make_room(fetches: &mut HashMap<String, OriginFetches>) {
    fetches.retain(|_, entry| entry.in_use() || entry.paused());
    if fetches.len() < MAX_TRACKED_ORIGINS {
        return;
    }
    let oldest = fetches
        .iter()
        .filter(|(_, entry)| !entry.in_use())
        .min_by_key(|(_, entry)| entry.missed_at)
        .map(|(origin, _)| origin.clone());
    if let Some(origin) = oldest {
        fetches.remove(&origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(missed_secs_ago: Option<u64>) -> OriginFetches {
        OriginFetches {
            gate: Arc::new(tokio::sync::Mutex::new(())),
            missed_at: missed_secs_ago.map(|secs| Instant::now() - Duration::from_secs(secs)),
        }
    }

    #[test]
    fn a_full_map_drops_stale_entries_then_the_oldest_pause() {
        let mut fetches = HashMap::new();
        fetches.insert("stale".to_string(), entry(Some(120)));
        fetches.insert("done".to_string(), entry(None));
        let held = entry(None);
        let _waiting = held.gate.clone();
        fetches.insert("held".to_string(), held);
        make_room(&mut fetches);
        let mut left: Vec<&str> = fetches.keys().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["held"]);

        for n in 0..MAX_TRACKED_ORIGINS {
            let age = if n == 7 { 50 } else { 10 };
            fetches.insert(format!("o{n}"), entry(Some(age)));
        }
        make_room(&mut fetches);
        assert_eq!(fetches.len(), MAX_TRACKED_ORIGINS);
        assert!(!fetches.contains_key("o7"), "the oldest pause goes first");
        assert!(fetches.contains_key("held"), "a running fetch stays");
    }
}
