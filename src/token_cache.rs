//! Token checks without a database round trip per request.
//!
//! A daemon remembers which device each token it has checked belongs to,
//! until the token expires. What can end a token earlier (sign-out, a
//! revoked device, a disabled or deleted account) bumps one counter in the
//! database in the same transaction (`auth::bump_revocations`), whichever
//! process does it: this daemon, another replica, or `homingd admin`. Each
//! daemon reads that counter every `POLL` and forgets everything it
//! remembered when the counter moved. A revocation made here is forgotten
//! at once; one made elsewhere takes effect here within about `POLL`.
//!
//! Forgetting everything on any revocation is deliberate: revocations are
//! rare next to requests, and a per-token invalidation list would have to
//! be shared between processes too.
//!
//! The same watch ends gateway sessions: after a revocation, the tokens the
//! open sessions were opened with are checked in one query, and the
//! sessions of those that stopped working are closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::auth::AuthenticatedDevice;
use crate::gateway::Hub;
use crate::storage::Database;

/// How often the revocation counter is read: about the longest a token
/// revoked by another process keeps working here.
pub const POLL: Duration = Duration::from_millis(250);
/// Remembered checks are used only while the counter was read this
/// recently; otherwise (the database is unreachable, say) every request is
/// checked against the database again.
const TRUSTED_FOR: Duration = Duration::from_secs(2);
/// Most tokens remembered. Beyond that, expired ones are dropped first and
/// then everything: a stranger cannot grow this, only signed-in devices can.
const MAX_ENTRIES: usize = 50_000;

/// The token checks this daemon remembers, by token hash.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    devices: HashMap<Vec<u8>, AuthenticatedDevice>,
    /// Moves whenever everything is forgotten, so that a check which read
    /// the database before a revocation cannot be remembered after it.
    generation: u64,
    /// The revocation counter as last read.
    epoch: Option<i64>,
    /// When the last successful read of the counter started.
    confirmed_at: Option<Instant>,
    /// Something was revoked since the gateway sessions' tokens were last
    /// checked.
    sessions_unchecked: bool,
}

impl TokenCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent whatever panicked while it was held.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The device behind `hash`, if it was checked since the last
    /// revocation and the token has not expired by `now_ms`.
    pub fn get(&self, hash: &[u8], now_ms: i64) -> Option<AuthenticatedDevice> {
        let inner = self.lock();
        let trusted = inner
            .confirmed_at
            .is_some_and(|at| at.elapsed() < TRUSTED_FOR);
        if !trusted {
            return None;
        }
        inner
            .devices
            .get(hash)
            .filter(|device| device.token_expires_at > now_ms)
            .cloned()
    }

    /// Take this before checking a token in the database, and hand it to
    /// `remember` afterwards.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Remembers a check that started at `generation`, unless something
    /// was revoked since.
    pub fn remember(&self, generation: u64, device: AuthenticatedDevice, now_ms: i64) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.devices.len() >= MAX_ENTRIES {
            inner
                .devices
                .retain(|_, device| device.token_expires_at > now_ms);
            if inner.devices.len() >= MAX_ENTRIES {
                inner.devices.clear();
            }
        }
        inner.devices.insert(device.token_hash.clone(), device);
    }

    /// Forgets every check: a token stopped working.
    pub fn forget_all(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.devices.clear();
        inner.sessions_unchecked = true;
    }

    /// True once after each revocation: the gateway sessions' tokens need
    /// checking.
    fn take_sessions_unchecked(&self) -> bool {
        std::mem::take(&mut self.lock().sessions_unchecked)
    }

    /// Records a read of the revocation counter that started at `asked`.
    pub fn observe(&self, epoch: i64, asked: Instant) {
        let mut inner = self.lock();
        if inner.epoch != Some(epoch) {
            // The first read forgets too: checks made before it may predate
            // a revocation this daemon never saw the counter without.
            inner.generation += 1;
            inner.devices.clear();
            inner.epoch = Some(epoch);
            inner.sessions_unchecked = true;
        }
        inner.confirmed_at = Some(asked);
    }

    /// Checks the gateway sessions' tokens again at the next tick (the last
    /// check failed).
    fn recheck_sessions(&self) {
        self.lock().sessions_unchecked = true;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().devices.len()
    }
}

