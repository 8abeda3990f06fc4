//! `inbox` and `listen`: receiving treats the home server as an adversary
//! that may also simply be down. A delivery is acknowledged (and so deleted
//! by the server) only once it is stored on this device: as a verified
//! message, held unread until it can be checked again, or quarantined with
//! the reason it was refused. What cannot be checked now (a server or
//! network failure) stays on the server for the next run.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::context::{CliError, Context, Options, VerifiedIdentity};
use crate::api::{ClientError, GatewaySocket};
use crate::crypto::b64;
use crate::crypto::envelope;
use crate::media_type::is_utf8_text;
use crate::store::{KeptMessage, Store, StoredMessage};
use crate::wire::SyncItem;

/// Deliveries asked for per sync.
const PAGE: i64 = 100;
/// Longest wait before `listen` tries deferred deliveries again.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// What became of one delivery.
enum Outcome {
    /// Verified and addressed to this account.
    Accepted(StoredMessage),
    /// Kept on the device, unread, until it can be checked again.
    Held(KeptMessage),
    /// Refused for good; kept in the quarantine with the reason.
    Refused(KeptMessage),
    /// Not checkable now; left on the server.
    Deferred(String),
}

/// What a look-up of a claimed sender allows.
#[derive(Clone)]
enum Sender {
    Found(Box<VerifiedIdentity>),
    Hold(String),
    Refuse(String),
    Defer(String),
}

/// Sorts a failed look-up of `address`: only answers that say the sender
/// does not exist refuse the message; a changed key holds it for the
/// user's decision; anything else may pass and defers it. Local storage
/// failures end the run.
fn sender_failure(address: &str, error: CliError) -> Result<Sender, CliError> {
    match error {
        CliError::KeyChanged { verified: true, .. } => Ok(Sender::Hold(format!(
            "THE ACCOUNT KEY OF {address} THAT YOU VERIFIED CHANGED: you compared safety \
             numbers for the old key, so treat this as an impersonation until you have talked \
             to them in person or on a call; only then run `homing trust {address}` and \
             compare safety numbers again with `homing verify {address}`"
        ))),
        CliError::KeyChanged { .. } => Ok(Sender::Hold(format!(
            "the account key of {address} changed since it was pinned; \
             check with them another way, then run `homing trust {address}`"
        ))),
        CliError::Server(ClientError::Api { code, message, .. })
            if matches!(
                code.as_str(),
                "unknown_identity" | "invalid_address" | "federation_denied"
            ) =>
        {
            Ok(Sender::Refuse(format!(
                "the sender {address} cannot be looked up: {message} [{code}]"
            )))
        }
        CliError::Store(_) => Err(error),
        other => Ok(Sender::Defer(format!("looking up {address}: {other}"))),
    }
}

/// Whether an error talking to the home server may pass with time.
pub(super) fn transient(error: &CliError) -> bool {
    match error {
        CliError::Server(ClientError::Api { status, .. }) => {
            *status >= 500 || matches!(status, 401 | 408 | 429)
        }
        CliError::Server(_) => true,
        _ => false,
    }
}

fn kept(item: &SyncItem, claimed_from: Option<&str>, reason: String) -> KeptMessage {
    KeptMessage {
        item: item.clone(),
        claimed_from: claimed_from.map(str::to_string),
        reason,
        kept_at: crate::time::now_ms(),
    }
}

/// One pass over deliveries, remembering sender look-ups for its length.
struct Receiver<'a> {
    context: &'a Context,
    senders: HashMap<String, Sender>,
}

impl<'a> Receiver<'a> {
    fn new(context: &'a Context) -> Self {
        Self {
            context,
            senders: HashMap::new(),
        }
    }

    async fn sender(&mut self, address: &str) -> Result<Sender, CliError> {
        if let Some(known) = self.senders.get(address) {
            return Ok(known.clone());
        }
        let found = match self.context.verified_identity(address, false).await {
            Ok(identity) => Sender::Found(Box::new(identity)),
            Err(error) => sender_failure(address, error)?,
        };
        self.senders.insert(address.to_string(), found.clone());
        Ok(found)
    }

