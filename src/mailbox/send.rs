//! Accepting a message: validate it, check each local recipient's device
//! set and quotas, and commit the body, its deliveries, the sender's
//! receipts and the idempotency record in one transaction.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{valid_message_id, DeliveryMode, MailboxError, StaleRecipient};
use crate::address::{Address, ServerName};
use crate::config::Limits;
use crate::crypto::canonical::to_canonical_bytes;
use crate::crypto::identity::MAX_DEVICES;
use crate::storage::schema::{
    accounts, deliveries, delivery_receipts, devices, messages, send_idempotency,
};
use crate::storage::{is_unique_violation, write_transaction, DbConnection, StorageError};
use crate::time::duration_ms;
use crate::with_backend;

/// Most recipients one message may name.
pub const MAX_RECIPIENTS: usize = 100;
/// A `crypto_box_seal` of a 32-byte key is 80 bytes; leave room for
/// other key sizes, but not for smuggling payloads.
const MAX_KEY_WRAP_BYTES: usize = 256;

/// `POST /api/v1/dms/send`, as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub message_id: String,
    /// The encrypted body, unpadded base64url.
    pub body: String,
    #[serde(default)]
    pub delivery: DeliveryMode,
    pub recipients: Vec<RecipientWraps>,
}

/// One recipient address and a key wrap per target device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientWraps {
    pub address: String,
    pub devices: Vec<DeviceWrap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceWrap {
    pub device_id: String,
    pub key_wrap: String,
}

/// The answer to a send, stored so that a retry gets it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    pub message_id: String,
    pub recipients: Vec<RecipientStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientStatus {
    pub address: String,
    /// `stored`, or `mailbox_full` when that recipient's devices are over quota.
    pub status: String,
}

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
    pub limits: Limits,
    pub max_pending_age: Duration,
    pub device_inactivity: Duration,
    /// Bodies up to this size ride inline in `DM_NOTIFY`.
    pub inline_max_bytes: usize,
}

/// A delivery the send created, for waking the device's gateway sessions.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub device_row: i64,
    pub cursor: i64,
    /// The whole item when the body is small enough to inline.
    pub inline: Option<super::SyncItem>,
}

/// What a committed send produced.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub response: SendResponse,
    /// Every new delivery, to wake the gateway.
    pub new_deliveries: Vec<NewDelivery>,
    /// True when this was a retry answered from the record.
    pub replayed: bool,
    pub body_bytes: usize,
}

struct ParsedRecipient {
    address: Address,
    wraps: HashMap<String, Vec<u8>>,
}

struct Parsed {
    body: Vec<u8>,
    recipients: Vec<ParsedRecipient>,
    digest: Vec<u8>,
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
    let digest = request_digest(request)?;
    Ok(Parsed {
        body,
        recipients,
        digest,
    })
}

/// SHA-256 of the request's canonical form with recipients and devices
/// sorted, so a retry that lists them in another order is the same send.
fn request_digest(request: &SendRequest) -> Result<Vec<u8>, MailboxError> {
    let mut normal = request.clone();
    normal.recipients.sort_by(|a, b| a.address.cmp(&b.address));
    for recipient in &mut normal.recipients {
        recipient.address = recipient.address.to_ascii_lowercase();
        recipient
            .devices
            .sort_by(|a, b| a.device_id.cmp(&b.device_id));
    }
    let bytes = to_canonical_bytes(&normal).map_err(|e| invalid(e.to_string()))?;
    Ok(Sha256::digest(bytes).to_vec())
}

/// Stores `request` from `sender`, or answers a retry from the record.
pub fn send(
    conn: &mut DbConnection,
    context: &SendContext,
    sender: &Sender,
    request: &SendRequest,
) -> Result<SendOutcome, MailboxError> {
    let parsed = parse(request, &context.limits)?;
    for recipient in &parsed.recipients {
        if recipient.address.server() != &context.server_name {
            return Err(MailboxError::RemoteUnsupported(
                recipient.address.to_string(),
            ));
        }
    }
    let result = write_transaction(conn, |conn| {
        if let Some(outcome) = replay(conn, sender, request, &parsed)? {
            return Ok(outcome);
        }
        store(conn, context, sender, request, &parsed)
    });
    match result {
        Err(MailboxError::Storage(StorageError::Query(error))) if is_unique_violation(&error) => {
            // A concurrent identical retry won, or another sender of this
            // server took the id: the record tells which.
            replay(conn, sender, request, &parsed)?
                .ok_or_else(|| MailboxError::MessageIdReused(request.message_id.clone()))
        }
        other => other,
    }
}

