//! Local delivery, shared by local sends and inbound federation: check a
//! recipient's target devices and quota, then write one delivery row per
//! device with the per-device counters.

use std::collections::HashMap;
use std::time::Duration;

use diesel::prelude::*;

use super::{MailboxError, NewDelivery, StaleRecipient, SyncItem};
use crate::address::Address;
use crate::config::Limits;
use crate::storage::schema::{accounts, deliveries, devices};
use crate::storage::DbConnection;
use crate::time::duration_ms;
use crate::with_backend;

/// A recipient's devices checked and ready to be written.
pub(crate) struct Plan {
    pub recipient_account: String,
    pub address: String,
    pub targets: Vec<(i64, Vec<u8>)>,
    /// Some target device is over its pending quota.
    pub full: bool,
}

/// The outcome of checking one local recipient.
pub(crate) enum RecipientCheck {
    Ready(Plan),
    Stale(StaleRecipient),
    Unknown,
}

/// What a check needs besides the recipient.
pub(crate) struct CheckRules<'a> {
    pub limits: &'a Limits,
    pub device_inactivity: Duration,
    /// The sending device, which never sends to itself.
    pub exclude: Option<(&'a str, &'a str)>,
}

/// Checks `address`'s current devices against the devices the sender
/// wrapped the key for. Devices silent past the inactivity limit are not
/// required (and get no delivery); revoked or unknown ones are `extra`.
pub(crate) fn check_recipient(
    conn: &mut DbConnection,
    rules: &CheckRules<'_>,
    address: &Address,
    wraps: &HashMap<String, Vec<u8>>,
    body_len: i64,
    now: i64,
) -> Result<RecipientCheck, MailboxError> {
    // At most one row (a unique key): `load` rather than `first`, whose
    // LIMIT parameter makes SQLite re-prepare the statement on every run.
    let account: Option<String> = with_backend!(conn, c => accounts::table
        .filter(accounts::alias.eq(address.alias().as_str()))
        .filter(accounts::disabled_at.is_null())
        .select(accounts::account_key)
        .load(c))?
    .into_iter()
    .next();
    let Some(account) = account else {
        return Ok(RecipientCheck::Unknown);
    };
    let rows: Vec<(i64, String, i64, i64, i64)> = with_backend!(conn, c => devices::table
        .filter(devices::account_key.eq(&account))
        .filter(devices::revoked_at.is_null())
        // Lock device rows in one order everywhere, so concurrent sends to the
        // same devices queue instead of deadlocking.
        .order(devices::id.asc())
        .select((
            devices::id, devices::device_id, devices::last_seen_at, devices::pending_messages, devices::pending_bytes))
        .load(c))?;
    let inactive_before = now.saturating_sub(duration_ms(rules.device_inactivity));
    let candidates: Vec<_> = rows
        .into_iter()
        .filter(|(_, id, ..)| rules.exclude != Some((account.as_str(), id.as_str())))
        .collect();
    let mut missing: Vec<String> = candidates
        .iter()
        .filter(|(_, id, last_seen, ..)| *last_seen >= inactive_before && !wraps.contains_key(id))
        .map(|(_, id, ..)| id.clone())
        .collect();
    let mut extra: Vec<String> = wraps
        .keys()
        .filter(|id| !candidates.iter().any(|(_, known, ..)| known == *id))
        .cloned()
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        missing.sort();
        extra.sort();
        return Ok(RecipientCheck::Stale(StaleRecipient {
            address: address.to_string(),
            missing,
            extra,
        }));
    }
    let max_messages = i64::from(rules.limits.max_pending_messages_per_device);
    let max_bytes = i64::try_from(rules.limits.max_pending_bytes_per_device).unwrap_or(i64::MAX);
    let mut full = false;
    let mut targets = Vec::new();
    for (row, id, last_seen, pending_messages, pending_bytes) in candidates {
        if last_seen < inactive_before {
            continue;
        }
        full |=
            pending_messages >= max_messages || pending_bytes.saturating_add(body_len) > max_bytes;
        if let Some(wrap) = wraps.get(&id) {
            targets.push((row, wrap.clone()));
        }
    }
    Ok(RecipientCheck::Ready(Plan {
        recipient_account: account,
        address: address.to_string(),
        targets,
        full,
    }))
}

/// The message a delivery belongs to, for inlining into `DM_NOTIFY`.
pub(crate) struct MessageRef<'a> {
    pub row: i64,
    pub message_id: &'a str,
    pub origin: &'a str,
    /// The body as base64url when it is small enough to inline.
    pub inline_body: Option<&'a str>,
    pub delivery: super::DeliveryMode,
    pub expires_at: i64,
    pub body_len: i64,
}

/// Writes the deliveries of `plan` and raises the devices' counters.
pub(crate) fn store_deliveries(
    conn: &mut DbConnection,
    message: &MessageRef<'_>,
    plan: &Plan,
    now: i64,
) -> Result<Vec<NewDelivery>, MailboxError> {
    let mut created = Vec::with_capacity(plan.targets.len());
    for (device_row, wrap) in &plan.targets {
        // The counter update locks the device row before the delivery draws
        // its id, so deliveries for one device commit in id order: a device
        // that syncs past a cursor can never have a lower id commit later.
        with_backend!(conn, c => diesel::update(devices::table.find(device_row))
            .set((
                devices::pending_messages.eq(devices::pending_messages + 1),
                devices::pending_bytes.eq(devices::pending_bytes + message.body_len),
            ))
            .execute(c))?;
        let id: i64 = with_backend!(conn, c => diesel::insert_into(deliveries::table)
            .values((
                deliveries::message_row.eq(message.row),
                deliveries::device_row.eq(device_row),
                deliveries::recipient_account.eq(&plan.recipient_account),
                deliveries::key_wrap.eq(wrap),
                deliveries::body_bytes.eq(message.body_len),
                deliveries::created_at.eq(now),
                deliveries::expires_at.eq(message.expires_at),
            ))
            .returning(deliveries::id)
            .get_result(c))?;
        let inline = message.inline_body.map(|body| SyncItem {
            cursor: id,
            message_id: message.message_id.to_string(),
            origin: message.origin.to_string(),
            body: body.to_string(),
            key_wrap: crate::crypto::b64(wrap),
            delivery: message.delivery,
            received_at: now,
            expires_at: message.expires_at,
        });
        created.push(NewDelivery {
            device_row: *device_row,
            cursor: id,
            inline,
        });
    }
    Ok(created)
}

