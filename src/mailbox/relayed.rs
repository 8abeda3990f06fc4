//! Mail relayed by another server: the messages of one inbound transaction
//! checked against their local recipients the way a local send is, and
//! stored together with a few statements (see `storage::mail`), not a
//! handful per message.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::deliver::{count_pending, evaluate_recipient, notes, CheckRules, MessageRef};
use super::share::{Share, Source};
use super::{MailboxError, NewDelivery};
use crate::address::Address;
use crate::config::Limits;
use crate::storage::mail::{self, AccountTargets, DeviceState, NewMessage};
use crate::storage::DbConnection;
use crate::time::duration_ms;
use homing_proto::federation::{MessageResult, RecipientResult, TxnMessage};

/// Server settings that inbound delivery depends on.
#[derive(Debug, Clone)]
pub struct InboundRules {
    /// The server name and public hosts: addresses at any are local.
    pub local_names: crate::address::LocalNames,
    pub limits: Limits,
    pub device_inactivity: Duration,
    pub max_pending_age: Duration,
    pub inline_max_bytes: usize,
}

/// A message of the transaction that will be stored.
struct Storing<'a> {
    message: &'a TxnMessage,
    body: Vec<u8>,
    digest: Vec<u8>,
    expires_at: i64,
    targets: Vec<AccountTargets>,
}

/// Delivers the messages relayed from `origin` in one transaction: a result
/// per message, in order, and the deliveries written. A message already
/// held from this origin (or earlier in the same transaction) is answered
/// `accepted` again and stored nothing twice.
pub fn deliver_relayed(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    batch: &[TxnMessage],
    now: i64,
) -> Result<(Vec<MessageResult>, Vec<NewDelivery>), MailboxError> {
    let decoded: Vec<Option<Vec<u8>>> = batch.iter().map(|m| decode(rules, m)).collect();
    let ids: Vec<&str> = batch
        .iter()
        .zip(&decoded)
        .filter(|(_, body)| body.is_some())
        .map(|(message, _)| message.message_id.as_str())
        .collect();
    let held: HashSet<String> = if ids.is_empty() {
        HashSet::new()
    } else {
        mail::held_already(conn, origin, &ids)?
            .into_iter()
            .collect()
    };
    let mut aliases: Vec<String> = Vec::new();
    for (message, _) in batch.iter().zip(&decoded).filter(|(_, b)| b.is_some()) {
        for recipient in &message.recipients {
            if let Ok(address) = Address::parse(&recipient.address) {
                if rules.local_names.contains(address.server()) {
                    aliases.push(address.alias().to_string());
                }
            }
        }
    }
    aliases.sort_unstable();
    aliases.dedup();
    let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
    let mut known = mail::load_recipients(conn, &aliases)?;
    let devices = known.values().flat_map(|(_, devices)| devices.iter());
    let mut share = Share::load(conn, &rules.limits, Source::Origin, &[origin], devices)?;
    let mut results: Vec<MessageResult> = Vec::with_capacity(batch.len());
    // The first copy of each message id in this transaction, by position.
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut storing = Vec::new();
    for (message, body) in batch.iter().zip(decoded) {
        let Some(body) = body else {
            results.push(all(message, "invalid"));
            continue;
        };
        if held.contains(&message.message_id) {
            results.push(all(message, "accepted"));
            continue;
        }
        // A second copy in the same transaction gets the first one's answer.
        if let Some(&index) = first.get(message.message_id.as_str()) {
            let again = results[index].clone();
            results.push(again);
            continue;
        }
        first.insert(&message.message_id, results.len());
        let sender = (origin, &mut share);
        let (result, targets, any_accepted) = check(rules, message, &body, &mut known, sender, now);
        results.push(result);
        if any_accepted {
            let cap = now.saturating_add(duration_ms(rules.max_pending_age));
            storing.push(Storing {
                message,
                digest: <sha2::Sha256 as sha2::Digest>::digest(&body).to_vec(),
                body,
                // Never past this server's cap, never already over.
                expires_at: message.expires_at.min(cap).max(now + 1),
                targets,
            });
        }
    }
    let created = store(conn, rules, origin, &storing, now)?;
    Ok((results, created))
}

/// The body, when the message is well formed; `None` answers `invalid`.
fn decode(rules: &InboundRules, message: &TxnMessage) -> Option<Vec<u8>> {
    let body = URL_SAFE_NO_PAD.decode(&message.body).ok()?;
    let valid = super::valid_message_id(&message.message_id)
        && !body.is_empty()
        && body.len() <= rules.limits.max_message_bytes
        && !message.recipients.is_empty()
        && message.recipients.len() <= super::send::MAX_RECIPIENTS;
    valid.then_some(body)
}

