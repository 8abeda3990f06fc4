//! Homing: a federated home server for end-to-end encrypted direct messages.
#![forbid(unsafe_code)]

// Addresses, keys, the canonical encoding and the time helpers are shared
// with the client and live in `homing-proto`; they keep their old paths here.
pub use homing_proto::{address, crypto, time};

pub mod admin;
pub mod api;
pub mod auth;
pub mod background;
pub mod config;
pub mod federation;
pub mod gateway;
pub mod identity;
pub mod mailbox;
pub mod metrics;
pub mod push;
pub mod ratelimit;
pub mod server_key;
pub mod startup;
pub mod storage;
pub mod tasks;
pub mod telemetry;
pub mod token_cache;
