//! Homing: a federated home server for end-to-end encrypted direct messages.
#![forbid(unsafe_code)]

pub mod address;
pub mod admin;
pub mod api;
pub mod auth;
pub mod background;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod error;
pub mod federation;
pub mod gateway;
pub mod identity;
pub mod mailbox;
pub mod metrics;
pub mod ratelimit;
pub mod server_key;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod time;
pub mod token_cache;