/// The address as the answer names it: only a valid one is repeated (at
/// most 320 characters), so the answer and its record stay small whatever
/// a peer sends; an invalid one is answered by its position alone.
fn echo(address: &str) -> String {
    match Address::parse(address) {
        Ok(_) => address.to_string(),
        Err(_) => String::new(),
    }
}

fn all(message: &TxnMessage, status: &str) -> MessageResult {
    MessageResult {
        message_id: message.message_id.clone(),
        recipients: message
            .recipients
            .iter()
            .map(|r| RecipientResult::new(echo(&r.address), status))
            .collect(),
    }
}

/// Each recipient's result, the devices to deliver to, and whether any
/// recipient accepted the message. Counts the deliveries into `known`, so
/// the next message of the transaction meets the quota as they leave it.
fn check(
    rules: &InboundRules,
    message: &TxnMessage,
    body: &[u8],
    known: &mut HashMap<String, (String, Vec<DeviceState>)>,
    (origin, share): (&str, &mut Share),
    now: i64,
) -> (MessageResult, Vec<AccountTargets>, bool) {
    let body_len = i64::try_from(body.len()).unwrap_or(i64::MAX);
    let mut results = Vec::with_capacity(message.recipients.len());
    let mut targets = Vec::new();
    let mut any_accepted = false;
    for recipient in &message.recipients {
        let address = match Address::parse(&recipient.address) {
            Ok(address) if rules.local_names.contains(address.server()) => address,
            Ok(_) => {
                results.push(RecipientResult::new(recipient.address.clone(), "not_local"));
                continue;
            }
            Err(_) => {
                results.push(RecipientResult::new(echo(&recipient.address), "invalid"));
                continue;
            }
        };
        let mut wraps = HashMap::new();
        for device in &recipient.devices {
            if let Ok(wrap) = URL_SAFE_NO_PAD.decode(&device.key_wrap) {
                if !wrap.is_empty() && wrap.len() <= super::send::MAX_KEY_WRAP_BYTES {
                    wraps.insert(device.device_id.clone(), wrap);
                }
            }
        }
        let Some((account, devices)) = known.get_mut(address.alias().as_str()) else {
            results.push(RecipientResult::new(
                address.to_string(),
                "unknown_recipient",
            ));
            continue;
        };
        let check_rules = CheckRules {
            limits: &rules.limits,
            device_inactivity: rules.device_inactivity,
            exclude: None,
            share: Some((&*share, origin)),
        };
        let evaluated = evaluate_recipient(
            &check_rules,
            &address,
            account.clone(),
            devices,
            &wraps,
            body_len,
            now,
        );
        match evaluated {
            super::deliver::RecipientCheck::Stale(stale) => results.push(RecipientResult {
                address: stale.address,
                status: "stale_devices".into(),
                missing: stale.missing,
                extra: stale.extra,
            }),
            super::deliver::RecipientCheck::Ready(plan) if plan.full => {
                results.push(RecipientResult::new(plan.address, "mailbox_full"))
            }
            super::deliver::RecipientCheck::Ready(plan) => {
                results.push(RecipientResult::new(plan.address, "accepted"));
                count_pending(devices, &plan.targets, body_len);
                share.count(&plan.targets, origin, body_len);
                any_accepted = true;
                targets.push((plan.recipient_account, plan.targets));
            }
        }
    }
    let result = MessageResult {
        message_id: message.message_id.clone(),
        recipients: results,
    };
    (result, targets, any_accepted)
}

/// Writes the accepted messages and returns the gateway's notes.
fn store(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    storing: &[Storing<'_>],
    now: i64,
) -> Result<Vec<NewDelivery>, MailboxError> {
    let batch: Vec<NewMessage<'_>> = storing
        .iter()
        .map(|one| NewMessage {
            origin,
            message_id: &one.message.message_id,
            sender: None,
            digest: &one.digest,
            body: &one.body,
            delivery: one.message.delivery,
            expires_at: one.expires_at,
            targets: &one.targets,
        })
        .collect();
    let written = mail::insert(conn, &batch, &mail::Beside::default(), now)?;
    let mut created = Vec::new();
    for (one, &message_row) in storing.iter().zip(&written.message_rows) {
        let reference = MessageRef {
            row: message_row,
            message_id: &one.message.message_id,
            origin,
            inline_body: (one.body.len() <= rules.inline_max_bytes)
                .then_some(one.message.body.as_str()),
            delivery: one.message.delivery,
            expires_at: one.expires_at,
        };
        created.extend(notes(&written, &reference, &one.targets, now)?);
    }
    Ok(created)
}
