//! What a sender may learn about its message (`DELIVERY_STATUS`), and the
//! recipient's retention choice.

use std::time::Duration;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::MailboxError;
use crate::storage::schema::{accounts, delivery_receipts, messages};
use crate::storage::DbConnection;
use crate::time::duration_ms;
use crate::with_backend;

/// A change in what the sender knows about one recipient of its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusEvent {
    /// Who sent it (a local account); the event goes to its devices.
    #[serde(skip)]
    pub sender_account: String,
    pub message_id: String,
    pub recipient: String,
    /// `stored`, `queued`, `relayed`, `delivered`, `expired`, `bounced`,
    /// `dropped`, `mailbox_full`, `no_active_devices`, or a remote server's
    /// refusal: `unknown_recipient`, `stale_devices`, `not_local`, `invalid`.
    pub state: String,
    pub updated_at: i64,
    /// For `stale_devices`: the recipient's current devices the key wraps
    /// left out (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// For `stale_devices`: devices the key wraps named that the recipient
    /// does not have (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl StatusEvent {
    /// An event without device details.
    pub fn new(
        sender_account: impl Into<String>,
        message_id: impl Into<String>,
        recipient: impl Into<String>,
        state: impl Into<String>,
        updated_at: i64,
    ) -> Self {
        Self {
            sender_account: sender_account.into(),
            message_id: message_id.into(),
            recipient: recipient.into(),
            state: state.into(),
            updated_at,
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The event with a receipt's stored `detail` (`{"missing", "extra"}`
    /// of a `stale_devices` answer); a detail that does not parse adds
    /// nothing.
    pub fn with_detail(mut self, detail: Option<&str>) -> Self {
        #[derive(Deserialize)]
        struct Detail {
            #[serde(default)]
            missing: Vec<String>,
            #[serde(default)]
            extra: Vec<String>,
        }
        if let Some(detail) = detail.and_then(|d| serde_json::from_str::<Detail>(d).ok()) {
            self.missing = detail.missing;
            self.extra = detail.extra;
        }
        self
    }
}

fn recipient_address(
    conn: &mut DbConnection,
    account_key: &str,
    server: &str,
) -> Result<Option<String>, MailboxError> {
    let alias: Option<String> = with_backend!(conn, c => accounts::table
        .find(account_key)
        .select(accounts::alias)
        .first(c)
        .optional())?;
    Ok(alias.map(|alias| format!("{alias}@{server}")))
}

/// Moves the receipt of (`message_row`, recipient) from `from` to `to`.
/// Returns the event when the state changed, for a local sender.
fn transition(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<Option<StatusEvent>, MailboxError> {
    let message: Option<(Option<String>, String, String)> = with_backend!(conn, c => messages::table
        .find(message_row)
        .select((messages::sender_account, messages::message_id, messages::origin))
        .first(c)
        .optional())?;
    let Some((Some(sender_account), message_id, origin)) = message else {
        return Ok(None);
    };
    let Some(recipient) = recipient_address(conn, recipient_account, &origin)? else {
        return Ok(None);
    };
    let updated = with_backend!(conn, c => diesel::update(
        delivery_receipts::table
            .find((&sender_account, &message_id, &recipient))
            .filter(delivery_receipts::state.eq(from)),
    )
    .set((delivery_receipts::state.eq(to), delivery_receipts::updated_at.eq(now)))
    .execute(c))?;
    Ok((updated == 1).then(|| StatusEvent::new(sender_account, message_id, recipient, to, now)))
}

pub(crate) fn mark_delivered(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    now: i64,
) -> Result<Option<StatusEvent>, MailboxError> {
    transition(
        conn,
        message_row,
        recipient_account,
        "stored",
        "delivered",
        now,
    )
}

pub(crate) fn mark_expired(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    now: i64,
) -> Result<Option<StatusEvent>, MailboxError> {
    transition(
        conn,
        message_row,
        recipient_account,
        "stored",
        "expired",
        now,
    )
}

/// Everything the server knows of the delivery of the caller's message.
pub fn delivery_status(
    conn: &mut DbConnection,
    sender_account: &str,
    message_id: &str,
) -> Result<Vec<StatusEvent>, MailboxError> {
    type Row = (String, String, i64, Option<String>);
    let rows: Vec<Row> = with_backend!(conn, c => delivery_receipts::table
        .filter(delivery_receipts::sender_account.eq(sender_account))
        .filter(delivery_receipts::message_id.eq(message_id))
        .order(delivery_receipts::recipient.asc())
        .select((
            delivery_receipts::recipient,
            delivery_receipts::state,
            delivery_receipts::updated_at,
            delivery_receipts::detail,
        ))
        .load(c))?;
    if rows.is_empty() {
        return Err(MailboxError::UnknownMessage);
    }
    Ok(rows
        .into_iter()
        .map(|(recipient, state, updated_at, detail)| {
            StatusEvent::new(sender_account, message_id, recipient, state, updated_at)
                .with_detail(detail.as_deref())
        })
        .collect())
}

/// A recipient's retention choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Retention {
    /// Purge a message as soon as its delivery condition is met.
    PurgeOnAck,
    /// Keep it this long after that, for devices that sync later.
    Keep { duration_secs: u64 },
}

/// Stores the caller's retention choice, capped at `max_keep`; returns the
/// effective choice.
pub fn set_retention(
    conn: &mut DbConnection,
    account_key: &str,
    retention: Retention,
    max_keep: Duration,
) -> Result<Retention, MailboxError> {
    let effective = match retention {
        Retention::PurgeOnAck => Retention::PurgeOnAck,
        Retention::Keep { duration_secs } => Retention::Keep {
            duration_secs: duration_secs.min(max_keep.as_secs()),
        },
    };
    let keep_ms = match effective {
        Retention::PurgeOnAck => None,
        Retention::Keep { duration_secs } => Some(duration_ms(Duration::from_secs(duration_secs))),
    };
    with_backend!(conn, c => diesel::update(accounts::table.find(account_key))
        .set(accounts::retention_keep_ms.eq(keep_ms))
        .execute(c))?;
    Ok(effective)
}
