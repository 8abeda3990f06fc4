//! The sends of one group commit stored together: one statement per table
//! for the whole batch instead of a dozen per send. On PostgreSQL every
//! statement is a round trip, so this is what lets one writer keep up with
//! many senders; on SQLite it saves the per-statement work.
//!
//! Only the path where nothing conflicts is done here. Sends with remote
//! recipients go through the single-send path in the same transaction, and
//! any statement that fails (a message id taken by a concurrent send, a
//! deadlock) fails the batch, which then runs again one send per savepoint
//! where each failure is answered on its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use diesel::prelude::*;

use super::deliver::{
    evaluate_recipient, load_recipients, CheckRules, DeviceState, MessageRef, SendChecks,
};
use super::send::{
    answer_from_record, send_within, PreparedSend, RecipientStatus, SendContext, SendOutcome,
    SendResponse, Sender,
};
use super::{Isolation, MailboxError};
use crate::storage::schema::{deliveries, delivery_receipts, devices, messages, send_idempotency};
use crate::storage::{DbConnection, StorageError};
use crate::time::duration_ms;
use crate::with_backend;

/// Rows per multi-row statement: PostgreSQL allows 65,535 bound values and
/// SQLite 32,766; the widest row here binds 9.
const ROWS_PER_STATEMENT: usize = 1_000;

/// A queued send.
pub(super) struct SendJob {
    pub context: Arc<SendContext>,
    pub sender: Sender,
    pub prepared: PreparedSend,
    pub result: Option<Result<SendOutcome, MailboxError>>,
}

/// A recipient account and its target devices' rows with their key wraps.
type AccountTargets = (String, Vec<(i64, Vec<u8>)>);

/// A send that passed its checks, waiting for the batch's writes.
struct Accepted {
    job: usize,
    statuses: Vec<RecipientStatus>,
    targets: Vec<AccountTargets>,
    expires_at: i64,
}

/// Stores `jobs` in the group commit's shared transaction and sets each
/// one's result. An error means a statement failed and the transaction
/// must roll back.
pub(super) fn store_batch(
    conn: &mut DbConnection,
    jobs: &mut [&mut SendJob],
) -> Result<(), MailboxError> {
    let mut local = Vec::with_capacity(jobs.len());
    for (index, job) in jobs.iter_mut().enumerate() {
        let server = &job.context.server_name;
        let remote = job
            .prepared
            .parsed
            .recipients
            .iter()
            .any(|r| r.address.server() != server);
        if remote {
            let result = send_within(
                conn,
                Isolation::Shared,
                &job.context,
                &job.sender,
                &job.prepared,
            );
            match result {
                Err(error) if !error.is_refusal() => return Err(error),
                result => job.result = Some(result),
            }
        } else {
            local.push(index);
        }
    }
    let local = answer_retries(conn, jobs, local)?;
    if local.is_empty() {
        return Ok(());
    }
    let now = crate::time::now_ms();
    let accepted = check_all(conn, jobs, &local, now)?;
    write_all(conn, jobs, accepted, now)
}

/// Answers retries from their idempotency records; returns the jobs left.
fn answer_retries(
    conn: &mut DbConnection,
    jobs: &mut [&mut SendJob],
    local: Vec<usize>,
) -> Result<Vec<usize>, MailboxError> {
    let ids: Vec<&str> = local
        .iter()
        .map(|&i| jobs[i].prepared.message_id())
        .collect();
    if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
        // Two sends with one id in one batch: the single-send path sorts
        // out which is a retry and which is refused.
        return Err(StorageError::Unavailable("one message id twice in a batch".into()).into());
    }
    let mut senders: Vec<&str> = local
        .iter()
        .map(|&i| jobs[i].sender.account_key.as_str())
        .collect();
    senders.sort_unstable();
    senders.dedup();
    type Record = (String, String, Vec<u8>, String);
    // Both key columns, so the look-up seeks the primary key.
    let records: Vec<Record> = with_backend!(conn, c => send_idempotency::table
        .filter(send_idempotency::sender_account.eq_any(&senders))
        .filter(send_idempotency::message_id.eq_any(&ids))
        .select((
            send_idempotency::sender_account,
            send_idempotency::message_id,
            send_idempotency::request_digest,
            send_idempotency::response,
        ))
        .load(c))?;
    let mut left = Vec::with_capacity(local.len());
    for index in local {
        let job = &mut *jobs[index];
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
    Ok(left)
}