    /// Opens, verifies and judges one delivery (envelope.md, "Receiving").
    async fn open(&mut self, item: &SyncItem) -> Result<Outcome, CliError> {
        let refuse =
            |from: Option<&str>, reason: String| Outcome::Refused(kept(item, from, reason));
        let (Ok(wrap), Ok(body)) = (
            URL_SAFE_NO_PAD.decode(&item.key_wrap),
            URL_SAFE_NO_PAD.decode(&item.body),
        ) else {
            return Ok(refuse(None, "the delivery is not base64url".into()));
        };
        let signed = match envelope::unwrap_key(&wrap, &self.context.device.box_secret)
            .and_then(|key| envelope::open(&body, &key))
        {
            Ok(signed) => signed,
            Err(error) => return Ok(refuse(None, error.to_string())),
        };
        let (from, from_device) = signed.claimed_sender();
        let (from, from_device) = (from.to_string(), from_device.clone());
        let sender = match self.sender(&from).await? {
            Sender::Found(identity) => identity,
            Sender::Hold(reason) => return Ok(Outcome::Held(kept(item, Some(&from), reason))),
            Sender::Refuse(reason) => return Ok(refuse(Some(&from), reason)),
            Sender::Defer(reason) => return Ok(Outcome::Deferred(reason)),
        };
        let Some(device) = sender.devices.iter().find(|d| d.device_id == from_device) else {
            // A device added moments ago may not be in the list the home
            // server still caches: check again on the next run.
            let reason = format!(
                "{from} has no device {from_device} in its device list (version {})",
                sender.version
            );
            return Ok(Outcome::Held(kept(item, Some(&from), reason)));
        };
        let plaintext = match signed.verify(&device.sign_key) {
            Ok(plaintext) => plaintext,
            Err(error) => return Ok(refuse(Some(&from), error.to_string())),
        };
        let me = &self.context.identity.address;
        if !plaintext.is_for(me) {
            let reason = format!(
                "{from} wrote it to {}, not to {me}: someone forwarded it to this device",
                plaintext.to.join(", ")
            );
            return Ok(refuse(Some(&from), reason));
        }
        let content = if is_utf8_text(&plaintext.content_type) {
            String::from_utf8_lossy(&plaintext.content).into_owned()
        } else {
            b64(&plaintext.content)
        };
        Ok(Outcome::Accepted(StoredMessage {
            message_id: item.message_id.clone(),
            from: plaintext.from,
            from_device: plaintext.from_device.to_string(),
            to: plaintext.to,
            sent_at: plaintext.sent_at,
            received_at: item.received_at,
            content_type: plaintext.content_type,
            content,
        }))
    }

