//! The sends of one group commit stored together: one statement per table
//! for the whole batch instead of a dozen per send. On PostgreSQL every
//! statement is a round trip, so this is what lets one writer keep up with
//! many senders; on SQLite it saves the per-statement work.
//!
//! There is one way to store a send: a batch that fails as a whole (a
//! message id taken by a concurrent send, a deadlock) runs again as
//! batches of one, each in a savepoint (`store_alone`), where each failure
//! is answered on its own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::batch_lookup::{look_up, Found};
use super::deliver::{
    count_pending, evaluate_recipient, notes, CheckRules, MessageRef, SendChecks,
};
use super::send::{
    answer_from_record, queue_remote, PreparedSend, RemoteRecipients, SendContext, SendOutcome,
    Sender,
};
use super::share::{Share, Source};
use super::MailboxError;
use super::{RecipientStatus, SendResponse};
use crate::storage::mail::{self, AccountTargets, Beside, DeviceState, NewMessage, StoredRecord};
use crate::storage::{DbConnection, StorageError};
use crate::time::duration_ms;

/// A send waiting for the group commit: the sends of one batch are stored
/// together.
pub struct SendJob {
    pub(super) context: Arc<SendContext>,
    pub(super) sender: Sender,
    pub(super) prepared: PreparedSend,
    pub(super) result: Option<Result<SendOutcome, MailboxError>>,
}

impl SendJob {
    pub fn new(context: Arc<SendContext>, sender: Sender, prepared: PreparedSend) -> Self {
        Self {
            context,
            sender,
            prepared,
            result: None,
        }
    }
}

impl crate::storage::Batched for SendJob {
    type Output = SendOutcome;
    type Error = MailboxError;

    fn store_together(
        conn: &mut DbConnection,
        items: &mut [&mut Self],
    ) -> Result<(), MailboxError> {
        store_batch(conn, items)
    }

    fn store_alone(&mut self, conn: &mut DbConnection) -> Result<SendOutcome, MailboxError> {
        store_alone(conn, self)
    }

    fn take_result(&mut self) -> Option<Result<SendOutcome, MailboxError>> {
        self.result.take()
    }
}

/// A send that passed its checks, waiting for the batch's writes.
struct Accepted {
    job: usize,
    statuses: Vec<RecipientStatus>,
    targets: Vec<AccountTargets>,
    /// Remote recipients by destination server, for the outbox.
    remote: RemoteRecipients,
    expires_at: i64,
}

/// Stores `jobs` in the group commit's shared transaction and sets each
/// one's result. An error means a statement failed and the transaction
/// must roll back.
fn store_batch(conn: &mut DbConnection, jobs: &mut [&mut SendJob]) -> Result<(), MailboxError> {
    let ids: HashSet<&str> = jobs.iter().map(|job| job.prepared.message_id()).collect();
    if ids.len() != jobs.len() {
        // Two sends with one id in one batch: the single-send path sorts
        // out which is a retry and which is refused.
        return Err(StorageError::Unavailable("one message id twice in a batch".into()).into());
    }
    let found = look_up(conn, jobs)?;
    let pending = answer_retries(jobs, &found.records);
    if pending.is_empty() {
        return Ok(());
    }
    let now = crate::time::now_ms();
    let senders: HashSet<&str> = pending
        .iter()
        .map(|&index| jobs[index].sender.account_key.as_str())
        .collect();
    let senders: Vec<&str> = senders.into_iter().collect();
    let limits = &jobs[0].context.limits;
    let devices = found.known.values().flat_map(|(_, devices)| devices.iter());
    let share = Share::load(conn, limits, Source::Account, &senders, devices)?;
    let accepted = check_all(jobs, &pending, found, share, now);
    write_all(conn, jobs, accepted, now)
}

