//! The resolution cache: a bounded map in memory in front of the
//! `resolution_cache` table, which replicas share and which survives
//! restarts.
//!
//! A row holds either `target` (a [`Target`] as JSON) or `error` (the
//! message of the failure), never both; `expires_at` is when it must be
//! resolved again. Rows are overwritten on the next resolution of the same
//! server name.

use std::collections::HashMap;
use std::sync::Mutex;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::storage::schema::resolution_cache;
use crate::storage::{Database, StorageError};
use crate::with_backend;

/// Where a server is reached, as cached.
///
/// Stored as JSON, e.g.
/// `{"url":"https://example.org:8448","host":"example.org","srv":["hs1.example.net"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Target {
    /// Base URL, `scheme://host:port` without a trailing slash.
    pub url: String,
    /// The host of `url`: what TLS and the `Host` header name.
    pub host: String,
    /// `None` when no SRV lookup decided the port (the name or the
    /// delegation carried one). Otherwise the SRV targets, in order, whose
    /// addresses are used for `host`; empty when `host` has no SRV records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<Vec<String>>,
}

/// A resolution outcome: the target, or the message of the failure.
pub(crate) type Outcome = Result<Target, String>;

/// An outcome and the Unix time in ms at which it stops being valid.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    pub outcome: Outcome,
    pub expires_at: i64,
}

/// The in-memory layer, holding at most `capacity` server names.
pub(crate) struct MemoryCache {
    capacity: usize,
    entries: Mutex<HashMap<String, Cached>>,
}

impl MemoryCache {
    /// An empty cache for at most `capacity` names.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The outcome for `server` if it has not expired at `now`.
    pub fn get(&self, server: &str, now: i64) -> Option<Outcome> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(server)
            .filter(|cached| cached.expires_at > now)
            .map(|cached| cached.outcome.clone())
    }

    /// Stores `cached` for `server`, evicting expired entries first and then
    /// the one that expires soonest when the cache is full.
    pub fn insert(&self, server: &str, cached: Cached, now: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(server) && entries.len() >= self.capacity {
            entries.retain(|_, entry| entry.expires_at > now);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at)
                    .map(|(name, _)| name.clone());
                if let Some(name) = soonest {
                    entries.remove(&name);
                }
            }
        }
        entries.insert(server.to_string(), cached);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The stored outcome for `server` unless it has expired at `now`. A row
/// that cannot be decoded counts as absent, so it is resolved again.
pub(crate) async fn load(
    db: &Database,
    server: &str,
    now: i64,
) -> Result<Option<Cached>, StorageError> {
    use resolution_cache::dsl;
    let key = server.to_string();
    let row: Option<(Option<String>, Option<String>, i64)> = db
        .run(move |conn| {
            with_backend!(conn, c => dsl::resolution_cache
                .filter(dsl::server_name.eq(&key))
                .filter(dsl::expires_at.gt(now))
                .select((dsl::target, dsl::error, dsl::expires_at))
                .first(c)
                .optional())
            .map_err(StorageError::from)
        })
        .await?;
    Ok(row.and_then(|(target, error, expires_at)| {
        decode(server, target, error).map(|outcome| Cached {
            outcome,
            expires_at,
        })
    }))
}

fn decode(server: &str, target: Option<String>, error: Option<String>) -> Option<Outcome> {
    match (target, error) {
        (Some(json), _) => match serde_json::from_str(&json) {
            Ok(target) => Some(Ok(target)),
            Err(error) => {
                tracing::warn!(server, %error, "ignoring an undecodable resolution_cache row");
                None
            }
        },
        (None, Some(error)) => Some(Err(error)),
        (None, None) => None,
    }
}

/// Writes the outcome for `server`, replacing any earlier row.
pub(crate) async fn store(
    db: &Database,
    server: &str,
    outcome: &Outcome,
    resolved_at: i64,
    expires_at: i64,
) -> Result<(), StorageError> {
    use resolution_cache::dsl;
    let (target, error) = match outcome {
        Ok(target) => match serde_json::to_string(target) {
            Ok(json) => (Some(json), None),
            // Cannot happen for this plain struct; skipping the write only
            // costs a later re-resolution.
            Err(_) => return Ok(()),
        },
        Err(message) => (None, Some(message.clone())),
    };
    let key = server.to_string();
    db.run(move |conn| {
        with_backend!(conn, c => diesel::insert_into(dsl::resolution_cache)
            .values((
                dsl::server_name.eq(&key),
                dsl::target.eq(&target),
                dsl::error.eq(&error),
                dsl::resolved_at.eq(resolved_at),
                dsl::expires_at.eq(expires_at),
            ))
            .on_conflict(dsl::server_name)
            .do_update()
            .set((
                dsl::target.eq(&target),
                dsl::error.eq(&error),
                dsl::resolved_at.eq(resolved_at),
                dsl::expires_at.eq(expires_at),
            ))
            .execute(c))
        .map(|_| ())
        .map_err(StorageError::from)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target {
            url: url.into(),
            host: "example.org".into(),
            srv: None,
        }
    }

    #[test]
    fn entries_expire() {
        let cache = MemoryCache::new(10);
        let cached = Cached {
            outcome: Ok(target("https://example.org:443")),
            expires_at: 1_000,
        };
        cache.insert("example.org", cached, 0);
        assert!(cache.get("example.org", 999).is_some());
        assert!(cache.get("example.org", 1_000).is_none());
        assert!(cache.get("other.org", 0).is_none());
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_entries() {
        let cache = MemoryCache::new(3);
        for (name, expires_at) in [("a", 50), ("b", 300), ("c", 200)] {
            let cached = Cached {
                outcome: Err(name.into()),
                expires_at,
            };
            cache.insert(name, cached, 0);
        }
        // At 100 "a" has expired and makes room.
        let d = Cached {
            outcome: Err("d".into()),
            expires_at: 400,
        };
        cache.insert("d", d, 100);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("b", 100).is_some() && cache.get("c", 100).is_some());
        // Nothing has expired now: "c" expires soonest and goes.
        let e = Cached {
            outcome: Err("e".into()),
            expires_at: 500,
        };
        cache.insert("e", e, 100);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("c", 100).is_none());
        assert!(cache.get("e", 100).is_some());
        // Replacing an existing name evicts nothing.
        let b = Cached {
            outcome: Err("b2".into()),
            expires_at: 600,
        };
        cache.insert("b", b, 100);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("b", 100), Some(Err("b2".into())));
    }

    #[test]
    fn targets_round_trip_as_small_json() {
        let direct = target("https://example.org:8448");
        let json = serde_json::to_string(&direct).unwrap();
        assert_eq!(
            json,
            r#"{"url":"https://example.org:8448","host":"example.org"}"#
        );
        let via_srv = Target {
            srv: Some(vec!["hs1.example.net".into(), "hs2.example.net".into()]),
            ..direct
        };
        let json = serde_json::to_string(&via_srv).unwrap();
        assert_eq!(
            decode("example.org", Some(json), None),
            Some(Ok(via_srv.clone()))
        );
        assert_eq!(
            decode("example.org", None, Some("no".into())),
            Some(Err("no".into()))
        );
        assert_eq!(decode("example.org", Some("{".into()), None), None);
        assert_eq!(decode("example.org", None, None), None);
    }
}
