//! What a sender may learn about its message (`DELIVERY_STATUS`), and the
//! recipient's retention choice.

use std::time::Duration;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::MailboxError;
use crate::storage::schema::delivery_receipts;
use crate::storage::DbConnection;
use crate::time::duration_ms;
use crate::with_backend;
pub use homing_proto::wire::StatusEvent;

pub(crate) fn mark_delivered(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    now: i64,
) -> Result<Option<StatusEvent>, MailboxError> {
    crate::storage::mail::advance_receipt(
        conn,
        message_row,
        recipient_account,
        "stored",
        "delivered",
        now,
    )
    .map_err(Into::into)
}

pub(crate) fn mark_expired(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    now: i64,
) -> Result<Option<StatusEvent>, MailboxError> {
    crate::storage::mail::advance_receipt(
        conn,
        message_row,
        recipient_account,
        "stored",
        "expired",
        now,
    )
    .map_err(Into::into)
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
    crate::identity::account_changes::set_retention_keep(conn, account_key, keep_ms)?;
    Ok(effective)
}
