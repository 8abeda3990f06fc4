//! Accepting a message: validate it, check each local recipient's device
//! set and quotas, queue remote recipients per destination server, and
//! commit the body, its deliveries, outbox rows, the sender's receipts and
//! the idempotency record in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;

use super::deliver::{check_recipient, store_deliveries, CheckRules, MessageRef, Plan, SendChecks};
use super::{
    valid_message_id, Isolation, MailboxError, NewDelivery, RecipientStatus, RecipientWraps,
    SendRequest, SendResponse,
};
use crate::address::{Address, ServerName};
use crate::config::{FederationSettings, Limits};
use crate::crypto::identity::MAX_DEVICES;
use crate::storage::schema::{delivery_receipts, messages, outbox, send_idempotency};
use crate::storage::{is_unique_violation, DbConnection, StorageError};
use crate::time::duration_ms;
use crate::with_backend;

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

/// Stores a prepared send inside the group commit's transaction. A refused
/// send (stale devices, a reused id) writes nothing. In a savepoint of its
/// own, a send that loses a race for its id is answered from the record.
pub fn send_within(
    conn: &mut DbConnection,
    isolation: Isolation,
    context: &SendContext,
    sender: &Sender,
    prepared: &PreparedSend,
) -> Result<SendOutcome, MailboxError> {
    use diesel::Connection;
    let (request, parsed) = (&prepared.request, &prepared.parsed);
    let attempt = |conn: &mut DbConnection| {
        if let Some(outcome) = replay(conn, sender, request, parsed)? {
            return Ok(outcome);
        }
        store(conn, context, sender, request, parsed)
    };
    if isolation == Isolation::Shared {
        // A unique violation fails the batch, which runs again with
        // savepoints and lands in the arm below.
        return attempt(conn);
    }
    match conn.transaction(attempt) {
        Err(MailboxError::Storage(StorageError::Query(error))) if is_unique_violation(&error) => {
            // A concurrent identical retry won, or another sender of this
            // server took the id: the record tells which.
            // In a savepoint too: a failure here must not abort the group
            // commit's transaction for the sends after this one.
            conn.transaction(|conn| replay(conn, sender, request, parsed))?
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
    // At most one row (a unique key): `load` rather than `first`, whose
    // LIMIT parameter makes SQLite re-prepare the statement on every run.
    let record: Option<(Vec<u8>, String)> = with_backend!(conn, c => send_idempotency::table
        .find((&sender.account_key, &request.message_id))
        .select((send_idempotency::request_digest, send_idempotency::response))
        .load(c))?
    .into_iter()
    .next();
    let Some((digest, response)) = record else {
        return Ok(None);
    };
    answer_from_record(&digest, &response, request, parsed).map(Some)
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

fn store(
    conn: &mut DbConnection,
    context: &SendContext,
    sender: &Sender,
    request: &SendRequest,
    parsed: &Parsed,
) -> Result<SendOutcome, MailboxError> {
    let now = crate::time::now_ms();
    let body_len = i64::try_from(parsed.body.len()).unwrap_or(i64::MAX);
    let rules = CheckRules {
        limits: &context.limits,
        device_inactivity: context.device_inactivity,
        exclude: Some((&sender.account_key, &sender.device_id)),
        share: None,
    };
    let mut checks = SendChecks::default();
    let mut remote = RemoteRecipients::new();
    for (recipient, wraps) in parsed.recipients.iter().zip(&request.recipients) {
        if !context.local_names.contains(recipient.address.server()) {
            let destination = recipient.address.server();
            if !crate::federation::policy::is_allowed(conn, &context.federation, destination)? {
                return Err(MailboxError::FederationDenied(destination.to_string()));
            }
            queue_remote(&mut remote, recipient, wraps);
            continue;
        }
        let check = check_recipient(
            conn,
            &rules,
            &recipient.address,
            &recipient.wraps,
            body_len,
            now,
        )?;
        checks.add(check, &recipient.address)?;
    }
    let plans = checks.finish(!remote.is_empty(), &context.limits)?;
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
    let origin = context.server_name.to_string();
    let message = MessageRef {
        row: message_row,
        message_id: &request.message_id,
        origin: &origin,
        inline_body: (parsed.body.len() <= context.inline_max_bytes)
            .then_some(request.body.as_str()),
        delivery: request.delivery,
        expires_at,
        body_len,
    };
    let mut new_deliveries = Vec::new();
    let mut statuses = Vec::with_capacity(parsed.recipients.len());
    for plan in &plans {
        let status = plan.status();
        statuses.push(RecipientStatus {
            address: plan.address.clone(),
            status: status.into(),
        });
    }
    // Devices are locked in one global order (accounts, then device rows),
    // so two sends on this path cannot deadlock each other. The batch path
    // (`send_batch`) writes in its own order; if it deadlocks with a send
    // here, the database aborts one of them and the batch runs again one
    // send per savepoint, through this path.
    let mut ordered: Vec<&Plan> = plans.iter().filter(|plan| !plan.full).collect();
    ordered.sort_by(|a, b| a.recipient_account.cmp(&b.recipient_account));
    for plan in ordered {
        new_deliveries.extend(store_deliveries(conn, &message, plan, now)?);
    }
    for (destination, recipients) in &remote {
        crate::federation::outbox::ensure_destination(conn, destination)?;
        let encoded = serde_json::to_string(recipients).map_err(|e| invalid(e.to_string()))?;
        with_backend!(conn, c => diesel::insert_into(outbox::table)
            .values((
                outbox::message_row.eq(message_row),
                outbox::destination.eq(destination),
                outbox::recipients.eq(encoded),
                outbox::created_at.eq(now),
            ))
            .execute(c))?;
        for recipient in recipients {
            statuses.push(RecipientStatus {
                address: recipient.address.clone(),
                status: "queued".into(),
            });
        }
    }
    record_receipts(conn, sender, &request.message_id, &statuses, now)?;
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
        queued_destinations: remote.into_keys().collect(),
        replayed: false,
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

/// The sender's receipt for each recipient, in one statement.
fn record_receipts(
    conn: &mut DbConnection,
    sender: &Sender,
    message_id: &str,
    statuses: &[RecipientStatus],
    now: i64,
) -> Result<(), MailboxError> {
    let rows: Vec<_> = statuses
        .iter()
        .map(|status| {
            (
                delivery_receipts::sender_account.eq(&sender.account_key),
                delivery_receipts::message_id.eq(message_id),
                delivery_receipts::recipient.eq(&status.address),
                delivery_receipts::state.eq(&status.status),
                delivery_receipts::updated_at.eq(now),
                delivery_receipts::created_at.eq(now),
            )
        })
        .collect();
    with_backend!(conn, c => diesel::insert_into(delivery_receipts::table)
        .values(&rows)
        .execute(c))?;
    Ok(())
}