fn replay(
    conn: &mut DbConnection,
    sender: &Sender,
    request: &SendRequest,
    parsed: &Parsed,
) -> Result<Option<SendOutcome>, MailboxError> {
    let record: Option<(Vec<u8>, String)> = with_backend!(conn, c => send_idempotency::table
        .find((&sender.account_key, &request.message_id))
        .select((send_idempotency::request_digest, send_idempotency::response))
        .first(c)
        .optional())?;
    let Some((digest, response)) = record else {
        return Ok(None);
    };
    if digest != parsed.digest {
        return Err(MailboxError::MessageIdReused(request.message_id.clone()));
    }
    let response: SendResponse = serde_json::from_str(&response)
        .map_err(|e| StorageError::Migration(format!("stored send response unreadable: {e}")))?;
    Ok(Some(SendOutcome {
        response,
        new_deliveries: Vec::new(),
        replayed: true,
        body_bytes: parsed.body.len(),
    }))
}

/// A recipient's device as the send sees it.
struct TargetDevice {
    row: i64,
    device_id: String,
    inactive: bool,
    pending_messages: i64,
    pending_bytes: i64,
}

struct Plan {
    recipient_account: String,
    address: String,
    targets: Vec<(i64, Vec<u8>)>,
    full: bool,
}

fn plan_recipient(
    conn: &mut DbConnection,
    context: &SendContext,
    sender: &Sender,
    recipient: &ParsedRecipient,
    body_len: i64,
    now: i64,
) -> Result<Result<Plan, StaleRecipient>, MailboxError> {
    let address = recipient.address.to_string();
    let account: Option<String> = with_backend!(conn, c => accounts::table
        .filter(accounts::alias.eq(recipient.address.alias().as_str()))
        .filter(accounts::disabled_at.is_null())
        .select(accounts::account_key)
        .first(c)
        .optional())?;
    let account = account.ok_or_else(|| MailboxError::UnknownRecipient(address.clone()))?;
    let rows: Vec<(i64, String, i64, i64, i64)> = with_backend!(conn, c => devices::table
        .filter(devices::account_key.eq(&account))
        .filter(devices::revoked_at.is_null())
        .select((devices::id, devices::device_id, devices::last_seen_at, devices::pending_messages, devices::pending_bytes))
        .load(c))?;
    let inactive_before = now.saturating_sub(duration_ms(context.device_inactivity));
    let devices: Vec<TargetDevice> = rows
        .into_iter()
        // The sending device does not send to itself.
        .filter(|(_, id, ..)| !(account == sender.account_key && *id == sender.device_id))
        .map(
            |(row, device_id, last_seen, pending_messages, pending_bytes)| TargetDevice {
                row,
                device_id,
                inactive: last_seen < inactive_before,
                pending_messages,
                pending_bytes,
            },
        )
        .collect();
    let missing: Vec<String> = devices
        .iter()
        .filter(|d| !d.inactive && !recipient.wraps.contains_key(&d.device_id))
        .map(|d| d.device_id.clone())
        .collect();
    let mut extra: Vec<String> = recipient
        .wraps
        .keys()
        .filter(|id| !devices.iter().any(|d| &d.device_id == *id))
        .cloned()
        .collect();
    extra.sort();
    if !missing.is_empty() || !extra.is_empty() {
        return Ok(Err(StaleRecipient {
            address,
            missing,
            extra,
        }));
    }
    let limits = &context.limits;
    let active: Vec<&TargetDevice> = devices.iter().filter(|d| !d.inactive).collect();
    let full = active.iter().any(|d| {
        d.pending_messages >= i64::from(limits.max_pending_messages_per_device)
            || d.pending_bytes.saturating_add(body_len)
                > i64::try_from(limits.max_pending_bytes_per_device).unwrap_or(i64::MAX)
    });
    let targets = active
        .iter()
        .filter_map(|d| {
            recipient
                .wraps
                .get(&d.device_id)
                .map(|wrap| (d.row, wrap.clone()))
        })
        .collect();
    Ok(Ok(Plan {
        recipient_account: account,
        address,
        targets,
        full,
    }))
}

