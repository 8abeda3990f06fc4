//! The senders' receipts (`delivery_receipts`): what a local sender may
//! learn about each recipient of its message. Each change moves a receipt
//! from one state to the next only if it is still in the first, so
//! replicas racing on one receipt report the change once.

use diesel::prelude::*;
use homing_proto::wire::StatusEvent;

use crate::storage::schema::{accounts, delivery_receipts, messages};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

fn recipient_address(
    conn: &mut DbConnection,
    account_key: &str,
    server: &str,
) -> Result<Option<String>, StorageError> {
    let alias: Option<String> = with_backend!(conn, c => accounts::table
        .find(account_key)
        .select(accounts::alias)
        .first(c)
        .optional())?;
    Ok(alias.map(|alias| format!("{alias}@{server}")))
}

/// Moves the sender's receipt of (`message_row`, recipient) from `from` to `to`.
/// Returns the event when the state changed, for a local sender.
pub fn advance_receipt(
    conn: &mut DbConnection,
    message_row: i64,
    recipient_account: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<Option<StatusEvent>, StorageError> {
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
    if updated != 1 {
        return Ok(None);
    }
    super::feed::append(
        conn,
        &[(&sender_account, &message_id, &recipient, to, None)],
        now,
    )?;
    Ok(Some(StatusEvent::new(
        sender_account,
        message_id,
        recipient,
        to,
        now,
    )))
}

/// A queued recipient's receipt becomes `to` (`bounced`, `dropped`): the
/// relay will not carry the message there. True when it changed.
pub fn settle_queued(
    conn: &mut DbConnection,
    (sender, message_id, recipient): (&str, &str, &str),
    to: &str,
    now: i64,
) -> Result<bool, StorageError> {
    let updated = with_backend!(conn, c => diesel::update(
        delivery_receipts::table
            .find((sender, message_id, recipient))
            .filter(delivery_receipts::state.eq("queued")),
    )
    .set((delivery_receipts::state.eq(to), delivery_receipts::updated_at.eq(now)))
    .execute(c))?;
    if updated == 1 {
        super::feed::append(conn, &[(sender, message_id, recipient, to, None)], now)?;
    }
    Ok(updated == 1)
}
