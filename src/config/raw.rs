//! The settings as read from the defaults, the file and the environment,
//! before validation turns them into [`super::Settings`].

use std::path::PathBuf;

use serde::Deserialize;

/// The settings as written by the admin (strings where the admin writes text).
#[derive(Debug, Clone, Deserialize)]
pub struct RawSettings {
    pub server: RawServer,
    pub database: RawDatabase,
    pub federation: RawFederation,
    pub registration: RawRegistration,
    pub limits: RawLimits,
    pub retention: RawRetention,
    pub auth: RawAuth,
    pub rate_limits: RawRateLimits,
    pub gateway: RawGateway,
    pub push: super::RawPush,
    pub log: RawLog,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawGateway {
    pub heartbeat_interval: String,
    pub heartbeat_timeout: String,
    pub inline_max_bytes: usize,
    pub max_sessions_per_device: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawServer {
    pub name: String,
    pub bind: String,
    pub data_dir: PathBuf,
    pub shutdown_timeout: String,
    pub client_timeout: String,
    pub body_timeout: String,
    pub trust_forwarded_for: bool,
    pub public_hosts: Vec<String>,
    pub metrics_token: String,
    pub description: String,
    pub contact: String,
    pub rules_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawDatabase {
    pub url: String,
    pub pool_size: u32,
    pub connect_timeout: String,
    pub sqlite_synchronous: String,
    pub writers: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawFederation {
    pub allow_insecure_http: bool,
    pub allow_private_addresses: bool,
    pub request_timeout: String,
    pub relay_lease: String,
    pub nameservers: Vec<String>,
    pub extra_ca_file: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRegistration {
    pub policy: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawLimits {
    pub max_message_bytes: usize,
    pub max_pending_messages_per_device: u32,
    pub max_pending_bytes_per_device: u64,
    pub max_request_bytes: usize,
    pub max_txn_records_per_origin: u32,
    pub max_pending_share_per_origin: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRetention {
    pub max_pending_age: String,
    pub max_keep: String,
    pub device_inactivity: String,
    pub purge_interval: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawAuth {
    pub token_ttl: String,
    pub challenge_ttl: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRateLimits {
    pub registration_per_ip: String,
    pub auth_per_ip: String,
    pub auth_per_account: String,
    pub send_per_device: String,
    pub federation_per_origin: String,
    pub new_destinations_per_account: String,
    pub directory_per_account: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawLog {
    pub format: String,
    pub filter: String,
}