/// Checks every send against the recipients' devices as the earlier sends
/// of the batch leave them, as if each ran alone in turn.
fn check_all(
    conn: &mut DbConnection,
    jobs: &mut [&mut SendJob],
    local: &[usize],
    now: i64,
) -> Result<Vec<Accepted>, MailboxError> {
    let mut aliases: Vec<&str> = local
        .iter()
        .flat_map(|&i| jobs[i].prepared.parsed.recipients.iter())
        .map(|r| r.address.alias().as_str())
        .collect();
    aliases.sort_unstable();
    aliases.dedup();
    let mut known = load_recipients(conn, &aliases)?;
    let mut accepted = Vec::with_capacity(local.len());
    for &index in local {
        let job = &mut *jobs[index];
        match check_one(index, job, &mut known, now) {
            Ok(one) => accepted.push(one),
            Err(refusal) => job.result = Some(Err(refusal)),
        }
    }
    Ok(accepted)
}

fn check_one(
    index: usize,
    job: &SendJob,
    known: &mut HashMap<String, (String, Vec<DeviceState>)>,
    now: i64,
) -> Result<Accepted, MailboxError> {
    let context = &job.context;
    let parsed = &job.prepared.parsed;
    let body_len = i64::try_from(parsed.body.len()).unwrap_or(i64::MAX);
    let rules = CheckRules {
        limits: &context.limits,
        device_inactivity: context.device_inactivity,
        exclude: Some((&job.sender.account_key, &job.sender.device_id)),
    };
    let mut checks = SendChecks::default();
    for recipient in &parsed.recipients {
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
        checks.add(check, &recipient.address)?;
    }
    let plans = checks.finish(false, &context.limits)?;
    let mut statuses = Vec::with_capacity(plans.len());
    let mut targets = Vec::with_capacity(plans.len());
    // No recipient was stale or unknown, so there is a plan per recipient.
    for (plan, recipient) in plans.into_iter().zip(&parsed.recipients) {
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
            for device in devices.iter_mut() {
                if plan.targets.iter().any(|(row, _)| *row == device.0) {
                    device.3 += 1;
                    device.4 = device.4.saturating_add(body_len);
                }
            }
        }
        targets.push((plan.recipient_account, plan.targets));
    }
    Ok(Accepted {
        job: index,
        statuses,
        targets,
        expires_at: now.saturating_add(duration_ms(context.max_pending_age)),
    })
}

/// The batch's rows, a few statements per table.
fn write_all(
    conn: &mut DbConnection,
    jobs: &mut [&mut SendJob],
    accepted: Vec<Accepted>,
    now: i64,
) -> Result<(), MailboxError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let message_rows = insert_messages(conn, jobs, &accepted, now)?;
    // Device rows are locked (by the counter update) before any delivery
    // draws its id, so one device's deliveries commit in id order.
    let mut bumps: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for one in &accepted {
        let body_len = jobs[one.job].prepared.parsed.body.len() as i64;
        for (device_row, _) in one.targets.iter().flat_map(|(_, t)| t) {
            let bump = bumps.entry(*device_row).or_default();
            bump.0 += 1;
            bump.1 = bump.1.saturating_add(body_len);
        }
    }
    for (device_row, (count, bytes)) in &bumps {
        with_backend!(conn, c => diesel::update(devices::table.find(device_row))
            .set((
                devices::pending_messages.eq(devices::pending_messages + count),
                devices::pending_bytes.eq(devices::pending_bytes + bytes),
            ))
            .execute(c))?;
    }
    let cursors = insert_deliveries(conn, jobs, &accepted, &message_rows, now)?;
    insert_records(conn, jobs, &accepted, now)?;
    for (one, message_row) in accepted.into_iter().zip(message_rows) {
        let job = &mut *jobs[one.job];
        let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
        let origin = job.context.server_name.to_string();
        let message = MessageRef {
            row: message_row,
            message_id: &request.message_id,
            origin: &origin,
            inline_body: (parsed.body.len() <= job.context.inline_max_bytes)
                .then_some(request.body.as_str()),
            delivery: request.delivery,
            expires_at: one.expires_at,
            body_len: parsed.body.len() as i64,
        };
        let mut new_deliveries = Vec::new();
        for (device_row, wrap) in one.targets.iter().flat_map(|(_, t)| t) {
            let cursor = *cursors
                .get(&(message_row, *device_row))
                .ok_or(diesel::result::Error::NotFound)?;
            new_deliveries.push(message.new_delivery(*device_row, cursor, wrap, now));
        }
        job.result = Some(Ok(SendOutcome {
            response: SendResponse {
                message_id: request.message_id.clone(),
                recipients: one.statuses,
            },
            new_deliveries,
            queued_destinations: Vec::new(),
            replayed: false,
            body_bytes: parsed.body.len(),
        }));
    }
    Ok(())
}

