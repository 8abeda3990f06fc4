//! In-process token-bucket rate limits keyed by client address or account.
//!
//! Each replica limits on its own: a limit of N per replica is N times the
//! replica count overall, which is the usual trade-off for not putting a
//! shared counter on every request's path. The table is bounded, so a
//! stranger cycling through addresses cannot grow it without limit, and
//! a full table forgets its oldest clients rather than refuse new ones.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Rate;

/// Most keys remembered at once; beyond that, full buckets are forgotten
/// first (they carry no information), then the least recently seen.
const MAX_KEYS: usize = 100_000;

/// How much of a full table goes at once when no bucket is full: evicting
/// in batches keeps a flood of new keys from scanning the table per key.
const EVICT_FRACTION: usize = 10;

/// The unit a per-address limit counts: an IPv4 address, or an IPv6 /64.
/// One subscriber usually holds a whole /64 and can use any address in it,
/// so limiting single IPv6 addresses limits nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(IpAddr);

impl From<IpAddr> for AddressKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // `::ffff:a.b.c.d` is an IPv4 client on a dual-stack socket.
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

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
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * refill < burst
            });
            if buckets.len() >= MAX_KEYS {
                // Every remembered client is mid-limit. Refusing newcomers
                // would let one stranger with many addresses shut everyone
                // else out; forgetting the least recently seen only gives
                // those a fresh bucket, which they could have had from a
                // new address anyway.
                evict_oldest(&mut buckets, MAX_KEYS / EVICT_FRACTION);
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

/// Drops the `count` buckets updated longest ago.
fn evict_oldest<K: Eq + Hash>(buckets: &mut HashMap<K, Bucket>, count: usize) {
    let mut times: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
    if count == 0 || times.is_empty() {
        return;
    }
    let nth = count.min(times.len()) - 1;
    let (_, cutoff, _) = times.select_nth_unstable(nth);
    let cutoff = *cutoff;
    buckets.retain(|_, b| b.updated > cutoff);
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

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let key = |text: &str| AddressKey::from(text.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));

        let limiter = RateLimiter::new(Rate {
            burst: 1,
            per: Duration::from_secs(60),
        });
        let now = Instant::now();
        assert!(limiter.check_at(&key("2001:db8::1"), now).is_ok());
        // Another address of the same /64 shares the bucket.
        assert!(limiter.check_at(&key("2001:db8::2"), now).is_err());
        assert!(limiter.check_at(&key("2001:db8:0:1::1"), now).is_ok());
    }

    #[test]
    fn a_flood_of_addresses_does_not_shut_out_a_new_client() {
        let limiter = RateLimiter::new(Rate {
            burst: 5,
            per: Duration::from_secs(3600),
        });
        let start = Instant::now();
        // Twice the table's size in distinct addresses, each mid-limit.
        for n in 0..(2 * MAX_KEYS as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            let now = start + Duration::from_micros(u64::from(n));
            let _ = limiter.check_at(&AddressKey::from(ip), now);
        }
        let later = start + Duration::from_secs(1);
        let len = limiter.buckets.lock().unwrap().len();
        assert!(len <= MAX_KEYS, "{len} keys remembered");
        let genuine = AddressKey::from("192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(limiter.check_at(&genuine, later).is_ok());
        // A limited client seen recently is still remembered (and limited).
        let recent = AddressKey::from(IpAddr::from(std::net::Ipv4Addr::from(
            0x0a00_0000 + 2 * MAX_KEYS as u32 - 1,
        )));
        for _ in 0..4 {
            assert!(limiter.check_at(&recent, later).is_ok());
        }
        assert!(limiter.check_at(&recent, later).is_err());
    }
}
