//! `send`, `inbox`, `listen` and `status`: end-to-end encryption happens
//! here, on the device.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::context::{output, CliError, Context, Options, VerifiedIdentity};
use crate::client::store::StoredMessage;
use crate::crypto::envelope::{self, Plaintext};
use crate::crypto::{b64, BoxPublicKey};
use crate::mailbox::{DeliveryMode, RecipientWraps, SendRequest, SyncItem};

fn read_content(
    text: Option<String>,
    file: Option<PathBuf>,
) -> Result<(String, Vec<u8>), CliError> {
    if let Some(text) = text {
        return Ok(("text/plain".into(), text.into_bytes()));
    }
    if let Some(path) = file {
        let bytes = std::fs::read(&path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        return Ok(("application/octet-stream".into(), bytes));
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::Usage(format!("reading stdin: {e}")))?;
    Ok(("text/plain".into(), bytes))
}

/// The devices to encrypt for: each recipient's devices, and this
/// account's other devices so they see what was sent.
async fn targets(context: &Context, to: &[String]) -> Result<Vec<VerifiedIdentity>, CliError> {
    let mut identities = Vec::new();
    for address in to {
        eprintln!("looking up {address} …");
        identities.push(context.verified_identity(address, false).await?);
    }
    if !to.contains(&context.identity.address) {
        let mut own = context
            .verified_identity(&context.identity.address, false)
            .await?;
        own.devices
            .retain(|d| d.device_id.as_str() != context.identity.device_id);
        if !own.devices.is_empty() {
            identities.push(own);
        }
    }
    Ok(identities)
}

fn build_request(
    context: &Context,
    identities: &[VerifiedIdentity],
    plaintext: &Plaintext,
    message_id: &str,
) -> Result<SendRequest, CliError> {
    let box_keys: Vec<BoxPublicKey> = identities
        .iter()
        .flat_map(|identity| identity.devices.iter().map(|d| d.box_key))
        .collect();
    let sealed = envelope::seal(plaintext, &context.device.signing, &box_keys)
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let mut wraps = sealed.wraps.into_iter();
    let mut recipients = Vec::with_capacity(identities.len());
    for identity in identities {
        let mut devices = Vec::with_capacity(identity.devices.len());
        for device in &identity.devices {
            let (_, wrap) = wraps
                .next()
                .ok_or_else(|| CliError::Crypto("fewer key wraps than devices".into()))?;
            devices.push(crate::mailbox::DeviceWrap {
                device_id: device.device_id.to_string(),
                key_wrap: b64(&wrap),
            });
        }
        recipients.push(RecipientWraps {
            address: identity.address.clone(),
            devices,
        });
    }
    Ok(SendRequest {
        message_id: message_id.to_string(),
        body: b64(&sealed.body),
        delivery: DeliveryMode::All,
        recipients,
    })
}

pub async fn send(
    options: &Options,
    to: &[String],
    text: Option<String>,
    file: Option<PathBuf>,
) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let (content_type, content) = read_content(text, file)?;
    let to: Vec<String> = to.iter().map(|a| a.to_ascii_lowercase()).collect();
    let plaintext = Plaintext {
        from: context.identity.address.clone(),
        from_device: context.device.device_id.clone(),
        to: to.clone(),
        sent_at: crate::time::now_ms(),
        thread: None,
        content_type,
        content,
    };
    let message_id = crate::client::new_message_id();
    let mut identities = targets(&context, &to).await?;
    let request = build_request(&context, &identities, &plaintext, &message_id)?;
    let response = match context.server.send(&request).await {
        Err(error) if error.code() == Some("stale_devices") => {
            // Someone added or removed a device since we looked: look again
            // and encrypt for the new set, once.
            eprintln!("device lists changed; encrypting again …");
            identities = targets(&context, &to).await?;
            let request = build_request(&context, &identities, &plaintext, &message_id)?;
            context.server.send(&request).await?
        }
        other => other?,
    };
    let value = serde_json::to_value(&response).unwrap_or(Value::Null);
    output(options, &value, || {
        out!("{}", response.message_id);
        for recipient in &response.recipients {
            eprintln!("  {}: {}", recipient.address, recipient.status);
        }
    });
    Ok(())
}

