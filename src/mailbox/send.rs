//! Accepting a message, before it waits for a writer: validate and decode
//! it. The group commit then stores it with the other sends of its batch
//! (`send_batch`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{
    valid_message_id, MailboxError, NewDelivery, RecipientWraps, SendRequest, SendResponse,
};
use crate::address::{Address, ServerName};
use crate::config::{FederationSettings, Limits};
use crate::crypto::identity::MAX_DEVICES;
use crate::storage::StorageError;

pub use homing_proto::wire::MAX_RECIPIENTS;
/// A `crypto_box_seal` of a 32-byte key is 80 bytes; leave room for
/// other key sizes, but not for smuggling payloads.
pub(super) const MAX_KEY_WRAP_BYTES: usize = 256;

/// The authenticated sending device.
#[derive(Debug, Clone)]
pub struct Sender {
    pub account_key: String,
    pub device_id: String,
}

/// Server settings a send depends on.
#[derive(Debug, Clone)]
pub struct SendContext {
    pub server_name: ServerName,
    /// The server name and public hosts: addresses at any are local.
    pub local_names: crate::address::LocalNames,
    pub limits: Limits,
    pub max_pending_age: Duration,
    pub device_inactivity: Duration,
    /// Bodies up to this size ride inline in `DM_NOTIFY`.
    pub inline_max_bytes: usize,
    pub federation: FederationSettings,
}

impl SendContext {
    pub fn new(settings: &crate::config::Settings) -> Self {
        Self {
            server_name: settings.server_name.clone(),
            local_names: settings.local_names(),
            limits: settings.limits.clone(),
            max_pending_age: settings.retention.max_pending_age,
            device_inactivity: settings.retention.device_inactivity,
            inline_max_bytes: settings.gateway.inline_max_bytes,
            federation: settings.federation.clone(),
        }
    }
}

/// What a committed send produced.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub response: SendResponse,
    /// Every new delivery, to wake the gateway.
    pub new_deliveries: Vec<NewDelivery>,
    /// Destination servers that got new outbox rows, to wake the relay.
    pub queued_destinations: Vec<String>,
    /// True when this was a retry answered from the record.
    pub replayed: bool,
    pub body_bytes: usize,
}

#[derive(Debug)]
pub(super) struct ParsedRecipient {
    pub address: Address,
    pub wraps: HashMap<String, Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct Parsed {
    pub body: Vec<u8>,
    pub recipients: Vec<ParsedRecipient>,
    pub digest: Vec<u8>,
}

fn invalid(message: impl Into<String>) -> MailboxError {
    MailboxError::Invalid(message.into())
}

fn parse(request: &SendRequest, limits: &Limits) -> Result<Parsed, MailboxError> {
    if !valid_message_id(&request.message_id) {
        return Err(invalid(
            "message_id must be 16 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    if request.body.len() > limits.max_message_bytes.saturating_mul(4) / 3 + 4 {
        return Err(MailboxError::TooLarge {
            limit: limits.max_message_bytes as u64,
        });
    }
    let body = URL_SAFE_NO_PAD
        .decode(&request.body)
        .map_err(|_| invalid("body must be unpadded base64url"))?;
    if body.len() > limits.max_message_bytes {
        return Err(MailboxError::TooLarge {
            limit: limits.max_message_bytes as u64,
        });
    }
    if body.is_empty() {
        return Err(invalid("body is empty"));
    }
    if request.recipients.is_empty() || request.recipients.len() > MAX_RECIPIENTS {
        return Err(invalid(format!(
            "a message has 1 to {MAX_RECIPIENTS} recipients"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut recipients = Vec::with_capacity(request.recipients.len());
    for recipient in &request.recipients {
        let address = Address::parse(&recipient.address)
            .map_err(|e| invalid(format!("recipient {:?}: {e}", recipient.address)))?;
        if !seen.insert(address.to_string()) {
            return Err(invalid(format!("recipient {address} is listed twice")));
        }
        if recipient.devices.is_empty() || recipient.devices.len() > MAX_DEVICES {
            return Err(invalid(format!(
                "recipient {address}: 1 to {MAX_DEVICES} devices"
            )));
        }
        let mut wraps = HashMap::new();
        for device in &recipient.devices {
            let wrap = URL_SAFE_NO_PAD
                .decode(&device.key_wrap)
                .ok()
                .filter(|w| !w.is_empty() && w.len() <= MAX_KEY_WRAP_BYTES)
                .ok_or_else(|| invalid(format!("recipient {address}: invalid key_wrap")))?;
            if wraps.insert(device.device_id.clone(), wrap).is_some() {
                return Err(invalid(format!("recipient {address}: device listed twice")));
            }
        }
        recipients.push(ParsedRecipient { address, wraps });
    }
    let digest = super::digest::request_digest(request);
    Ok(Parsed {
        body,
        recipients,
        digest,
    })
}

/// A send request checked and decoded, ready to be committed. Parsing
/// happens before the request waits for a writer.
#[derive(Debug)]
pub struct PreparedSend {
    pub(super) request: SendRequest,
    pub(super) parsed: Parsed,
}

impl PreparedSend {
    pub fn new(request: SendRequest, limits: &Limits) -> Result<Self, MailboxError> {
        let parsed = parse(&request, limits)?;
        Ok(Self { request, parsed })
    }

    pub fn message_id(&self) -> &str {
        &self.request.message_id
    }

    /// The other servers this send queues mail for, each once.
    pub fn remote_servers(&self, ours: &ServerName) -> Vec<String> {
        let mut servers: Vec<String> = self
            .parsed
            .recipients
            .iter()
            .map(|recipient| recipient.address.server())
            .filter(|server| *server != ours)
            .map(ToString::to_string)
            .collect();
        servers.sort_unstable();
        servers.dedup();
        servers
    }
}

/// A retry's answer from the idempotency record of the first send.
pub(super) fn answer_from_record(
    digest: &[u8],
    response: &str,
    request: &SendRequest,
    parsed: &Parsed,
) -> Result<SendOutcome, MailboxError> {
    if digest != parsed.digest {
        return Err(MailboxError::MessageIdReused(request.message_id.clone()));
    }
    let response: SendResponse = serde_json::from_str(response)
        .map_err(|e| StorageError::Corrupt(format!("stored send response unreadable: {e}")))?;
    Ok(SendOutcome {
        response,
        new_deliveries: Vec::new(),
        queued_destinations: Vec::new(),
        replayed: true,
        body_bytes: parsed.body.len(),
    })
}

/// A send's remote recipients by destination server, as the outbox keeps
/// them.
pub(super) type RemoteRecipients = BTreeMap<String, Vec<RecipientWraps>>;

/// Files a remote recipient under its server, with its address in
/// canonical form.
pub(super) fn queue_remote(
    remote: &mut RemoteRecipients,
    recipient: &ParsedRecipient,
    wraps: &RecipientWraps,
) {
    let mut normal = wraps.clone();
    normal.address = recipient.address.to_string();
    remote
        .entry(recipient.address.server().to_string())
        .or_default()
        .push(normal);
}