/// Stores one send in a savepoint of its own: how a batch that failed runs
/// again, one send at a time, so each failure stays with its own request.
/// A send that lost a race for its id (a unique violation) is answered
/// from the record the winner left: a concurrent identical retry, or
/// another send that took the id.
fn store_alone(conn: &mut DbConnection, job: &mut SendJob) -> Result<SendOutcome, MailboxError> {
    use diesel::Connection;
    let stored = conn.transaction(|conn| {
        store_batch(conn, &mut [&mut *job])?;
        job.result
            .take()
            .unwrap_or_else(|| Err(StorageError::Unavailable("the send did not run".into()).into()))
    });
    match stored {
        Err(MailboxError::Storage(StorageError::Query(error)))
            if crate::storage::is_unique_violation(&error) =>
        {
            // In a savepoint too: a failure here must not abort the group
            // commit's transaction for the sends after this one.
            let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
            let key = [(job.sender.account_key.as_str(), request.message_id.as_str())];
            let records = conn.transaction(|conn| mail::send_reads(conn, &key, &[], false))?;
            match records.records.first() {
                Some((_, _, digest, response)) => {
                    answer_from_record(digest, response, request, parsed)
                }
                None => Err(MailboxError::MessageIdReused(request.message_id.clone())),
            }
        }
        other => other,
    }
}

/// Answers retries from their idempotency records; returns the jobs left.
fn answer_retries(jobs: &mut [&mut SendJob], records: &[StoredRecord]) -> Vec<usize> {
    let mut left = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter_mut().enumerate() {
        let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
        let record = records.iter().find(|(account, id, ..)| {
            *account == job.sender.account_key && *id == request.message_id
        });
        match record {
            Some((_, _, digest, response)) => {
                job.result = Some(answer_from_record(digest, response, request, parsed));
            }
            None => left.push(index),
        }
    }
    left
}

/// Checks every send against the recipients' devices as the earlier sends
/// of the batch leave them, as if each ran alone in turn.
fn check_all(
    jobs: &mut [&mut SendJob],
    pending: &[usize],
    found: Found,
    mut share: Share,
    now: i64,
) -> Vec<Accepted> {
    let Found {
        mut known, allowed, ..
    } = found;
    let mut accepted = Vec::with_capacity(pending.len());
    for &index in pending {
        let job = &mut *jobs[index];
        match check_one(index, job, &mut known, &mut share, &allowed, now) {
            Ok(one) => accepted.push(one),
            Err(refusal) => job.result = Some(Err(refusal)),
        }
    }
    accepted
}

fn check_one(
    index: usize,
    job: &SendJob,
    known: &mut HashMap<String, (String, Vec<DeviceState>)>,
    share: &mut Share,
    allowed: &HashMap<String, bool>,
    now: i64,
) -> Result<Accepted, MailboxError> {
    let context = &job.context;
    let parsed = &job.prepared.parsed;
    let body_len = i64::try_from(parsed.body.len()).unwrap_or(i64::MAX);
    let rules = CheckRules {
        limits: &context.limits,
        device_inactivity: context.device_inactivity,
        exclude: Some((&job.sender.account_key, &job.sender.device_id)),
        share: Some((share, &job.sender.account_key)),
    };
    let mut checks = SendChecks::default();
    let mut local = Vec::with_capacity(parsed.recipients.len());
    let mut remote = RemoteRecipients::new();
    for (recipient, wraps) in parsed
        .recipients
        .iter()
        .zip(&job.prepared.request.recipients)
    {
        let server = recipient.address.server();
        if !context.local_names.contains(server) {
            if !allowed.get(server.as_str()).copied().unwrap_or(false) {
                return Err(MailboxError::FederationDenied(server.to_string()));
            }
            queue_remote(&mut remote, recipient, wraps);
            continue;
        }
        local.push(recipient);
        let alias = recipient.address.alias().as_str();
        let Some((account, devices)) = known.get(alias) else {
            return Err(MailboxError::UnknownRecipient(
                recipient.address.to_string(),
            ));
        };
        let check = evaluate_recipient(
            &rules,
            &recipient.address,
            account.clone(),
            devices,
            &recipient.wraps,
            body_len,
            now,
        );
        checks.add(check);
    }
    let plans = checks.finish(!remote.is_empty(), &context.limits)?;
    let mut statuses = Vec::with_capacity(parsed.recipients.len());
    let mut targets = Vec::with_capacity(plans.len());
    // No recipient was stale or unknown, so there is a plan per local one.
    for (plan, recipient) in plans.into_iter().zip(local) {
        let status = plan.status();
        statuses.push(RecipientStatus {
            address: plan.address.clone(),
            status: status.into(),
        });
        if plan.full {
            continue;
        }
        // The later sends of the batch see these deliveries in the counts.
        if let Some((_, devices)) = known.get_mut(recipient.address.alias().as_str()) {
            count_pending(devices, &plan.targets, body_len);
        }
        share.count(&plan.targets, &job.sender.account_key, body_len);
        targets.push((plan.recipient_account, plan.targets));
    }
    statuses.extend(remote.values().flatten().map(|recipient| RecipientStatus {
        address: recipient.address.clone(),
        status: "queued".into(),
    }));
    Ok(Accepted {
        job: index,
        statuses,
        targets,
        remote,
        expires_at: now.saturating_add(duration_ms(context.max_pending_age)),
    })
}