/// Opens and verifies one delivery.
async fn open_item(
    context: &Context,
    item: &SyncItem,
    senders: &mut HashMap<String, VerifiedIdentity>,
) -> Result<StoredMessage, String> {
    let wrap = URL_SAFE_NO_PAD
        .decode(&item.key_wrap)
        .map_err(|_| "key wrap is not base64url")?;
    let body = URL_SAFE_NO_PAD
        .decode(&item.body)
        .map_err(|_| "body is not base64url")?;
    let key = envelope::unwrap_key(&wrap, &context.device.box_secret).map_err(|e| e.to_string())?;
    let signed = envelope::open(&body, &key).map_err(|e| e.to_string())?;
    let (from, from_device) = signed.claimed_sender();
    let (from, from_device) = (from.to_string(), from_device.clone());
    if !senders.contains_key(&from) {
        let identity = context
            .verified_identity(&from, false)
            .await
            .map_err(|e| e.to_string())?;
        senders.insert(from.clone(), identity);
    }
    let sender = &senders[&from];
    let device = sender
        .devices
        .iter()
        .find(|d| d.device_id == from_device)
        .ok_or_else(|| format!("{from} has no device {from_device}"))?;
    let plaintext = signed.verify(&device.sign_key).map_err(|e| e.to_string())?;
    let content = if plaintext.content_type == "text/plain" {
        String::from_utf8_lossy(&plaintext.content).into_owned()
    } else {
        b64(&plaintext.content)
    };
    Ok(StoredMessage {
        message_id: item.message_id.clone(),
        from: plaintext.from,
        from_device: plaintext.from_device.to_string(),
        to: plaintext.to,
        sent_at: plaintext.sent_at,
        received_at: item.received_at,
        content_type: plaintext.content_type,
        content,
    })
}

/// Syncs until nothing is pending: opens, verifies and stores each message
/// durably, then acknowledges. Returns the newly stored messages.
async fn process_pending(context: &Context) -> Result<Vec<StoredMessage>, CliError> {
    let mut senders = HashMap::new();
    let mut fresh = Vec::new();
    loop {
        let page = context.server.sync(0, 100).await?;
        if page.items.is_empty() {
            return Ok(fresh);
        }
        let mut stored = Vec::new();
        let mut done = Vec::new();
        for item in &page.items {
            match open_item(context, item, &mut senders).await {
                Ok(message) => stored.push(message),
                Err(reason) => eprintln!(
                    "warning: dropped message {} that did not verify: {reason}",
                    item.message_id
                ),
            }
            done.push(item.message_id.clone());
        }
        // On disk before the server may forget it.
        context.store.append_messages(&stored)?;
        context.server.ack(&done).await?;
        fresh.extend(stored);
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

pub async fn inbox(options: &Options, only_new: bool) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let fresh = process_pending(&context).await?;
    let shown = if only_new {
        fresh
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

pub async fn listen(options: &Options, count: Option<usize>) -> Result<(), CliError> {
    let mut context = Context::load(options).await?;
    let mut printed = 0usize;
    let show = |messages: Vec<StoredMessage>, printed: &mut usize| {
        for message in messages {
            if options.json {
                out!("{}", serde_json::to_string(&message).unwrap_or_default());
            } else {
                print_message(&message);
            }
            *printed += 1;
        }
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        show(process_pending(&context).await?, &mut printed);
        if count.is_some_and(|n| printed >= n) {
            return Ok(());
        }
        let mut socket = match context.server.gateway(0).await {
            Ok(socket) => socket,
            Err(error) => {
                eprintln!("gateway: {error}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                context.sign_in(true).await.ok();
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        while let Some(frame) = socket.next().await {
            let Ok(tokio_tungstenite::tungstenite::Message::Text(text)) = frame else {
                if frame.is_err() {
                    break;
                }
                continue;
            };
            let event: Value = serde_json::from_str(&text).unwrap_or(json!({}));
            if event["type"] == "DM_NOTIFY" {
                show(process_pending(&context).await?, &mut printed);
                if count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
    }
}

pub async fn status(options: &Options, message_id: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let status = context.server.status(message_id).await?;
    output(options, &status, || {
        for recipient in status["recipients"].as_array().into_iter().flatten() {
            out!(
                "{:<40} {}",
                recipient["recipient"].as_str().unwrap_or("?"),
                recipient["state"].as_str().unwrap_or("?")
            );
        }
    });
    Ok(())
}
