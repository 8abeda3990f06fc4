//! Homing: a federated home server for end-to-end encrypted direct messages.
#![forbid(unsafe_code)]

pub mod address;
pub mod api;
pub mod config;
pub mod error;
pub mod federation;
pub mod metrics;
pub mod server_key;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod time;
