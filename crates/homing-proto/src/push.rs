//! Web Push wake-ups: the subscription a device gives its home server
//! (the browser's `PushSubscription.toJSON()` form, which UnifiedPush
//! distributors also speak) and what a wake-up says once decrypted.

use serde::{Deserialize, Serialize};

/// Longest push endpoint URL accepted. Browsers' push services hand out
/// endpoints of a few hundred characters.
pub const MAX_ENDPOINT_CHARS: usize = 1024;

/// `PUT /api/v1/devices/{device_id}/push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushSubscription {
    /// The push resource URL the push service gave the device (RFC 8030).
    #[schema(max_length = 1024)]
    pub endpoint: String,
    pub keys: PushKeys,
}

/// The device's keys for RFC 8291 message encryption, unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// Its P-256 public key, uncompressed (65 bytes).
    #[schema(max_length = 100)]
    pub p256dh: String,
    /// Its authentication secret (16 bytes).
    #[schema(max_length = 30)]
    pub auth: String,
}

/// `GET /api/v1/devices/{device_id}/push`: the subscription the server
/// holds, without its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushSubscriptionInfo {
    pub endpoint: String,
    pub created_at: i64,
    /// When the last wake-up was accepted by the push service, if ever.
    pub last_push_at: Option<i64>,
}

/// The decrypted body of every wake-up: that there is mail, and the
/// delivery cursor it reaches. Never a sender, a size or a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeUp {
    /// Always `"dm_notify"`, as on the gateway.
    #[serde(rename = "type")]
    pub kind: String,
    pub cursor: i64,
}

impl WakeUp {
    pub fn new(cursor: i64) -> Self {
        Self {
            kind: "dm_notify".into(),
            cursor,
        }
    }
}
