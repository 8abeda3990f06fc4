//! Sent messages awaiting the answer of a remote recipient's server.
//!
//! A remote server checks the key wraps against the recipient's devices
//! only when the message reaches it. If the recipient added or removed a
//! device after our home server cached its list, the answer is
//! `stale_devices`, and the message would never reach the new device. So a
//! send with remote recipients is kept on this device (`outgoing.json`)
//! until their servers answered: `homing send` waits a few seconds for
//! that, and `homing inbox` and `homing status` look again later. On
//! `stale_devices` the message is encrypted again for the recipient's
//! current devices, looked up afresh (the home server dropped its cached
//! copy when the answer came), and sent to that recipient under a new id;
//! the old id's status keeps the refusal.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use serde_json::Value;

use super::context::{CliError, Context, VerifiedIdentity};
use super::messaging::build_request;
use super::receive::transient;
use crate::crypto::b64;
use crate::crypto::envelope::Plaintext;
use crate::store::Outgoing;
use crate::wire::SendRequest;

/// How long `homing send` waits for remote servers' answers.
const WAIT: Duration = Duration::from_secs(5);
/// How often it asks for the status meanwhile.
const POLL: Duration = Duration::from_millis(200);
/// Resends per message: a remote that keeps refusing is not chased.
const MAX_RESENDS: u32 = 3;

/// A recipient's server refused a message as encrypted for stale devices.
#[derive(Debug, Clone, Serialize)]
pub struct Resend {
    pub address: String,
    /// The id the remote refused.
    pub replaces: String,
    /// The first id of the message, which `homing send` printed.
    pub first_id: String,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    /// The new id it was sent under; absent when it was not sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Why it was not sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Resend {
    /// One line for the person at the terminal.
    pub fn describe(&self) -> String {
        let devices = format!(
            "missing [{}], extra [{}]",
            self.missing.join(", "),
            self.extra.join(", ")
        );
        match (&self.message_id, &self.problem) {
            (Some(id), _) => format!(
                "{}: its devices changed ({devices}); sent again as {id}",
                self.address
            ),
            (None, problem) => format!(
                "{}: its devices changed ({devices}); not sent again: {}",
                self.address,
                problem.as_deref().unwrap_or("unknown reason")
            ),
        }
    }
}

/// Keeps a just-sent message whose remote recipients (`waiting`, with the
/// device ids their key wraps were for) have not been answered for, and
/// waits up to `WAIT` for their answers. The message is sent already, so
/// a failure here is reported, not returned.
pub async fn after_send(
    context: &Context,
    plaintext: &Plaintext,
    message_id: &str,
    waiting: BTreeMap<String, Vec<String>>,
) -> Vec<Resend> {
    if waiting.is_empty() {
        return Vec::new();
    }
    let kept = Outgoing {
        message_id: message_id.to_string(),
        first_id: message_id.to_string(),
        resends: 0,
        waiting,
        to: plaintext.to.clone(),
        sent_at: plaintext.sent_at,
        thread: plaintext.thread.clone(),
        content_type: plaintext.content_type.clone(),
        content: b64(&plaintext.content),
    };
    let waited = async {
        let mut outgoing = context.store.outgoing()?;
        outgoing.push(kept);
        context.store.save_outgoing(&outgoing)?;
        wait(context, message_id).await
    };
    waited.await.unwrap_or_else(|error| {
        eprintln!("could not follow up on the other servers' answers: {error}");
        Vec::new()
    })
}

/// The remote recipients of `request` its answer left `queued`, with the
/// device ids their key wraps were for.
pub fn queued(
    request: &SendRequest,
    response: &crate::wire::SendResponse,
) -> BTreeMap<String, Vec<String>> {
    response
        .recipients
        .iter()
        .filter(|r| r.status == "queued")
        .filter_map(|r| {
            let sent = request.recipients.iter().find(|s| s.address == r.address)?;
            let devices = sent.devices.iter().map(|d| d.device_id.clone()).collect();
            Some((r.address.clone(), devices))
        })
        .collect()
}