fn store(
    conn: &mut DbConnection,
    context: &SendContext,
    sender: &Sender,
    request: &SendRequest,
    parsed: &Parsed,
) -> Result<SendOutcome, MailboxError> {
    let now = crate::time::now_ms();
    let body_len = i64::try_from(parsed.body.len()).unwrap_or(i64::MAX);
    let mut plans = Vec::with_capacity(parsed.recipients.len());
    let mut stale = Vec::new();
    for recipient in &parsed.recipients {
        match plan_recipient(conn, context, sender, recipient, body_len, now)? {
            Ok(plan) => plans.push(plan),
            Err(recipient) => stale.push(recipient),
        }
    }
    if !stale.is_empty() {
        return Err(MailboxError::StaleDevices(stale));
    }
    if plans.iter().all(|p| p.full) {
        return Err(MailboxError::MailboxFull {
            limit_messages: context.limits.max_pending_messages_per_device,
            limit_bytes: context.limits.max_pending_bytes_per_device,
        });
    }
    let expires_at = now.saturating_add(duration_ms(context.max_pending_age));
    let message_row: i64 = with_backend!(conn, c => diesel::insert_into(messages::table)
        .values((
            messages::origin.eq(context.server_name.as_str()),
            messages::message_id.eq(&request.message_id),
            messages::sender_account.eq(Some(&sender.account_key)),
            messages::sender_device.eq(Some(&sender.device_id)),
            messages::request_digest.eq(&parsed.digest),
            messages::body.eq(&parsed.body),
            messages::delivery_mode.eq(request.delivery.as_str()),
            messages::created_at.eq(now),
            messages::expires_at.eq(expires_at),
        ))
        .returning(messages::id)
        .get_result(c))?;
    let mut new_deliveries = Vec::new();
    let mut statuses = Vec::with_capacity(plans.len());
    for plan in &plans {
        let status = if plan.full { "mailbox_full" } else { "stored" };
        statuses.push(super::send::RecipientStatus {
            address: plan.address.clone(),
            status: status.into(),
        });
        with_backend!(conn, c => diesel::insert_into(delivery_receipts::table)
            .values((
                delivery_receipts::sender_account.eq(&sender.account_key),
                delivery_receipts::message_id.eq(&request.message_id),
                delivery_receipts::recipient.eq(&plan.address),
                delivery_receipts::state.eq(status),
                delivery_receipts::updated_at.eq(now),
            ))
            .execute(c))?;
        if plan.full {
            continue;
        }
        for (device_row, wrap) in &plan.targets {
            let id: i64 = with_backend!(conn, c => diesel::insert_into(deliveries::table)
                .values((
                    deliveries::message_row.eq(message_row),
                    deliveries::device_row.eq(device_row),
                    deliveries::recipient_account.eq(&plan.recipient_account),
                    deliveries::key_wrap.eq(wrap),
                    deliveries::body_bytes.eq(body_len),
                    deliveries::created_at.eq(now),
                    deliveries::expires_at.eq(expires_at),
                ))
                .returning(deliveries::id)
                .get_result(c))?;
            with_backend!(conn, c => diesel::update(devices::table.find(device_row))
                .set((
                    devices::pending_messages.eq(devices::pending_messages + 1),
                    devices::pending_bytes.eq(devices::pending_bytes + body_len),
                ))
                .execute(c))?;
            let inline = (parsed.body.len() <= context.inline_max_bytes).then(|| super::SyncItem {
                cursor: id,
                message_id: request.message_id.clone(),
                origin: context.server_name.to_string(),
                body: request.body.clone(),
                key_wrap: crate::crypto::b64(wrap),
                delivery: request.delivery,
                received_at: now,
                expires_at,
            });
            new_deliveries.push(NewDelivery {
                device_row: *device_row,
                cursor: id,
                inline,
            });
        }
    }
    let response = SendResponse {
        message_id: request.message_id.clone(),
        recipients: statuses,
    };
    let stored = serde_json::to_string(&response).map_err(|e| invalid(e.to_string()))?;
    with_backend!(conn, c => diesel::insert_into(send_idempotency::table)
        .values((
            send_idempotency::sender_account.eq(&sender.account_key),
            send_idempotency::message_id.eq(&request.message_id),
            send_idempotency::request_digest.eq(&parsed.digest),
            send_idempotency::response.eq(stored),
            send_idempotency::created_at.eq(now),
        ))
        .execute(c))?;
    Ok(SendOutcome {
        response,
        new_deliveries,
        replayed: false,
        body_bytes: parsed.body.len(),
    })
}
