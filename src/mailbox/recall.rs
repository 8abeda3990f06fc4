//! Recall: a sender takes back a message nobody has read yet. Every
//! delivery still pending goes (an acknowledged one is gone already), and
//! so does relay work that is certainly still on this server; the
//! receipts of those recipients become `recalled`. Mail already relayed,
//! or in a transaction that may be in the other server's custody, stays
//! as it is, and its receipt says so.

use super::status::{delivery_status, StatusEvent};
use super::{MailboxError, RecipientWraps};
use crate::storage::mail;
use crate::storage::DbConnection;

/// What a recall did.
#[derive(Debug, Default)]
pub struct RecallOutcome {
    /// Every recipient's state now.
    pub recipients: Vec<StatusEvent>,
    /// The receipts it changed, for the sender's other devices.
    pub changes: Vec<StatusEvent>,
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
        // Gone already (recalled, read or expired): the receipts tell.
        let recipients = delivery_status(conn, sender, message_id)?;
        return Ok(RecallOutcome {
            recipients,
            changes: Vec::new(),
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
    mail::remove_finished_messages(conn, &[message_row])?;
    let recipients = delivery_status(conn, sender, message_id)?;
    Ok(RecallOutcome {
        recipients,
        changes,
    })
}
