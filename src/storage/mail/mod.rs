//! The mail tables and their one home: every statement that writes
//! `messages`, `deliveries` (with the devices' pending counters),
//! `delivery_receipts` with their change feed (`status_feed`),
//! `send_idempotency`, `outbox`, `outbox_txns`, `destinations` and
//! `inbound_txns` is here, for both backends. They are
//! one family because a send writes most of them in one statement on
//! PostgreSQL (`insert_pg`) and a relay answer changes several at once:
//! splitting the family would split those statements into round trips.
//!
//! The mailbox and federation decide what to write; this module says how,
//! and nothing else in the server writes these tables.

mod expiry;
pub mod feed;
mod inbound;
mod insert;
mod insert_pg;
mod insert_sqlite;
pub mod outbox;
mod read;
mod read_pg;
mod recall;
mod receipts;
mod remove;

pub use expiry::{
    deliveries_left, expired_deliveries, expired_relay_work, finished_messages, forget_old_records,
    remove_relay_work, silent_device_deliveries, ExpiredRelay,
};
pub use inbound::{record_txn, recorded_txn};
pub use insert::{insert, AccountTargets, Beside, NewMessage, Written};
pub use read::{
    federation_rules, held_already, load_recipients, send_reads, DeviceState, Recipients,
    SendReads, StoredRecord,
};
pub use recall::{
    deliveries_by_alias, message_deliveries, relayed_message, sent_message, unsent_relay_work,
};
pub use receipts::{advance_receipt, settle_queued};
pub use remove::{
    mark_seen, remove_account_mail, remove_deliveries, remove_device_mail,
    remove_finished_messages, shorten_deliveries, RemovedDelivery,
};
