//! Recall: a sender takes back a message nobody has read yet. Every
//! delivery still pending goes (an acknowledged one is gone already), and
//! so does relay work that is certainly still on this server; the
//! receipts of those recipients become `recalled`. Mail already relayed,
//! or in a transaction that may be in the other server's custody, is
//! recalled from there: its recipients become `recalling` and the relay
//! asks their servers (`PUT /federation/v1/recall/{message_id}`), after
//! the transaction when one is out; each answer makes them `recalled` or
//! `not_recalled`. The other side is `recall_relayed`.

use super::status::{delivery_status, StatusEvent};
use super::{MailboxError, RecipientWraps};
use crate::address::Address;
use crate::storage::mail;
use crate::storage::DbConnection;
use homing_proto::federation::RecipientResult;

/// What a recall did.
#[derive(Debug, Default)]
pub struct RecallOutcome {
    /// Every recipient's state now.
    pub recipients: Vec<StatusEvent>,
    /// The receipts it changed, for the sender's other devices.
    pub changes: Vec<StatusEvent>,
    /// Servers the relay is to ask to take the message back.
    pub destinations: Vec<String>,
}

/// Recalls `message_id` sent by `sender` from this server (`origin`), in
/// the caller's write transaction. A second recall answers the states as
/// they are; an id the sender never used is `UnknownMessage`, refused
/// before anything is written.
pub fn recall(
    conn: &mut DbConnection,
    origin: &str,
    sender: &str,
    message_id: &str,
    now: i64,
) -> Result<RecallOutcome, MailboxError> {
    let Some(message_row) = mail::sent_message(conn, origin, sender, message_id)? else {
        // Nothing of it is left here (relayed everywhere, read, expired or
        // recalled): only servers it was relayed to may hold some.
        let (destinations, changes) = mail::outbox::recalls::queue(conn, sender, message_id, now)?;
        let recipients = delivery_status(conn, sender, message_id)?;
        return Ok(RecallOutcome {
            recipients,
            changes,
            destinations,
        });
    };
    let mut changes = Vec::new();
    let pending = mail::message_deliveries(conn, message_row)?;
    let removed = mail::remove_deliveries(conn, &pending)?;
    let mut accounts: Vec<&str> = removed
        .iter()
        .map(|row| row.recipient_account.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    for account in accounts {
        changes.extend(mail::advance_receipt(
            conn,
            message_row,
            account,
            "stored",
            "recalled",
            now,
        )?);
    }
    for (id, recipients) in mail::unsent_relay_work(conn, message_row, now)? {
        mail::remove_relay_work(conn, id)?;
        let recipients: Vec<RecipientWraps> = serde_json::from_str(&recipients).unwrap_or_default();
        for recipient in recipients {
            let receipt = (sender, message_id, recipient.address.as_str());
            if mail::settle_queued(conn, receipt, "recalled", now)? {
                changes.push(StatusEvent::new(
                    sender,
                    message_id,
                    recipient.address,
                    "recalled",
                    now,
                ));
            }
        }
    }
    let (destinations, asked) = mail::outbox::recalls::queue(conn, sender, message_id, now)?;
    changes.extend(asked);
    mail::remove_finished_messages(conn, &[message_row])?;
    let recipients = delivery_status(conn, sender, message_id)?;
    Ok(RecallOutcome {
        recipients,
        changes,
        destinations,
    })
}

/// A recall from `origin` (verified) for its `message_id`: removes what
/// each of `recipients` (addresses here) has not acknowledged. Per
/// recipient `recalled`, `gone` (nothing was pending: read, expired or
/// never stored) or `not_local`; `invalid` for an address that does not
/// parse. Runs in the caller's write transaction.
pub fn recall_relayed(
    conn: &mut DbConnection,
    local_names: &crate::address::LocalNames,
    origin: &str,
    message_id: &str,
    recipients: &[String],
) -> Result<Vec<RecipientResult>, MailboxError> {
    let mut results = Vec::with_capacity(recipients.len());
    let mut aliases = Vec::new();
    for recipient in recipients {
        match Address::parse(recipient) {
            Ok(address) if local_names.contains(address.server()) => {
                aliases.push((recipient.clone(), address.alias().as_str().to_string()));
            }
            Ok(_) => results.push(RecipientResult::new(recipient.clone(), "not_local")),
            Err(_) => results.push(RecipientResult::new("", "invalid")),
        }
    }
    let Some(message_row) = mail::relayed_message(conn, origin, message_id)? else {
        results.extend(
            aliases
                .into_iter()
                .map(|(a, _)| RecipientResult::new(a, "gone")),
        );
        return Ok(results);
    };
    let names: Vec<String> = aliases.iter().map(|(_, alias)| alias.clone()).collect();
    let pending = mail::deliveries_by_alias(conn, message_row, &names)?;
    let rows: Vec<i64> = pending.iter().map(|(_, row)| *row).collect();
    mail::remove_deliveries(conn, &rows)?;
    for (address, alias) in aliases {
        let recalled = pending.iter().any(|(holder, _)| *holder == alias);
        let status = if recalled { "recalled" } else { "gone" };
        results.push(RecipientResult::new(address, status));
    }
    mail::remove_finished_messages(conn, &[message_row])?;
    Ok(results)
}