/// The batch's rows (one statement on PostgreSQL, a few per table on
/// SQLite: see `storage::mail`).
fn write_all(
    conn: &mut DbConnection,
    jobs: &mut [&mut SendJob],
    accepted: Vec<Accepted>,
    now: i64,
) -> Result<(), MailboxError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let origin = jobs[accepted[0].job].context.server_name.to_string();
    let beside = beside(jobs, &accepted)?;
    let batch: Vec<NewMessage<'_>> = accepted
        .iter()
        .map(|one| {
            let job = &jobs[one.job];
            let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
            NewMessage {
                origin: &origin,
                message_id: &request.message_id,
                sender: Some((&job.sender.account_key, &job.sender.device_id)),
                digest: &parsed.digest,
                body: &parsed.body,
                delivery: request.delivery,
                expires_at: one.expires_at,
                targets: &one.targets,
            }
        })
        .collect();
    let written = mail::insert(conn, &batch, &beside, now)?;
    drop((batch, beside));
    for (one, &message_row) in accepted.into_iter().zip(&written.message_rows) {
        let job = &mut *jobs[one.job];
        let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
        let message = MessageRef {
            row: message_row,
            message_id: &request.message_id,
            origin: &origin,
            inline_body: (parsed.body.len() <= job.context.inline_max_bytes)
                .then_some(request.body.as_str()),
            delivery: request.delivery,
            expires_at: one.expires_at,
        };
        let new_deliveries = notes(&written, &message, &one.targets, now)?;
        job.result = Some(Ok(SendOutcome {
            response: SendResponse {
                message_id: request.message_id.clone(),
                recipients: one.statuses,
            },
            new_deliveries,
            queued_destinations: one.remote.into_keys().collect(),
            replayed: false,
            body_bytes: parsed.body.len(),
        }));
    }
    Ok(())
}

/// The senders' receipts, the idempotency records and an outbox row per
/// (message, destination server).
fn beside<'a>(
    jobs: &'a [&mut SendJob],
    accepted: &'a [Accepted],
) -> Result<Beside<'a>, MailboxError> {
    let mut beside = Beside {
        records: Vec::with_capacity(accepted.len()),
        ..Beside::default()
    };
    for one in accepted {
        let job = &jobs[one.job];
        let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
        let (sender, message_id) = (job.sender.account_key.as_str(), request.message_id.as_str());
        for status in &one.statuses {
            beside
                .receipts
                .push((sender, message_id, &status.address, &status.status));
        }
        let response = SendResponse {
            message_id: request.message_id.clone(),
            recipients: one.statuses.clone(),
        };
        let stored =
            serde_json::to_string(&response).map_err(|e| MailboxError::Invalid(e.to_string()))?;
        beside
            .records
            .push((sender, message_id, parsed.digest.as_slice(), stored));
        for (destination, recipients) in &one.remote {
            let encoded = serde_json::to_string(recipients)
                .map_err(|e| MailboxError::Invalid(e.to_string()))?;
            beside
                .outbox
                .push((message_id, destination.as_str(), encoded));
        }
    }
    Ok(beside)
}
