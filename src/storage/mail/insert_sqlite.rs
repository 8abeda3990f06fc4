//! The batch's rows on SQLite: a few multi-row statements per table (see
//! `insert`). A statement costs no round trip here, so nothing is gained by
//! folding them into one.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::SqliteConnection;

use super::insert::{Beside, Bumps, DeliveryRow, NewMessage, Stored, ROWS_PER_STATEMENT};
use crate::storage::schema::{
    deliveries, delivery_receipts, destinations, devices, messages, outbox, send_idempotency,
};

pub(super) fn store(
    c: &mut SqliteConnection,
    batch: &[NewMessage<'_>],
    bumps: &Bumps,
    rows: &[DeliveryRow<'_>],
    beside: &Beside<'_>,
    now: i64,
) -> QueryResult<Stored> {
    let ids = insert_messages(c, batch, now)?;
    let row_of = |index: usize| ids.get(batch[index].message_id).copied();
    for (&device_row, &(count, bytes)) in bumps {
        diesel::update(devices::table.find(device_row))
            .set((
                devices::pending_messages.eq(devices::pending_messages + count),
                devices::pending_bytes.eq(devices::pending_bytes + bytes),
            ))
            .execute(c)?;
    }
    let mut cursors = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values = chunk
            .iter()
            .map(|d| {
                let message = &batch[d.message];
                Ok((
                    deliveries::message_row.eq(row_of(d.message).ok_or(diesel::NotFound)?),
                    deliveries::device_row.eq(d.device_row),
                    deliveries::recipient_account.eq(d.recipient_account),
                    deliveries::key_wrap.eq(d.key_wrap),
                    deliveries::body_bytes.eq(message.body.len() as i64),
                    deliveries::created_at.eq(now),
                    deliveries::expires_at.eq(message.expires_at),
                ))
            })
            .collect::<QueryResult<Vec<_>>>()?;
        let returned: Vec<(i64, i64, i64)> = diesel::insert_into(deliveries::table)
            .values(values)
            .returning((
                deliveries::message_row,
                deliveries::device_row,
                deliveries::id,
            ))
            .get_results(c)?;
        cursors.extend(returned.into_iter().map(|(m, d, id)| ((m, d), id)));
    }
    insert_beside(c, &ids, beside, now)?;
    Ok((ids, cursors))
}

fn insert_messages(
    c: &mut SqliteConnection,
    batch: &[NewMessage<'_>],
    now: i64,
) -> QueryResult<HashMap<String, i64>> {
    let rows: Vec<_> = batch
        .iter()
        .map(|message| {
            (
                messages::origin.eq(message.origin),
                messages::message_id.eq(message.message_id),
                messages::sender_account.eq(message.sender.map(|(account, _)| account)),
                messages::sender_device.eq(message.sender.map(|(_, device)| device)),
                messages::request_digest.eq(message.digest),
                messages::body.eq(message.body),
                messages::delivery_mode.eq(message.delivery.as_str()),
                messages::created_at.eq(now),
                messages::expires_at.eq(message.expires_at),
            )
        })
        .collect();
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let returned: Vec<(String, i64)> = diesel::insert_into(messages::table)
            .values(chunk)
            .returning((messages::message_id, messages::id))
            .get_results(c)?;
        ids.extend(returned);
    }
    Ok(ids)
}

/// The senders' receipts, the idempotency records, and the outbox rows
/// with a back-off row for each destination that has none yet.
fn insert_beside(
    c: &mut SqliteConnection,
    message_rows: &HashMap<String, i64>,
    beside: &Beside<'_>,
    now: i64,
) -> QueryResult<()> {
    for chunk in beside.receipts.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<_> = chunk
            .iter()
            .map(|&(sender, message_id, recipient, state)| {
                (
                    delivery_receipts::sender_account.eq(sender),
                    delivery_receipts::message_id.eq(message_id),
                    delivery_receipts::recipient.eq(recipient),
                    delivery_receipts::state.eq(state),
                    delivery_receipts::updated_at.eq(now),
                    delivery_receipts::created_at.eq(now),
                )
            })
            .collect();
        diesel::insert_into(delivery_receipts::table)
            .values(values)
            .execute(c)?;
    }
    for chunk in beside.records.chunks(ROWS_PER_STATEMENT) {
        let values: Vec<_> = chunk
            .iter()
            .map(|(sender, message_id, digest, response)| {
                (
                    send_idempotency::sender_account.eq(*sender),
                    send_idempotency::message_id.eq(*message_id),
                    send_idempotency::request_digest.eq(*digest),
                    send_idempotency::response.eq(response.as_str()),
                    send_idempotency::created_at.eq(now),
                )
            })
            .collect();
        diesel::insert_into(send_idempotency::table)
            .values(values)
            .execute(c)?;
    }
    let mut servers: Vec<&str> = beside.outbox.iter().map(|row| row.1).collect();
    servers.sort_unstable();
    servers.dedup();
    for server in servers {
        diesel::insert_into(destinations::table)
            .values(destinations::server_name.eq(server))
            .on_conflict_do_nothing()
            .execute(c)?;
    }
    for chunk in beside.outbox.chunks(ROWS_PER_STATEMENT) {
        let values = chunk
            .iter()
            .map(|(message_id, destination, recipients)| {
                Ok((
                    outbox::message_row
                        .eq(*message_rows.get(*message_id).ok_or(diesel::NotFound)?),
                    outbox::destination.eq(*destination),
                    outbox::recipients.eq(recipients.as_str()),
                    outbox::created_at.eq(now),
                ))
            })
            .collect::<QueryResult<Vec<_>>>()?;
        diesel::insert_into(outbox::table)
            .values(values)
            .execute(c)?;
    }
    Ok(())
}
