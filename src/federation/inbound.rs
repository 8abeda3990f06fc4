//! Receiving a transaction from a verified origin: answer a retried txn id
//! from the record, deliver each message through the local delivery path,
//! and commit everything with the record before answering.

use diesel::Connection;
use sha2::{Digest, Sha256};

use super::wire::{
    Recall, RecallResponse, Transaction, TxnResponse, MAX_KEY_WRAP_CHARS, MAX_TXN_MESSAGES,
    MAX_TXN_MESSAGE_RECIPIENTS, MAX_TXN_RECIPIENTS,
};
use crate::crypto::identity::{DeviceId, MAX_DEVICES};
use crate::mailbox::{self, InboundRules, MailboxError, NewDelivery};
use crate::storage::mail;
use crate::storage::{DbConnection, StorageError};

/// Why a transaction was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("invalid transaction: {0}")]
    Invalid(String),
    /// More than a transaction may carry: refused whole, nothing recorded.
    #[error("transaction too large: {what}")]
    TooLarge { what: String, limit: u64 },
    #[error("transaction id {0} was already used for a different transaction")]
    TxnReused(String),
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
}

impl From<diesel::result::Error> for InboundError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Mailbox(MailboxError::Storage(StorageError::Query(error)))
    }
}

impl From<StorageError> for InboundError {
    fn from(error: StorageError) -> Self {
        Self::Mailbox(MailboxError::Storage(error))
    }
}

/// The answer and what to wake.
#[derive(Debug, Clone)]
pub struct InboundOutcome {
    pub response: TxnResponse,
    pub new_deliveries: Vec<NewDelivery>,
    pub replayed: bool,
}

/// A transaction id: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_txn_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks what can be checked without the database.
pub fn check(origin: &str, txn_id: &str, txn: &Transaction) -> Result<(), InboundError> {
    if !valid_txn_id(txn_id) {
        return Err(InboundError::Invalid("invalid transaction id".into()));
    }
    if txn.origin != origin {
        return Err(InboundError::Invalid(
            "the origin in the body is not the signer".into(),
        ));
    }
    let too_large = |what: String, limit: usize| InboundError::TooLarge {
        what,
        limit: limit as u64,
    };
    if txn.messages.len() > MAX_TXN_MESSAGES {
        return Err(too_large(
            format!("at most {MAX_TXN_MESSAGES} messages per transaction"),
            MAX_TXN_MESSAGES,
        ));
    }
    // Everything below is what the answer and its record echo back: an
    // honest sender never exceeds it, and refusing before anything is
    // stored keeps one request from making the server record megabytes.
    let mut recipients = 0usize;
    for message in &txn.messages {
        if !crate::mailbox::valid_message_id(&message.message_id) {
            return Err(InboundError::Invalid("invalid message id".into()));
        }
        if message.recipients.len() > MAX_TXN_MESSAGE_RECIPIENTS {
            return Err(too_large(
                format!("at most {MAX_TXN_MESSAGE_RECIPIENTS} recipients per message"),
                MAX_TXN_MESSAGE_RECIPIENTS,
            ));
        }
        recipients += message.recipients.len();
        for recipient in &message.recipients {
            if recipient.devices.is_empty() || recipient.devices.len() > MAX_DEVICES {
                return Err(InboundError::Invalid(format!(
                    "a recipient names 1 to {MAX_DEVICES} devices"
                )));
            }
            let bad_device = recipient.devices.iter().any(|device| {
                DeviceId::parse(&device.device_id).is_err()
                    || device.key_wrap.len() > MAX_KEY_WRAP_CHARS
            });
            if bad_device {
                return Err(InboundError::Invalid(
                    "invalid device id or key wrap".into(),
                ));
            }
        }
    }
    if recipients > MAX_TXN_RECIPIENTS {
        return Err(too_large(
            format!("at most {MAX_TXN_RECIPIENTS} recipients per transaction"),
            MAX_TXN_RECIPIENTS,
        ));
    }
    Ok(())
}

/// The digest a transaction's record keeps of its raw body.
pub fn body_digest(body: &[u8]) -> Vec<u8> {
    Sha256::digest(body).to_vec()
}

/// Processes `txn` (checked by [`check`], whose raw body has `digest`) from
/// `origin` inside the caller's write transaction, in a savepoint of its
/// own: a refusal or a lost race leaves the caller's transaction clean.
pub fn receive_transaction(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    txn_id: &str,
    digest: &[u8],
    txn: &Transaction,
) -> Result<InboundOutcome, InboundError> {
    let attempt = |conn: &mut DbConnection| {
        conn.transaction(|conn| process(conn, rules, origin, txn_id, digest, txn))
    };
    match attempt(conn) {
        // A concurrent copy of this transaction (or of one of its messages)
        // committed first, on another replica: the second pass answers from
        // what it stored.
        Err(InboundError::Mailbox(MailboxError::Storage(StorageError::Query(error))))
            if crate::storage::is_unique_violation(&error) =>
        {
            attempt(conn)
        }
        other => other,
    }
}

