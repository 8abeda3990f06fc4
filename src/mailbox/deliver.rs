//! Local delivery, shared by local sends and inbound federation: check a
//! recipient's target devices and quota against what was read, and the
//! gateway's notes of what was written.

use std::collections::HashMap;
use std::time::Duration;

use super::{MailboxError, NewDelivery, StaleRecipient, SyncItem};
use crate::address::Address;
use crate::config::Limits;
use crate::storage::mail::{AccountTargets, Written};
use crate::time::duration_ms;

/// A recipient's devices checked and ready to be written.
pub(crate) struct Plan {
    pub recipient_account: String,
    pub address: String,
    pub targets: Vec<(i64, Vec<u8>)>,
    /// Some target device is over its pending quota.
    pub full: bool,
}

impl Plan {
    /// The recipient's status in the sender's answer.
    pub fn status(&self) -> &'static str {
        if self.full {
            "mailbox_full"
        } else if self.targets.is_empty() {
            "no_active_devices"
        } else {
            "stored"
        }
    }
}

/// The checks of a send's local recipients, gathered in recipient order.
#[derive(Default)]
pub(crate) struct SendChecks {
    pub plans: Vec<Plan>,
    stale: Vec<StaleRecipient>,
}

impl SendChecks {
    /// Adds one recipient's check.
    pub fn add(&mut self, check: RecipientCheck) {
        match check {
            RecipientCheck::Ready(plan) => self.plans.push(plan),
            RecipientCheck::Stale(recipient) => self.stale.push(recipient),
        }
    }

    /// The plans, unless some recipient was stale or (without remote
    /// recipients to carry the send) every mailbox is full.
    pub fn finish(self, has_remote: bool, limits: &Limits) -> Result<Vec<Plan>, MailboxError> {
        if !self.stale.is_empty() {
            return Err(MailboxError::StaleDevices(self.stale));
        }
        if !has_remote && self.plans.iter().all(|p| p.full) {
            return Err(MailboxError::MailboxFull {
                limit_messages: limits.max_pending_messages_per_device,
                limit_bytes: limits.max_pending_bytes_per_device,
            });
        }
        Ok(self.plans)
    }
}

/// The outcome of checking one local recipient.
pub(crate) enum RecipientCheck {
    Ready(Plan),
    Stale(StaleRecipient),
}

/// What a check needs besides the recipient.
#[derive(Clone, Copy)]
pub(crate) struct CheckRules<'a> {
    pub limits: &'a Limits,
    pub device_inactivity: Duration,
    /// The sending device, which never sends to itself.
    pub exclude: Option<(&'a str, &'a str)>,
    /// The sender's share of each device's quota, and who the sender is
    /// (origin server or local account).
    pub share: Option<(&'a super::share::Share, &'a str)>,
}

pub(crate) use crate::storage::mail::DeviceState;

/// The check itself, on devices already loaded (with any pending counts
/// the caller has added since).
pub(crate) fn evaluate_recipient(
    rules: &CheckRules<'_>,
    address: &Address,
    account: String,
    devices: &[DeviceState],
    wraps: &HashMap<String, Vec<u8>>,
    body_len: i64,
    now: i64,
) -> RecipientCheck {
    let inactive_before = now.saturating_sub(duration_ms(rules.device_inactivity));
    let candidates: Vec<_> = devices
        .iter()
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
        return RecipientCheck::Stale(StaleRecipient {
            address: address.to_string(),
            missing,
            extra,
        });
    }
    let max_messages = i64::from(rules.limits.max_pending_messages_per_device);
    let max_bytes = i64::try_from(rules.limits.max_pending_bytes_per_device).unwrap_or(i64::MAX);
    let mut full = false;
    let mut targets = Vec::new();
    for (row, id, last_seen, pending_messages, pending_bytes) in candidates {
        if *last_seen < inactive_before {
            continue;
        }
        full |=
            *pending_messages >= max_messages || pending_bytes.saturating_add(body_len) > max_bytes;
        if let Some((share, sender)) = rules.share {
            full |= share.over(*row, sender, body_len);
        }
        if let Some(wrap) = wraps.get(id) {
            targets.push((*row, wrap.clone()));
        }
    }
    RecipientCheck::Ready(Plan {
        recipient_account: account,
        address: address.to_string(),
        targets,
        full,
    })
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
}

impl MessageRef<'_> {
    /// The gateway's note of one stored delivery of this message.
    pub(crate) fn new_delivery(
        &self,
        device_row: i64,
        cursor: i64,
        wrap: &[u8],
        now: i64,
    ) -> NewDelivery {
        let inline = self.inline_body.map(|body| SyncItem {
            cursor,
            message_id: self.message_id.to_string(),
            origin: self.origin.to_string(),
            body: body.to_string(),
            key_wrap: crate::crypto::b64(wrap),
            delivery: self.delivery,
            received_at: now,
            expires_at: self.expires_at,
        });
        NewDelivery {
            device_row,
            cursor,
            inline,
        }
    }
}

/// The gateway's notes of the deliveries of `message` to `targets`, with
/// the ids `written` gave them.
pub(crate) fn notes(
    written: &Written,
    message: &MessageRef<'_>,
    targets: &[AccountTargets],
    now: i64,
) -> Result<Vec<NewDelivery>, MailboxError> {
    let mut notes = Vec::new();
    for (device_row, wrap) in targets.iter().flat_map(|(_, t)| t) {
        let cursor = written.cursor(message.row, *device_row)?;
        notes.push(message.new_delivery(*device_row, cursor, wrap, now));
    }
    Ok(notes)
}

/// The devices' pending counts after a delivery of `body_len` bytes to
/// each of `targets`, so that later messages of the same batch are checked
/// against the quota as if the earlier ones were stored already.
pub(crate) fn count_pending(
    devices: &mut [DeviceState],
    targets: &[(i64, Vec<u8>)],
    body_len: i64,
) {
    for device in devices.iter_mut() {
        if targets.iter().any(|(row, _)| *row == device.0) {
            device.3 += 1;
            device.4 = device.4.saturating_add(body_len);
        }
    }
}
