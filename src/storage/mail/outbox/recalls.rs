//! Recalls to relay (`outbound_recalls`): a sender took back a message
//! whose relay work had left this server or may have (a transaction is
//! out). Each recipient there waits in `recalling` until its server
//! answers; the destination's worker sends a recall once no outbox row of
//! the message is left for that destination, so it never overtakes the
//! message itself.

use diesel::prelude::*;
use homing_proto::federation::RecallResponse;
use homing_proto::wire::StatusEvent;

use crate::storage::schema::{delivery_receipts, messages, outbound_recalls, outbox};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// A recall waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRecall {
    pub destination: String,
    pub message_id: String,
    pub sender_account: String,
    pub recipients: Vec<String>,
}

/// Queues a recall to every server holding, or maybe holding, `sender`'s
/// `message_id` for a recipient: those whose receipt is `relayed`, or
/// still `queued` once the unsent relay work was taken back (it is in a
/// transaction). Their receipts become `recalling` (`not_recalled` when
/// another sender here used the same id). Returns the destinations, for
/// the relay to wake, and the changes.
pub fn queue(
    conn: &mut DbConnection,
    sender: &str,
    message_id: &str,
    now: i64,
) -> Result<(Vec<String>, Vec<StatusEvent>), StorageError> {
    let receipts: Vec<(String, String)> = with_backend!(conn, c => delivery_receipts::table
        .filter(delivery_receipts::sender_account.eq(sender))
        .filter(delivery_receipts::message_id.eq(message_id))
        .filter(delivery_receipts::state.eq_any(["queued", "relayed"]))
        .select((delivery_receipts::recipient, delivery_receipts::state))
        .load(c))?;
    // A peer knows a relayed message by this server's name and its id
    // only, and ids are the clients' own: when another sender here used
    // the same id (after this message left, say), the peer could not tell
    // the two apart, and a recall could take back someone else's mail.
    // Such a recall is not relayed.
    let shared_id: bool = with_backend!(conn, c => diesel::select(diesel::dsl::exists(
        delivery_receipts::table
            .filter(delivery_receipts::message_id.eq(message_id))
            .filter(delivery_receipts::sender_account.ne(sender)),
    ))
    .get_result(c))?;
    let next = if shared_id {
        "not_recalled"
    } else {
        "recalling"
    };
    let mut by_destination: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut changes = Vec::new();
    for (recipient, state) in receipts {
        // Named as the send named the destination of its relay work.
        let Ok(address) = crate::address::Address::parse(&recipient) else {
            continue;
        };
        let server = address.server().to_string();
        let updated = with_backend!(conn, c => diesel::update(delivery_receipts::table
            .find((sender, message_id, &recipient))
            .filter(delivery_receipts::state.eq(&state)))
            .set((delivery_receipts::state.eq(next), delivery_receipts::updated_at.eq(now)))
            .execute(c))?;
        if updated == 1 {
            changes.push(StatusEvent::new(
                sender,
                message_id,
                recipient.clone(),
                next,
                now,
            ));
            if !shared_id {
                by_destination.entry(server).or_default().push(recipient);
            }
        }
    }
    let feed: Vec<_> = changes
        .iter()
        .map(|e| (sender, message_id, e.recipient.as_str(), next, None))
        .collect();
    crate::storage::mail::feed::append(conn, &feed, now)?;
    for (destination, recipients) in &by_destination {
        super::ensure_destination(conn, destination)?;
        let recipients = serde_json::to_string(recipients)
            .map_err(|e| StorageError::Corrupt(format!("recall recipients: {e}")))?;
        with_backend!(conn, c => diesel::insert_into(outbound_recalls::table)
            .values((
                outbound_recalls::destination.eq(destination),
                outbound_recalls::message_id.eq(message_id),
                outbound_recalls::sender_account.eq(sender),
                outbound_recalls::recipients.eq(&recipients),
                outbound_recalls::created_at.eq(now),
            ))
            .on_conflict_do_nothing()
            .execute(c))?;
    }
    Ok((by_destination.into_keys().collect(), changes))
}

