//! The client API's wire types: what a device sends to its home server and
//! what it gets back. The server and the client share these definitions, so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// Most recipients one message may name.
pub const MAX_RECIPIENTS: usize = 100;

/// Whether every target device must acknowledge (`all`) or the first ack
/// ends the message for all of a recipient's devices (`any`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    #[default]
    All,
    Any,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Any => "any",
        }
    }

    pub fn from_db(text: &str) -> Self {
        if text == "any" {
            Self::Any
        } else {
            Self::All
        }
    }
}

/// A client-chosen message id: `[A-Za-z0-9_-]{16,64}`, long enough to be
/// random.
pub fn valid_message_id(text: &str) -> bool {
    (16..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /api/v1/dms/send`, as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Chosen by the client, random; a retry with the same id and content
    /// is answered from the record instead of sending twice.
    #[schema(pattern = "^[A-Za-z0-9_-]{16,64}$")]
    pub message_id: String,
    /// The encrypted body, unpadded base64url.
    #[schema(pattern = "^[A-Za-z0-9_-]+$")]
    pub body: String,
    #[serde(default)]
    pub delivery: DeliveryMode,
    #[schema(min_items = 1, max_items = 100)]
    pub recipients: Vec<RecipientWraps>,
}

/// One recipient address and a key wrap per target device.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientWraps {
    /// `alias@server`.
    pub address: String,
    #[schema(min_items = 1, max_items = 32)]
    pub devices: Vec<DeviceWrap>,
}

/// The message's content key sealed to one device.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceWrap {
    pub device_id: String,
    /// Unpadded base64url, at most 256 bytes decoded.
    #[schema(pattern = "^[A-Za-z0-9_-]+$")]
    pub key_wrap: String,
}

/// The answer to a send, stored so that a retry gets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendResponse {
    pub message_id: String,
    pub recipients: Vec<RecipientStatus>,
}

/// Where the message stands for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientStatus {
    pub address: String,
    /// `stored` for a local recipient whose devices have it, `queued` for a
    /// remote one now in the outbox, `mailbox_full` when that recipient's
    /// devices are over quota, `no_active_devices` when none is a target.
    #[schema(example = "stored")]
    #[schema(pattern = "^(stored|queued|mailbox_full|no_active_devices)$")]
    pub status: String,
}

/// One pending message for the syncing device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncItem {
    /// Server order; pass the last one back as the cursor.
    pub cursor: i64,
    pub message_id: String,
    pub origin: String,
    /// The encrypted body, unpadded base64url.
    pub body: String,
    /// The content key sealed to this device, unpadded base64url.
    pub key_wrap: String,
    pub delivery: DeliveryMode,
    pub received_at: i64,
    pub expires_at: i64,
}

/// A page of a sync.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncPage {
    pub items: Vec<SyncItem>,
    /// The cursor to continue from (the last item's, or the one given).
    pub cursor: i64,
    /// True when more items are pending after this page.
    pub more: bool,
}

/// A change in what the sender knows about one recipient of its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusEvent {
    /// Who sent it (a local account); the event goes to its devices.
    #[serde(skip)]
    pub sender_account: String,
    pub message_id: String,
    pub recipient: String,
    /// `stored`, `queued`, `relayed`, `delivered`, `expired`, `bounced`,
    /// `dropped`, `recalled`, `recalling` (the recipient's server was asked
    /// to take it back), `not_recalled` (it had nothing of it left unread),
    /// `mailbox_full`, `no_active_devices`, or a remote server's refusal:
    /// `unknown_recipient`, `stale_devices`, `not_local`, `invalid`.
    pub state: String,
    pub updated_at: i64,
    /// For `stale_devices`: the recipient's current devices the key wraps
    /// left out (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// For `stale_devices`: devices the key wraps named that the recipient
    /// does not have (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl StatusEvent {
    /// An event without device details.
    pub fn new(
        sender_account: impl Into<String>,
        message_id: impl Into<String>,
        recipient: impl Into<String>,
        state: impl Into<String>,
        updated_at: i64,
    ) -> Self {
        Self {
            sender_account: sender_account.into(),
            message_id: message_id.into(),
            recipient: recipient.into(),
            state: state.into(),
            updated_at,
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The event with a receipt's stored `detail` (`{"missing", "extra"}`
    /// of a `stale_devices` answer); a detail that does not parse adds
    /// nothing.
    pub fn with_detail(mut self, detail: Option<&str>) -> Self {
        #[derive(Deserialize)]
        struct Detail {
            #[serde(default)]
            missing: Vec<String>,
            #[serde(default)]
            extra: Vec<String>,
        }
        if let Some(detail) = detail.and_then(|d| serde_json::from_str::<Detail>(d).ok()) {
            self.missing = detail.missing;
            self.extra = detail.extra;
        }
        self
    }
}
