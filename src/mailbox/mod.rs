//! The mailbox: encrypted bodies stored once, a delivery row per target
//! device, acknowledgements, retention and expiry. No HTTP here; the API
//! calls these and then wakes the gateway with what they return. The
//! mailbox decides what to write; `storage::mail` writes it.

mod batch_lookup;
mod deliver;
mod digest;
mod purge;
mod recall;
mod relayed;
mod send;
mod send_batch;
mod share;
mod status;
mod sync;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::storage::schema::devices;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

pub use crate::storage::{Isolation, WriteTimings};
pub use send_batch::SendJob;

/// The write queue of a server whose batched writes are sends.
pub type WriteQueue = crate::storage::WriteQueue<SendJob>;
pub use homing_proto::wire::{
    valid_message_id, DeliveryMode, DeviceWrap, RecipientStatus, RecipientWraps, SendRequest,
    SendResponse, SyncItem, SyncPage,
};
pub use purge::{purge_once, PurgeReport, PurgeSettings};
pub use recall::{recall, recall_relayed, RecallOutcome};
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

impl crate::storage::WriteFailure for MailboxError {
    /// Raised before a write writes anything, so a shared group-commit
    /// transaction is left as it was.
    fn is_refusal(&self) -> bool {
        !matches!(self, Self::Storage(_) | Self::Invalid(_))
    }

    fn is_transient(&self) -> bool {
        matches!(self, Self::Storage(error) if crate::storage::is_transient(error))
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

pub(crate) use crate::storage::mail::remove_deliveries;
pub use crate::storage::mail::remove_finished_messages;

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