    /// Checks the held deliveries again (after `homing trust`, or once a
    /// new device shows up in its list); returns those now accepted.
    async fn recheck_held(&mut self) -> Result<Vec<StoredMessage>, CliError> {
        let store = &self.context.store;
        let held = store.held()?;
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (mut accepted, mut still, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for kept in held {
            match self.open(&kept.item).await? {
                Outcome::Accepted(message) => accepted.push(message),
                Outcome::Held(again) => still.push(KeptMessage {
                    kept_at: kept.kept_at,
                    ..again
                }),
                Outcome::Refused(refusal) => refused.push(refusal),
                Outcome::Deferred(_) => still.push(kept),
            }
        }
        store.append_messages(&accepted)?;
        store.quarantine(&refused)?;
        store.save_held(&still)?;
        if !still.is_empty() {
            eprintln!(
                "{} message(s) kept unread on this device until they can be checked: \
                 see `homing inbox --quarantine`",
                still.len()
            );
        }
        Ok(accepted)
    }
}

/// What one pass over the pending deliveries did.
#[derive(Default)]
struct Pass {
    accepted: Vec<StoredMessage>,
    /// Deliveries left on the server to try again.
    deferred: usize,
    /// The last sync cursor seen.
    cursor: i64,
}

/// Syncs everything pending: each delivery is stored on this device (as a
/// message, held or quarantined) before it is acknowledged; deferred ones
/// are not acknowledged. With `recheck`, held deliveries are checked again
/// first.
async fn process_pending(context: &Context, recheck: bool) -> Result<Pass, CliError> {
    let mut receiver = Receiver::new(context);
    let mut pass = Pass::default();
    if recheck {
        pass.accepted = receiver.recheck_held().await?;
    }
    loop {
        let page = context.server.sync(pass.cursor, PAGE).await?;
        let (mut accepted, mut held, mut refused, mut done) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for item in &page.items {
            match receiver.open(item).await? {
                Outcome::Accepted(message) => accepted.push(message),
                Outcome::Held(kept) => {
                    eprintln!(
                        "WARNING: message {} (claiming to be from {}) is kept unread on this device: {}",
                        item.message_id,
                        kept.claimed_from.as_deref().unwrap_or("?"),
                        kept.reason
                    );
                    held.push(kept);
                }
                Outcome::Refused(kept) => {
                    eprintln!(
                        "WARNING: message {} refused and quarantined: {} (see `homing inbox --quarantine`)",
                        item.message_id, kept.reason
                    );
                    refused.push(kept);
                }
                Outcome::Deferred(reason) => {
                    eprintln!(
                        "message {} from {} cannot be checked now and stays on the server: {reason}",
                        item.message_id, item.origin
                    );
                    pass.deferred += 1;
                    continue;
                }
            }
            done.push(item.message_id.clone());
        }
        // On this device before the server may forget them.
        context.store.append_messages(&accepted)?;
        context.store.quarantine(&refused)?;
        if !held.is_empty() {
            let mut all = context.store.held()?;
            all.retain(|k| !held.iter().any(|h| h.item.message_id == k.item.message_id));
            all.extend(held);
            context.store.save_held(&all)?;
        }
        if !done.is_empty() {
            context.server.ack(&done).await?;
        }
        pass.accepted.extend(accepted);
        pass.cursor = pass.cursor.max(page.cursor);
        if !page.more || page.items.is_empty() {
            return Ok(pass);
        }
    }
}

fn print_message(message: &StoredMessage) {
    out!(
        "{}  {}  {}",
        crate::time::format_rfc3339(message.sent_at),
        message.from,
        message.content
    );
}

fn deferred_notice(deferred: usize) {
    if deferred > 0 {
        eprintln!(
            "{deferred} message(s) could not be checked now; they stay on the server: \
             run `homing inbox` again later"
        );
    }
}

pub async fn inbox(options: &Options, only_new: bool) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    super::outbox::settle_quietly(&context).await;
    let pass = process_pending(&context, true).await?;
    deferred_notice(pass.deferred);
    bounce_notice(&context).await;
    let shown = if only_new {
        pass.accepted
    } else {
        context.store.messages()?
    };
    if options.json {
        out!("{}", serde_json::to_string(&shown).unwrap_or_default());
    } else if shown.is_empty() {
        out!("no messages");
    } else {
        shown.iter().for_each(print_message);
    }
    Ok(())
}

/// Tells, on standard error, of sent mail that will not arrive and that
/// no earlier `inbox` told of: bounces, expiries, drops and refusals from
/// the delivery feed. Quiet when the feed cannot be read: the inbox
/// itself matters more.
async fn bounce_notice(context: &Context) {
    const UNDELIVERED: [&str; 6] = [
        "bounced",
        "expired",
        "dropped",
        "unknown_recipient",
        "not_local",
        "invalid",
    ];
    let Ok((events, since)) = super::messaging::unread_changes(context, "inbox").await else {
        return;
    };
    for event in &events {
        let state = event["state"].as_str().unwrap_or_default();
        if UNDELIVERED.contains(&state) {
            eprintln!(
                "not delivered: message {} to {}: {state}",
                event["message_id"].as_str().unwrap_or("?"),
                event["recipient"].as_str().unwrap_or("?"),
            );
        }
    }
    if let Some(cursor) = since {
        let _ = context.store.save_feed_cursor("inbox", &cursor);
    }
}