fn process(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    txn_id: &str,
    digest: &[u8],
    txn: &Transaction,
) -> Result<InboundOutcome, InboundError> {
    let record = mail::recorded_txn(conn, origin, txn_id)?;
    if let Some((recorded_digest, response)) = record {
        if recorded_digest != digest {
            return Err(InboundError::TxnReused(txn_id.to_string()));
        }
        let response: TxnResponse = serde_json::from_str(&response)
            .map_err(|e| StorageError::Corrupt(format!("recorded transaction unreadable: {e}")))?;
        return Ok(InboundOutcome {
            response,
            new_deliveries: Vec::new(),
            replayed: true,
        });
    }
    let now = crate::time::now_ms();
    let (results, new_deliveries) =
        mailbox::deliver_relayed(conn, rules, origin, &txn.messages, now)?;
    let response = TxnResponse { results };
    let recorded =
        serde_json::to_string(&response).map_err(|e| InboundError::Invalid(e.to_string()))?;
    let keep = rules.limits.max_txn_records_per_origin;
    mail::record_txn(conn, (origin, txn_id), digest, &recorded, now, keep)?;
    Ok(InboundOutcome {
        response,
        new_deliveries,
        replayed: false,
    })
}

/// Checks a recall without the database: the signer's own, a valid
/// message id, 1 to `MAX_TXN_MESSAGE_RECIPIENTS` recipients of sane length.
pub fn check_recall(origin: &str, message_id: &str, recall: &Recall) -> Result<(), InboundError> {
    if !crate::mailbox::valid_message_id(message_id) {
        return Err(InboundError::Invalid("invalid message id".into()));
    }
    if recall.origin != origin {
        return Err(InboundError::Invalid(
            "the origin in the body is not the signer".into(),
        ));
    }
    if recall.recipients.is_empty() {
        return Err(InboundError::Invalid(
            "a recall names its recipients".into(),
        ));
    }
    if recall.recipients.len() > MAX_TXN_MESSAGE_RECIPIENTS {
        return Err(InboundError::TooLarge {
            what: format!("at most {MAX_TXN_MESSAGE_RECIPIENTS} recipients per recall"),
            limit: MAX_TXN_MESSAGE_RECIPIENTS as u64,
        });
    }
    if recall
        .recipients
        .iter()
        .any(|r| r.len() > MAX_ADDRESS_CHARS)
    {
        return Err(InboundError::Invalid("an address is too long".into()));
    }
    Ok(())
}

/// Longest address a recall may name (an alias and a server name).
const MAX_ADDRESS_CHARS: usize = 320;

/// Takes back what `origin`'s recall (checked by [`check_recall`], raw body
/// digest `digest`) names, in the caller's write transaction, in a
/// savepoint. The answer is recorded like a transaction's, under
/// `recall:MESSAGE_ID`, so a retried recall gets the same answer rather
/// than `gone` for what the first one removed.
pub fn receive_recall(
    conn: &mut DbConnection,
    rules: &InboundRules,
    origin: &str,
    message_id: &str,
    digest: &[u8],
    recall: &Recall,
) -> Result<RecallResponse, InboundError> {
    let record_id = format!("recall:{message_id}");
    conn.transaction(|conn| {
        if let Some((recorded_digest, response)) = mail::recorded_txn(conn, origin, &record_id)? {
            if recorded_digest != digest {
                return Err(InboundError::TxnReused(record_id.clone()));
            }
            return serde_json::from_str(&response).map_err(|e| {
                StorageError::Corrupt(format!("recorded recall unreadable: {e}")).into()
            });
        }
        let recipients = mailbox::recall_relayed(
            conn,
            &rules.local_names,
            origin,
            message_id,
            &recall.recipients,
        )?;
        let response = RecallResponse {
            message_id: message_id.to_string(),
            recipients,
        };
        let recorded =
            serde_json::to_string(&response).map_err(|e| InboundError::Invalid(e.to_string()))?;
        let keep = rules.limits.max_txn_records_per_origin;
        let now = crate::time::now_ms();
        mail::record_txn(conn, (origin, &record_id), digest, &recorded, now, keep)?;
        Ok(response)
    })
}
