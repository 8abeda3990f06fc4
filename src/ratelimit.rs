//! In-process token-bucket rate limits keyed by client address or account.
//!
//! Each replica limits on its own: a limit of N per replica is N times the
//! replica count overall, which is the usual trade-off for not putting a
//! shared counter on every request's path. The table is bounded, so a
//! stranger cycling through addresses cannot grow it without limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Most keys remembered at once; beyond that, full buckets are forgotten
/// first (they carry no information).
const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key.
pub struct RateLimiter<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.rate.burst) / self.rate.per.as_secs_f64().max(0.001)
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let refill = self.refill_per_sec();
        let burst = f64::from(self.rate.burst);
        let mut buckets = match self.buckets.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * refill < burst
            });
            if buckets.len() >= MAX_KEYS {
                // Every remembered client is mid-limit: refuse newcomers
                // rather than forget someone who is being limited.
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / refill))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(Rate {
            burst: 2,
            per: Duration::from_secs(10),
        });
        let start = Instant::now();
        assert!(limiter.check_at(&"a", start).is_ok());
        assert!(limiter.check_at(&"a", start).is_ok());
        let wait = limiter.check_at(&"a", start).unwrap_err();
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(5));
        // Another key is unaffected.
        assert!(limiter.check_at(&"b", start).is_ok());
        // After 5 s one token is back.
        assert!(limiter
            .check_at(&"a", start + Duration::from_secs(5))
            .is_ok());
        assert!(limiter
            .check_at(&"a", start + Duration::from_secs(5))
            .is_err());
    }
}