/// `inbox --quarantine`: what this device keeps unread, and why. Local
/// only, so it works while the server is away.
pub fn list_kept(options: &Options) -> Result<(), CliError> {
    let store = Store::locate(options.home.clone());
    store.identity()?;
    let entry = |state: &str, kept: &KeptMessage| {
        json!({
            "state": state,
            "message_id": kept.item.message_id,
            "origin": kept.item.origin,
            "claimed_from": kept.claimed_from,
            "received_at": kept.item.received_at,
            "kept_at": kept.kept_at,
            "reason": kept.reason,
        })
    };
    let mut entries: Vec<Value> = store
        .quarantined()?
        .iter()
        .map(|k| entry("quarantined", k))
        .collect();
    entries.extend(store.held()?.iter().map(|k| entry("held", k)));
    if options.json {
        out!("{}", Value::Array(entries));
    } else if entries.is_empty() {
        out!("nothing quarantined or held");
    } else {
        for entry in &entries {
            out!(
                "{:<11} {}  {}  from {} (via {}): {}",
                entry["state"].as_str().unwrap_or("?"),
                crate::time::format_rfc3339(entry["received_at"].as_i64().unwrap_or(0)),
                entry["message_id"].as_str().unwrap_or("?"),
                entry["claimed_from"].as_str().unwrap_or("?"),
                entry["origin"].as_str().unwrap_or("?"),
                entry["reason"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// How `listen` was woken.
enum Wake {
    /// Something new is pending, or it is time to try deferred ones again.
    Work,
    /// The gateway connection ended.
    Closed,
}

/// Waits for a `DM_NOTIFY`, or until `retry_in` passed.
async fn wait_for_work(socket: &mut GatewaySocket, retry_in: Option<Duration>) -> Wake {
    let timer = async {
        match retry_in {
            Some(wait) => tokio::time::sleep(wait).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    loop {
        tokio::select! {
            () = &mut timer => return Wake::Work,
            frame = socket.next() => match frame {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if event["type"] == "DM_NOTIFY" {
                        return Wake::Work;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Wake::Closed,
            },
        }
    }
}

pub async fn listen(options: &Options, count: Option<usize>) -> Result<(), CliError> {
    let mut context = Context::load(options).await?;
    let mut printed = 0usize;
    let mut backoff = Duration::from_millis(500);
    let mut retry = Duration::from_secs(1);
    let mut recheck = true;
    let mut socket: Option<GatewaySocket> = None;
    loop {
        let pass = match process_pending(&context, recheck).await {
            Ok(pass) => pass,
            Err(error) if transient(&error) => {
                // Nothing was acknowledged that is not stored: wait and
                // sync again.
                eprintln!("{error}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                context.sign_in(true).await.ok();
                socket = None;
                continue;
            }
            Err(error) => return Err(error),
        };
        recheck = false;
        for message in &pass.accepted {
            if options.json {
                out!("{}", serde_json::to_string(message).unwrap_or_default());
            } else {
                print_message(message);
            }
            printed += 1;
        }
        if count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let retry_in = (pass.deferred > 0).then_some(retry);
        retry = if pass.deferred > 0 {
            (retry * 2).min(MAX_RETRY)
        } else {
            Duration::from_secs(1)
        };
        if socket.is_none() {
            match context.server.gateway(pass.cursor).await {
                Ok(connected) => {
                    socket = Some(connected);
                    backoff = Duration::from_millis(500);
                }
                Err(error) => {
                    eprintln!("gateway: {error}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    context.sign_in(true).await.ok();
                    continue;
                }
            }
        }
        if let Some(open) = socket.as_mut() {
            if let Wake::Closed = wait_for_work(open, retry_in).await {
                socket = None;
            }
        }
    }
}