/// Waits up to `WAIT` for the remote answers to the message first sent as
/// `first_id`, sending again where they say `stale_devices`. What is not
/// answered by then stays kept for `homing inbox` and `homing status`.
async fn wait(context: &Context, first_id: &str) -> Result<Vec<Resend>, CliError> {
    let deadline = Instant::now() + WAIT;
    let mut resends = Vec::new();
    loop {
        resends.extend(settle(context, Some(first_id)).await?);
        let waiting = context
            .store
            .outgoing()?
            .iter()
            .any(|o| o.first_id == first_id);
        if !waiting || Instant::now() + POLL > deadline {
            return Ok(resends);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Looks once at every kept message (or those first sent as `only`):
/// forgets recipients whose servers answered, sends again to those that
/// answered `stale_devices`, and keeps the rest.
pub async fn settle(context: &Context, only: Option<&str>) -> Result<Vec<Resend>, CliError> {
    let kept = context.store.outgoing()?;
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let mut still = Vec::with_capacity(kept.len());
    let mut resends = Vec::new();
    for entry in kept {
        if only.is_some_and(|id| id != entry.first_id) {
            still.push(entry);
            continue;
        }
        let (left, sent) = settle_one(context, entry).await?;
        still.extend(left);
        resends.extend(sent);
    }
    context.store.save_outgoing(&still)?;
    Ok(resends)
}

/// What is left of `entry` after one look (itself, and a resend), and the
/// resends made. A failure to reach the home server leaves it as it was.
async fn settle_one(
    context: &Context,
    mut entry: Outgoing,
) -> Result<(Vec<Outgoing>, Vec<Resend>), CliError> {
    let status = match context.server.status(&entry.message_id).await {
        Ok(status) => status,
        // The server forgot the message: nothing more will be learnt.
        Err(error) if error.code() == Some("unknown_message") => return Ok((vec![], vec![])),
        // Kept quietly for the next look: `send` asks every few hundred
        // milliseconds, and an unreachable server shows in the command's
        // own requests.
        Err(_) => return Ok((vec![entry], vec![])),
    };
    let mut stale = Vec::new();
    entry.waiting.retain(|address, devices| {
        let state = status["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["recipient"].as_str() == Some(address.as_str()));
        match state.and_then(|r| r["state"].as_str()) {
            Some("queued") => true,
            Some("stale_devices") => {
                let ids = |field: &str| -> Vec<String> {
                    state
                        .and_then(|r| r[field].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                };
                stale.push(Stale {
                    address: address.clone(),
                    sent: devices.clone(),
                    missing: ids("missing"),
                    extra: ids("extra"),
                });
                false
            }
            _ => false,
        }
    });
    let (resent, resends) = if stale.is_empty() {
        (None, Vec::new())
    } else {
        send_again(context, &mut entry, stale).await?
    };
    let mut left: Vec<Outgoing> = resent.into_iter().collect();
    if !entry.waiting.is_empty() {
        left.push(entry);
    }
    Ok((left, resends))
}

/// A recipient whose server answered `stale_devices`.
struct Stale {
    address: String,
    /// The device ids the refused key wraps were for.
    sent: Vec<String>,
    missing: Vec<String>,
    extra: Vec<String>,
}

/// Encrypts `entry` again for the current devices of the `stale`
/// recipients whose device lists changed, and sends it to them under a new
/// id. Returns what to wait for now, and a `Resend` per recipient dealt
/// with; a recipient that could not be dealt with for a passing failure
/// goes back into `entry.waiting`, to be tried on the next look.
async fn send_again(
    context: &Context,
    entry: &mut Outgoing,
    stale: Vec<Stale>,
) -> Result<(Option<Outgoing>, Vec<Resend>), CliError> {
    let mut identities: Vec<VerifiedIdentity> = Vec::new();
    let mut resends = Vec::new();
    let mut retry = BTreeMap::new();
    let mut refused = BTreeMap::new();
    for stale in stale {
        let mut resend = Resend {
            address: stale.address.clone(),
            replaces: entry.message_id.clone(),
            first_id: entry.first_id.clone(),
            missing: stale.missing,
            extra: stale.extra,
            message_id: None,
            problem: None,
        };
        if entry.resends >= MAX_RESENDS {
            resend.problem = Some(format!("it was sent again {MAX_RESENDS} times already"));
            resends.push(resend);
            continue;
        }
        match context.verified_identity(&stale.address, false).await {
            Ok(identity) => {
                let mut now: Vec<String> = identity
                    .devices
                    .iter()
                    .map(|d| d.device_id.to_string())
                    .collect();
                let mut before = stale.sent.clone();
                now.sort();
                before.sort();
                if now == before {
                    resend.problem = Some("its device list has not changed here".into());
                } else {
                    identities.push(identity);
                    refused.insert(stale.address.clone(), stale.sent.clone());
                }
            }
            Err(CliError::Store(error)) => return Err(error.into()),
            Err(error) if transient(&error) => {
                retry.insert(stale.address, stale.sent);
                continue;
            }
            Err(error) => resend.problem = Some(error.to_string()),
        }
        resends.push(resend);
    }
    if identities.is_empty() {
        entry.waiting.extend(retry);
        return Ok((None, resends));
    }
    let plaintext = plaintext(context, entry)?;
    let message_id = crate::new_message_id();
    let request = build_request(context, &identities, &plaintext, &message_id)?;
    match context.server.send(&request).await {
        Ok(response) => {
            for resend in resends.iter_mut().filter(|r| r.problem.is_none()) {
                resend.message_id = Some(message_id.clone());
            }
            let waiting = queued(&request, &response);
            entry.waiting.extend(retry);
            let kept = (!waiting.is_empty()).then(|| Outgoing {
                message_id,
                resends: entry.resends + 1,
                waiting,
                ..entry.clone()
            });
            Ok((kept, resends))
        }
        Err(error) => {
            let error = CliError::from(error);
            if transient(&error) {
                // Nothing was stored: try again on the next look.
                retry.extend(refused);
                resends.retain(|r| r.problem.is_some());
            } else {
                for resend in resends.iter_mut().filter(|r| r.problem.is_none()) {
                    resend.problem = Some(error.to_string());
                }
            }
            entry.waiting.extend(retry);
            Ok((None, resends))
        }
    }
}

/// The message as this device wrote it.
fn plaintext(context: &Context, entry: &Outgoing) -> Result<Plaintext, CliError> {
    let content = URL_SAFE_NO_PAD
        .decode(&entry.content)
        .map_err(|e| CliError::Crypto(format!("a kept message is damaged: {e}")))?;
    Ok(Plaintext {
        from: context.identity.address.clone(),
        from_device: context.device.device_id.clone(),
        to: entry.to.clone(),
        sent_at: entry.sent_at,
        thread: entry.thread.clone(),
        content_type: entry.content_type.clone(),
        content,
    })
}

/// `settle` for commands whose own work comes first: failures are
/// reported, not fatal, and the kept messages stay for the next run.
pub async fn settle_quietly(context: &Context) -> Vec<Resend> {
    match settle(context, None).await {
        Ok(resends) => {
            for resend in &resends {
                eprintln!("{}", resend.describe());
            }
            resends
        }
        Err(error) => {
            eprintln!("could not check sent messages awaiting other servers: {error}");
            Vec::new()
        }
    }
}