/// Server settings that inbound delivery depends on.
#[derive(Debug, Clone)]
pub struct InboundRules {
    pub server_name: crate::address::ServerName,
    pub limits: Limits,
    pub device_inactivity: Duration,
    pub max_pending_age: Duration,
    pub inline_max_bytes: usize,
}

/// Delivers one message relayed from `origin` to its local recipients,
/// through the same checks as a local send. A message already held from
/// this origin is answered `accepted` again and stored nothing twice.
pub fn deliver_inbound(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    message: &crate::federation::wire::TxnMessage,
    now: i64,
) -> Result<(crate::federation::wire::MessageResult, Vec<NewDelivery>), MailboxError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    use crate::federation::wire::{MessageResult, RecipientResult};
    use crate::storage::schema::messages;

    let result = |recipients| MessageResult {
        message_id: message.message_id.clone(),
        recipients,
    };
    let all = |status: &str| {
        result(
            message
                .recipients
                .iter()
                .map(|r| RecipientResult::new(r.address.clone(), status))
                .collect(),
        )
    };
    let body = URL_SAFE_NO_PAD.decode(&message.body).ok();
    let valid = super::valid_message_id(&message.message_id)
        && body
            .as_ref()
            .is_some_and(|b| !b.is_empty() && b.len() <= rules.limits.max_message_bytes)
        && !message.recipients.is_empty()
        && message.recipients.len() <= super::send::MAX_RECIPIENTS;
    let Some(body) = body.filter(|_| valid) else {
        return Ok((all("invalid"), Vec::new()));
    };
    // At most one row (a unique key): `load` rather than `first`, whose
    // LIMIT parameter makes SQLite re-prepare the statement on every run.
    let known: Option<i64> = with_backend!(conn, c => messages::table
        .filter(messages::origin.eq(origin))
        .filter(messages::message_id.eq(&message.message_id))
        .select(messages::id)
        .load(c))?
    .into_iter()
    .next();
    if known.is_some() {
        return Ok((all("accepted"), Vec::new()));
    }
    let body_len = i64::try_from(body.len()).unwrap_or(i64::MAX);
    let check_rules = CheckRules {
        limits: &rules.limits,
        device_inactivity: rules.device_inactivity,
        exclude: None,
    };
    let mut results = Vec::with_capacity(message.recipients.len());
    let mut plans = Vec::new();
    for recipient in &message.recipients {
        let address = match Address::parse(&recipient.address) {
            Ok(address) if address.server() == &rules.server_name => address,
            Ok(_) => {
                results.push(RecipientResult::new(recipient.address.clone(), "not_local"));
                continue;
            }
            Err(_) => {
                results.push(RecipientResult::new(recipient.address.clone(), "invalid"));
                continue;
            }
        };
        let mut wraps = HashMap::new();
        for device in &recipient.devices {
            if let Ok(wrap) = URL_SAFE_NO_PAD.decode(&device.key_wrap) {
                if !wrap.is_empty() && wrap.len() <= 256 {
                    wraps.insert(device.device_id.clone(), wrap);
                }
            }
        }
        match check_recipient(conn, &check_rules, &address, &wraps, body_len, now)? {
            RecipientCheck::Unknown => results.push(RecipientResult::new(
                address.to_string(),
                "unknown_recipient",
            )),
            RecipientCheck::Stale(stale) => results.push(RecipientResult {
                address: stale.address,
                status: "stale_devices".into(),
                missing: stale.missing,
                extra: stale.extra,
            }),
            RecipientCheck::Ready(plan) if plan.full => {
                results.push(RecipientResult::new(plan.address.clone(), "mailbox_full"))
            }
            RecipientCheck::Ready(plan) => {
                results.push(RecipientResult::new(plan.address.clone(), "accepted"));
                plans.push(plan);
            }
        }
    }
    if plans.is_empty() {
        return Ok((result(results), Vec::new()));
    }
    let cap = now.saturating_add(duration_ms(rules.max_pending_age));
    let expires_at = message.expires_at.clamp(now + 1, cap);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&body).to_vec();
    let message_row: i64 = with_backend!(conn, c => diesel::insert_into(messages::table)
        .values((
            messages::origin.eq(origin),
            messages::message_id.eq(&message.message_id),
            messages::request_digest.eq(digest),
            messages::body.eq(&body),
            messages::delivery_mode.eq(message.delivery.as_str()),
            messages::created_at.eq(now),
            messages::expires_at.eq(expires_at),
        ))
        .returning(messages::id)
        .get_result(c))?;
    let reference = MessageRef {
        row: message_row,
        message_id: &message.message_id,
        origin,
        inline_body: (body.len() <= rules.inline_max_bytes).then_some(message.body.as_str()),
        delivery: message.delivery,
        expires_at,
        body_len,
    };
    let mut created = Vec::new();
    for plan in &plans {
        created.extend(store_deliveries(conn, &reference, plan, now)?);
    }
    Ok((result(results), created))
}
