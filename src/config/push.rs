//! `[push]`: Web Push wake-ups for devices without a gateway session.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, positive_duration};
use super::{invalid, ConfigError};

/// Longest `TTL` asked of a push service: a wake-up older than a day says
/// nothing a device's next sync would not, and push services cap what
/// they keep anyway (some at four weeks, some lower).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Deserialize)]
pub struct RawPush {
    pub min_interval: String,
    pub ttl: String,
    pub request_timeout: String,
}

/// How wake-ups are sent.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// At most one wake-up per device this often while the last one's
    /// mail is not yet acknowledged.
    pub min_interval: Duration,
    /// How long a push service may hold a wake-up for an offline device
    /// (the `TTL` header).
    pub ttl: Duration,
    /// How long one request to a push service may take.
    pub request_timeout: Duration,
}

impl RawPush {
    pub(super) fn validate(&self) -> Result<PushSettings, ConfigError> {
        let min_interval = duration("push.min_interval", &self.min_interval)?;
        let ttl = duration("push.ttl", &self.ttl)?;
        let request_timeout = positive_duration("push.request_timeout", &self.request_timeout)?;
        if ttl > MAX_TTL {
            return Err(invalid("push.ttl", &self.ttl, "must be at most 24h"));
        }
        Ok(PushSettings {
            min_interval,
            ttl,
            request_timeout,
        })
    }
}
