//! `send` and `status`: end-to-end encryption happens here, on the device
//! (receiving is in `receive`).

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use super::context::{output, CliError, Context, Options, VerifiedIdentity};
use super::outbox;
use crate::crypto::envelope::{self, Plaintext};
use crate::crypto::{b64, BoxPublicKey};
use crate::wire::{DeliveryMode, RecipientWraps, SendRequest};

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

pub(super) fn build_request(
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
            devices.push(crate::wire::DeviceWrap {
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
    let message_id = crate::new_message_id();
    let mut identities = targets(&context, &to).await?;
    let mut request = build_request(&context, &identities, &plaintext, &message_id)?;
    let response = match context.server.send(&request).await {
        Err(error) if error.code() == Some("stale_devices") => {
            // Someone added or removed a device since we looked: look again
            // and encrypt for the new set, once.
            eprintln!("device lists changed; encrypting again …");
            identities = targets(&context, &to).await?;
            request = build_request(&context, &identities, &plaintext, &message_id)?;
            context.server.send(&request).await?
        }
        other => other?,
    };
    // Recipients on other servers are checked there, when the message
    // arrives: wait a little for their servers' answers (see `outbox`).
    let resends = outbox::after_send(
        &context,
        &plaintext,
        &message_id,
        outbox::queued(&request, &response),
    )
    .await;
    let mut value = serde_json::to_value(&response).unwrap_or(Value::Null);
    if !resends.is_empty() {
        value["resent"] = serde_json::to_value(&resends).unwrap_or(Value::Null);
    }
    output(options, &value, || {
        out!("{}", response.message_id);
        for recipient in &response.recipients {
            eprintln!("  {}: {}", recipient.address, recipient.status);
        }
        for resend in &resends {
            eprintln!("  {}", resend.describe());
        }
    });
    Ok(())
}

/// `homing status` without an id: every change to this account's sent
/// messages since the last time, from the server's delivery feed, and
/// the place to go on from next time.
pub async fn changes(options: &Options) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let (events, since) = unread_changes(&context, "status").await?;
    let listed = Value::Array(events);
    output(options, &listed, || {
        if listed.as_array().is_some_and(Vec::is_empty) {
            out!("no changes since you last looked");
        }
        for event in listed.as_array().into_iter().flatten() {
            out!(
                "{}  {:<24} {:<40} {}",
                crate::time::format_rfc3339(event["updated_at"].as_i64().unwrap_or(0)),
                event["message_id"].as_str().unwrap_or("?"),
                event["recipient"].as_str().unwrap_or("?"),
                event["state"].as_str().unwrap_or("?"),
            );
        }
    });
    // Only once shown: a run that failed to print shows them again.
    if let Some(cursor) = since {
        context.store.save_feed_cursor("status", &cursor)?;
    }
    Ok(())
}

/// The delivery feed's changes `reader` has not seen, and the cursor to
/// save once they are shown.
pub(super) async fn unread_changes(
    context: &Context,
    reader: &str,
) -> Result<(Vec<Value>, Option<String>), CliError> {
    let mut since = context.store.feed_cursor(reader)?;
    let mut events = Vec::new();
    loop {
        let page = context.server.feed(since.as_deref()).await?;
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        since = page["cursor"].as_str().map(str::to_string);
        if page["more"] != Value::Bool(true) {
            return Ok((events, since));
        }
    }
}

/// `homing recall`: takes a sent message back where nobody has read it.
pub async fn recall(options: &Options, message_id: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let answer = context.server.recall(message_id).await?;
    output(options, &answer, || {
        for recipient in answer["recipients"].as_array().into_iter().flatten() {
            let state = recipient["state"].as_str().unwrap_or("?");
            let note = match state {
                "recalled" => "taken back",
                "delivered" => "already read: it stays with them",
                "recalling" => "their server is asked to take it back (homing status tells)",
                "not_recalled" => "their server had nothing of it left unread",
                _ => "",
            };
            out!(
                "{:<40} {state:<12} {note}",
                recipient["recipient"].as_str().unwrap_or("?"),
            );
        }
    });
    Ok(())
}

pub async fn status(options: &Options, message_id: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let resends = outbox::settle_quietly(&context).await;
    let mut status = context.server.status(message_id).await?;
    let resent: Vec<_> = resends
        .iter()
        .filter(|r| r.first_id == message_id || r.replaces == message_id)
        .collect();
    if !resent.is_empty() {
        status["resent"] = serde_json::to_value(&resent).unwrap_or(Value::Null);
    }
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