/// The accepted messages' rows; their row ids in `accepted` order.
fn insert_messages(
    conn: &mut DbConnection,
    jobs: &[&mut SendJob],
    accepted: &[Accepted],
    now: i64,
) -> Result<Vec<i64>, MailboxError> {
    let origin = jobs[accepted[0].job].context.server_name.to_string();
    let rows: Vec<_> = accepted
        .iter()
        .map(|one| {
            let job = &jobs[one.job];
            let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
            (
                messages::origin.eq(origin.as_str()),
                messages::message_id.eq(request.message_id.as_str()),
                messages::sender_account.eq(Some(job.sender.account_key.as_str())),
                messages::sender_device.eq(Some(job.sender.device_id.as_str())),
                messages::request_digest.eq(parsed.digest.as_slice()),
                messages::body.eq(parsed.body.as_slice()),
                messages::delivery_mode.eq(request.delivery.as_str()),
                messages::created_at.eq(now),
                messages::expires_at.eq(one.expires_at),
            )
        })
        .collect();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let returned: Vec<(String, i64)> = with_backend!(conn, c => diesel::insert_into(messages::table)
            .values(chunk)
            .returning((messages::message_id, messages::id))
            .get_results(c))?;
        ids.extend(returned);
    }
    accepted
        .iter()
        .map(|one| {
            let id = jobs[one.job].prepared.message_id();
            ids.get(id)
                .copied()
                .ok_or(diesel::result::Error::NotFound.into())
        })
        .collect()
}

/// Every delivery of the batch; their ids by (message row, device row).
fn insert_deliveries(
    conn: &mut DbConnection,
    jobs: &[&mut SendJob],
    accepted: &[Accepted],
    message_rows: &[i64],
    now: i64,
) -> Result<HashMap<(i64, i64), i64>, MailboxError> {
    let mut rows = Vec::new();
    for (one, message_row) in accepted.iter().zip(message_rows) {
        let body_len = jobs[one.job].prepared.parsed.body.len() as i64;
        for (account, targets) in &one.targets {
            for (device_row, wrap) in targets {
                rows.push((
                    deliveries::message_row.eq(*message_row),
                    deliveries::device_row.eq(*device_row),
                    deliveries::recipient_account.eq(account.as_str()),
                    deliveries::key_wrap.eq(wrap.as_slice()),
                    deliveries::body_bytes.eq(body_len),
                    deliveries::created_at.eq(now),
                    deliveries::expires_at.eq(one.expires_at),
                ));
            }
        }
    }
    let mut cursors = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let returned: Vec<(i64, i64, i64)> = with_backend!(conn, c => diesel::insert_into(deliveries::table)
            .values(chunk)
            .returning((deliveries::message_row, deliveries::device_row, deliveries::id))
            .get_results(c))?;
        cursors.extend(returned.into_iter().map(|(m, d, id)| ((m, d), id)));
    }
    Ok(cursors)
}

/// The senders' receipts and the idempotency records.
fn insert_records(
    conn: &mut DbConnection,
    jobs: &[&mut SendJob],
    accepted: &[Accepted],
    now: i64,
) -> Result<(), MailboxError> {
    let mut receipts = Vec::new();
    let mut records = Vec::with_capacity(accepted.len());
    for one in accepted {
        let job = &jobs[one.job];
        let (request, parsed) = (&job.prepared.request, &job.prepared.parsed);
        for status in &one.statuses {
            receipts.push((
                delivery_receipts::sender_account.eq(job.sender.account_key.as_str()),
                delivery_receipts::message_id.eq(request.message_id.as_str()),
                delivery_receipts::recipient.eq(status.address.as_str()),
                delivery_receipts::state.eq(status.status.as_str()),
                delivery_receipts::updated_at.eq(now),
            ));
        }
        let response = SendResponse {
            message_id: request.message_id.clone(),
            recipients: one.statuses.clone(),
        };
        let stored =
            serde_json::to_string(&response).map_err(|e| MailboxError::Invalid(e.to_string()))?;
        records.push((
            send_idempotency::sender_account.eq(job.sender.account_key.as_str()),
            send_idempotency::message_id.eq(request.message_id.as_str()),
            send_idempotency::request_digest.eq(parsed.digest.as_slice()),
            send_idempotency::response.eq(stored),
            send_idempotency::created_at.eq(now),
        ));
    }
    for chunk in receipts.chunks(ROWS_PER_STATEMENT) {
        with_backend!(conn, c => diesel::insert_into(delivery_receipts::table)
            .values(chunk)
            .execute(c))?;
    }
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        with_backend!(conn, c => diesel::insert_into(send_idempotency::table)
            .values(chunk)
            .execute(c))?;
    }
    Ok(())
}
