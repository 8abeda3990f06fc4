//! The JSON bodies servers exchange (see `federation-spec/federation.md`).

use serde::{Deserialize, Serialize};

use crate::wire::{DeliveryMode, RecipientWraps};

/// Most messages one transaction carries.
pub const MAX_TXN_MESSAGES: usize = 100;
/// Most body bytes (before base64) a sender packs into one transaction.
pub const MAX_TXN_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most recipients one message of a transaction names (as for a local
/// send: `mailbox::MAX_RECIPIENTS`).
pub const MAX_TXN_MESSAGE_RECIPIENTS: usize = crate::wire::MAX_RECIPIENTS;
/// Most recipients, over all its messages, one transaction names.
pub const MAX_TXN_RECIPIENTS: usize = 1_000;
/// Longest key wrap accepted, base64url (256 bytes decoded).
pub const MAX_KEY_WRAP_CHARS: usize = 342;
/// Largest transaction request a receiver reads (base64 and JSON overhead
/// on top of the bodies).
pub const MAX_TXN_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// `PUT /federation/v1/txn/{txn_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    pub origin: String,
    pub messages: Vec<TxnMessage>,
}

/// One message for one or more recipients on the receiving server. The
/// sender's alias is not here: only the origin server is known.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnMessage {
    pub message_id: String,
    /// The encrypted body, unpadded base64url.
    pub body: String,
    pub delivery: DeliveryMode,
    pub created_at: i64,
    pub expires_at: i64,
    pub recipients: Vec<RecipientWraps>,
}

/// The answer to a transaction: a result per message and recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub results: Vec<MessageResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageResult {
    pub message_id: String,
    pub recipients: Vec<RecipientResult>,
}

/// `status` is `accepted`, `unknown_recipient`, `stale_devices` (with
/// `missing`/`extra`), `mailbox_full`, `not_local` or `invalid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientResult {
    pub address: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl RecipientResult {
    pub fn new(address: impl Into<String>, status: &str) -> Self {
        Self {
            address: address.into(),
            status: status.into(),
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// `PUT /federation/v1/recall/{message_id}`: the sender took the message
/// back; remove what these recipients have not acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recall {
    pub origin: String,
    /// At most `MAX_TXN_MESSAGE_RECIPIENTS` addresses on the receiver.
    pub recipients: Vec<String>,
}

/// The answer to a recall: per recipient `recalled` (unacknowledged
/// deliveries were removed), `gone` (nothing of it was left unread
/// there: read, expired, or never stored) or `not_local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallResponse {
    pub message_id: String,
    pub recipients: Vec<RecipientResult>,
}

/// `POST /federation/v1/hello`: the sender is back; retry it now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {}
