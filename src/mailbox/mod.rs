//! The mailbox: encrypted bodies stored once, a delivery row per target
//! device, acknowledgements, retention and expiry. No HTTP here; the API
//! calls these and then wakes the gateway with what they return. Queries
//! use diesel's DSL, except the PostgreSQL batch statements of the send
//! path (`rows_pg`), which the DSL cannot express as one statement.

mod batch_lookup;
mod deliver;
mod digest;
mod group_commit;
mod purge;
mod relayed;
mod rows;
mod rows_pg;
mod rows_sqlite;
mod send;
mod send_batch;
mod share;
mod status;
mod sync;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::storage::schema::{deliveries, devices};
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

pub use group_commit::{Isolation, WriteQueue, WriteTimings};
pub use homing_proto::wire::{
    valid_message_id, DeliveryMode, DeviceWrap, RecipientStatus, RecipientWraps, SendRequest,
    SendResponse, SyncItem, SyncPage,
};
pub use purge::{purge_once, PurgeReport, PurgeSettings};
pub use relayed::{deliver_relayed, InboundRules};
pub use send::{PreparedSend, SendContext, SendOutcome, Sender, MAX_RECIPIENTS};
pub use status::{delivery_status, set_retention, Retention, StatusEvent};
pub use sync::{ack_within, check_ack, latest_pending, sync, AckOutcome, MAX_SYNC_LIMIT};

/// Why a mailbox operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the message body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("message id {0} was already used for a different message")]
    MessageIdReused(String),
    #[error("no such recipient: {0}")]
    UnknownRecipient(String),
    #[error("this server does not federate with {0}")]
    FederationDenied(String),
    #[error("the target devices do not match the recipients' current devices")]
    StaleDevices(Vec<StaleRecipient>),
    #[error("every recipient's mailbox is full")]
    MailboxFull {
        limit_messages: u32,
        limit_bytes: u64,
    },
    #[error("no such message")]
    UnknownMessage,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl MailboxError {
    /// Raised before a write writes anything, so a shared group-commit
    /// transaction is left as it was.
    pub(crate) fn is_refusal(&self) -> bool {
        !matches!(self, Self::Storage(_) | Self::Invalid(_))
    }
}

impl From<diesel::result::Error> for MailboxError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Storage(StorageError::Query(error))
    }
}

/// A delivery just written, for waking the device's gateway sessions.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub device_row: i64,
    pub cursor: i64,
    /// The whole item when the body is small enough to inline.
    pub inline: Option<SyncItem>,
}

/// Which device ids a sender must add or drop for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaleRecipient {
    pub address: String,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

/// A delivery row removed by one statement: exactly what it deleted, so
/// counters are adjusted once even when replicas race.
#[derive(Debug, Clone, Queryable)]
pub(crate) struct RemovedDelivery {
    pub message_row: i64,
    pub device_row: i64,
    pub recipient_account: String,
    pub body_bytes: i64,
}

/// Deletes the given delivery rows and keeps the per-device pending
/// counters in step with what was actually deleted.
pub(crate) fn remove_deliveries(
    conn: &mut DbConnection,
    ids: &[i64],
) -> Result<Vec<RemovedDelivery>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let removed: Vec<RemovedDelivery> = with_backend!(conn, c => diesel::delete(
        deliveries::table.filter(deliveries::id.eq_any(ids)),
    )
    .returning((
        deliveries::message_row,
        deliveries::device_row,
        deliveries::recipient_account,
        deliveries::body_bytes,
    ))
    .get_results(c))?;
    // Ordered by device so concurrent removals lock rows in one order.
    let mut per_device: std::collections::BTreeMap<i64, (i64, i64)> =
        std::collections::BTreeMap::new();
    for row in &removed {
        let entry = per_device.entry(row.device_row).or_default();
        entry.0 += 1;
        entry.1 += row.body_bytes;
    }
    for (device_row, (count, bytes)) in per_device {
        with_backend!(conn, c => diesel::update(devices::table.find(device_row))
            .set((
                devices::pending_messages.eq(devices::pending_messages - count),
                devices::pending_bytes.eq(devices::pending_bytes - bytes),
            ))
            .execute(c))?;
    }
    Ok(removed)
}

/// Deletes the given messages if nothing refers to them any more.
pub fn remove_finished_messages(
    conn: &mut DbConnection,
    message_rows: &[i64],
) -> Result<usize, StorageError> {
    use crate::storage::schema::{messages, outbox};
    if message_rows.is_empty() {
        return Ok(0);
    }
    let c = match conn {
        DbConnection::Postgres(pg) => return Ok(rows_pg::remove_finished(pg, message_rows)?),
        DbConnection::Sqlite(c) => c,
    };
    Ok(diesel::delete(
        messages::table
            .filter(messages::id.eq_any(message_rows))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                deliveries::table.filter(deliveries::message_row.eq(messages::id)),
            )))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                outbox::table.filter(outbox::message_row.eq(messages::id)),
            ))),
    )
    .execute(c)?)
}

/// Pending deliveries on this server and their body bytes (per target
/// device), from the per-device counters.
pub fn pending_total(conn: &mut DbConnection) -> Result<(i64, i64), MailboxError> {
    use diesel::sql_types::BigInt;
    // SUM over BIGINT is NUMERIC on PostgreSQL; cast back so both backends
    // return a plain integer.
    let totals: (i64, i64) = with_backend!(conn, c => devices::table
        .filter(devices::revoked_at.is_null())
        .select((
            diesel::dsl::sql::<BigInt>("CAST(COALESCE(SUM(pending_messages), 0) AS BIGINT)"),
            diesel::dsl::sql::<BigInt>("CAST(COALESCE(SUM(pending_bytes), 0) AS BIGINT)"),
        ))
        .first(c))?;
    Ok(totals)
}