/// (message id, sender, recipients as JSON) of `destination`'s recalls,
/// oldest first.
fn recall_rows(
    conn: &mut DbConnection,
    destination: &str,
    limit: i64,
) -> Result<Vec<(String, String, String)>, StorageError> {
    Ok(with_backend!(conn, c => outbound_recalls::table
        .filter(outbound_recalls::destination.eq(destination))
        .order(outbound_recalls::created_at.asc())
        .limit(limit)
        .select((
            outbound_recalls::message_id,
            outbound_recalls::sender_account,
            outbound_recalls::recipients,
        ))
        .load(c))?)
}

/// Moves a `recalling` receipt to `to`, with its feed entry; true when it
/// changed.
fn settle_recalling(
    conn: &mut DbConnection,
    (sender, message_id, recipient): (&str, &str, &str),
    to: &str,
    now: i64,
) -> Result<bool, StorageError> {
    let updated = with_backend!(conn, c => diesel::update(delivery_receipts::table
        .find((sender, message_id, recipient))
        .filter(delivery_receipts::state.eq("recalling")))
        .set((delivery_receipts::state.eq(to), delivery_receipts::updated_at.eq(now)))
        .execute(c))?;
    if updated == 1 {
        crate::storage::mail::feed::append(
            conn,
            &[(sender, message_id, recipient, to, None)],
            now,
        )?;
    }
    Ok(updated == 1)
}

/// The oldest recall for `destination` that no outbox row of its message
/// (from `origin`, this server) still waits before.
pub fn next(
    conn: &mut DbConnection,
    origin: &str,
    destination: &str,
) -> Result<Option<OutboundRecall>, StorageError> {
    let rows = recall_rows(conn, destination, 100)?;
    for (message_id, sender_account, recipients) in rows {
        let waiting: bool = with_backend!(conn, c => diesel::select(diesel::dsl::exists(
            outbox::table
                .inner_join(messages::table)
                .filter(outbox::destination.eq(destination))
                .filter(messages::origin.eq(origin))
                .filter(messages::message_id.eq(&message_id)),
        ))
        .get_result(c))?;
        if waiting {
            continue;
        }
        let recipients = serde_json::from_str(&recipients)
            .map_err(|e| StorageError::Corrupt(format!("recall recipients: {e}")))?;
        return Ok(Some(OutboundRecall {
            destination: destination.to_string(),
            message_id,
            sender_account,
            recipients,
        }));
    }
    Ok(None)
}

/// The destination answered `recall`: it is done, and each recipient's
/// receipt becomes `recalled` where unacknowledged deliveries were
/// removed, else `not_recalled` (nothing was left unread there: read,
/// expired, never stored, or a recipient the answer leaves out).
pub fn complete(
    conn: &mut DbConnection,
    recall: &OutboundRecall,
    answer: &RecallResponse,
    now: i64,
) -> Result<Vec<StatusEvent>, StorageError> {
    with_backend!(conn, c => diesel::delete(
        outbound_recalls::table.find((&recall.destination, &recall.message_id)),
    )
    .execute(c))?;
    let sender = recall.sender_account.as_str();
    let message_id = recall.message_id.as_str();
    let mut changes = Vec::new();
    for recipient in &recall.recipients {
        let recalled = answer
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_ascii_case(recipient) && r.status == "recalled");
        let state = if recalled { "recalled" } else { "not_recalled" };
        if settle_recalling(conn, (sender, message_id, recipient), state, now)? {
            changes.push(StatusEvent::new(
                sender,
                message_id,
                recipient.clone(),
                state,
                now,
            ));
        }
    }
    Ok(changes)
}

/// Forgets `destination`'s recalls (an admin dropped its queue): their
/// recipients' receipts become `dropped`, the relay's word for work it
/// will not do.
pub fn drop_for(conn: &mut DbConnection, destination: &str, now: i64) -> Result<(), StorageError> {
    for (message_id, sender, recipients) in recall_rows(conn, destination, i64::MAX)? {
        let recipients: Vec<String> = serde_json::from_str(&recipients).unwrap_or_default();
        for recipient in recipients {
            settle_recalling(conn, (&sender, &message_id, &recipient), "dropped", now)?;
        }
    }
    with_backend!(conn, c => diesel::delete(
        outbound_recalls::table.filter(outbound_recalls::destination.eq(destination)),
    )
    .execute(c))?;
    Ok(())
}