/// Ends the gateway sessions whose token stopped working.
async fn end_revoked_sessions(db: &Database, hub: &Hub) -> Result<(), crate::auth::AuthError> {
    let tokens = hub.session_tokens();
    if tokens.is_empty() {
        return Ok(());
    }
    let valid = db
        .run(move |conn| crate::auth::still_valid(conn, &tokens))
        .await?;
    let ended = hub.end_sessions_without(&valid);
    if ended > 0 {
        tracing::info!(ended, "gateway sessions ended: their tokens were revoked");
    }
    Ok(())
}

/// Reads the revocation counter every `POLL` for as long as the daemon
/// runs; after each revocation, here or elsewhere, ends the gateway
/// sessions whose token it ended.
pub async fn watch_revocations(db: Database, hub: Arc<Hub>, tokens: Arc<TokenCache>) {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let asked = Instant::now();
        let read = db
            .run(|conn| {
                crate::auth::revocation_epoch(conn).map_err(crate::storage::StorageError::Query)
            })
            .await;
        match read {
            Ok(epoch) => tokens.observe(epoch, asked),
            Err(error) => {
                tracing::warn!(%error, "cannot read the revocation counter; checking every token")
            }
        }
        if tokens.take_sessions_unchecked() {
            if let Err(error) = end_revoked_sessions(&db, &hub).await {
                tracing::warn!(%error, "cannot check the gateway sessions' tokens; trying again");
                tokens.recheck_sessions();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(hash: u8, expires_at: i64) -> AuthenticatedDevice {
        AuthenticatedDevice {
            account_key: "account".into(),
            device_id: "device".into(),
            device_row: 1,
            token_hash: vec![hash; 32],
            token_expires_at: expires_at,
        }
    }

    #[test]
    fn nothing_is_used_before_the_counter_was_read() {
        let cache = TokenCache::default();
        cache.remember(cache.generation(), device(1, 100), 0);
        assert!(cache.get(&[1; 32], 0).is_none());
        // The first read forgets what was remembered before it.
        cache.observe(0, Instant::now());
        assert!(cache.get(&[1; 32], 0).is_none());
        cache.remember(cache.generation(), device(1, 100), 0);
        assert_eq!(cache.get(&[1; 32], 0).unwrap().device_row, 1);
    }

    #[test]
    fn a_moved_counter_forgets_and_refuses_checks_that_started_before() {
        let cache = TokenCache::default();
        cache.observe(3, Instant::now());
        let before = cache.generation();
        cache.remember(before, device(1, 100), 0);
        cache.observe(3, Instant::now());
        assert!(
            cache.get(&[1; 32], 0).is_some(),
            "same counter, same checks"
        );
        cache.observe(4, Instant::now());
        assert!(cache.get(&[1; 32], 0).is_none());
        cache.remember(before, device(2, 100), 0);
        assert!(
            cache.get(&[2; 32], 0).is_none(),
            "a check older than the revocation"
        );
        cache.remember(cache.generation(), device(2, 100), 0);
        cache.forget_all();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn expired_tokens_and_stale_reads_are_not_trusted() {
        let cache = TokenCache::default();
        cache.observe(0, Instant::now());
        cache.remember(cache.generation(), device(1, 100), 0);
        assert!(cache.get(&[1; 32], 100).is_none(), "expired at 100");
        let long_ago = Instant::now()
            .checked_sub(TRUSTED_FOR + Duration::from_millis(1))
            .expect("the clock started long enough ago");
        cache.observe(0, long_ago);
        assert!(
            cache.get(&[1; 32], 0).is_none(),
            "the counter was not read lately"
        );
    }

    #[test]
    fn the_map_stays_bounded() {
        let cache = TokenCache::default();
        cache.observe(0, Instant::now());
        for n in 0..MAX_ENTRIES + 10 {
            let mut entry = device(0, 100);
            entry.token_hash = (n as u64).to_be_bytes().to_vec();
            cache.remember(cache.generation(), entry, 0);
        }
        assert!(cache.len() <= MAX_ENTRIES);
    }
}
