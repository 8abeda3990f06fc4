//! Typed settings: built-in defaults, then a TOML file, then `HOMING__…`
//! environment variables. `validate()` turns them into checked values so a
//! bad setting stops the daemon at start with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::address::ServerName;

mod about;
mod push;
mod raw;
mod values;

pub use about::{About, Contact};
pub use push::{PushSettings, RawPush};
pub use raw::*;

pub use values::redact_url;
use values::{
    duration, metrics_token_digest, parse_database_url, parse_nameserver, positive_duration, rate,
    server_names,
};

/// A configuration problem, phrased for the admin who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` = {value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.into(),
        reason: reason.into(),
    }
}

/// Who may register an alias on this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationPolicy {
    Open,
    Invite,
    Closed,
}

/// Which database holds the server's state.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Written without the password: settings are printed and logged whole.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DatabaseUrl::Postgres(url) => {
                f.debug_tuple("Postgres").field(&redact_url(url)).finish()
            }
        }
    }
}

/// How hard SQLite flushes a commit; see `federation-spec/storage.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    Normal,
    Full,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings, the only form the rest of the server sees.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server_name: ServerName,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's head.
    pub client_timeout: Duration,
    /// How long a client may take to send a request's body, beyond the
    /// time its size needs at a minimal rate (see `api::body_timeout`).
    pub body_timeout: Duration,
    pub database: DatabaseSettings,
    pub federation: FederationSettings,
    pub registration_policy: RegistrationPolicy,
    pub limits: Limits,
    pub retention: Retention,
    pub auth: AuthSettings,
    pub rate_limits: RateLimits,
    pub gateway: GatewaySettings,
    pub push: PushSettings,
    pub trust_forwarded_for: bool,
    /// Other `host[:port]` names peers reach this server by (the target of
    /// a `.well-known` delegation); signed requests must name one of these
    /// or the server name.
    pub public_hosts: Vec<ServerName>,
    /// SHA-256 of the bearer token `/metrics` asks for; `None`: only
    /// loopback peers may scrape. The digest, so the token is never in a
    /// debug print of the settings.
    pub metrics_token_digest: Option<[u8; 32]>,
    /// What the admin tells visitors (home page and server-info).
    pub about: About,
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl Settings {
    /// Every name an address at this server may carry.
    pub fn local_names(&self) -> crate::address::LocalNames {
        crate::address::LocalNames::new(&self.server_name, &self.public_hosts)
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub sqlite_synchronous: SqliteSynchronous,
    /// Threads committing sends and acks in groups; at least one.
    pub writers: usize,
}

#[derive(Debug, Clone)]
pub struct FederationSettings {
    pub allow_insecure_http: bool,
    /// Lets federation and directory requests reach loopback, private,
    /// link-local and other non-public addresses (tests, closed networks).
    pub allow_private_addresses: bool,
    /// How long one request to a peer may take before it counts as failed.
    pub request_timeout: Duration,
    /// How long a replica's claim on a destination lasts without renewal
    /// (how soon another replica takes over from a dead one).
    pub relay_lease: Duration,
    pub nameservers: Vec<SocketAddr>,
    pub extra_ca_file: Option<PathBuf>,
    pub allow: Vec<ServerName>,
    pub deny: Vec<ServerName>,
}

impl FederationSettings {
    /// True when `server` may exchange mail with this one, given the
    /// run-time rules (server, "allow" or "deny"). A deny (here or at run
    /// time) always wins; when any allow rule exists, only allowed servers
    /// pass.
    pub fn permits(&self, server: &ServerName, rules: &[(String, String)]) -> bool {
        if self.deny.contains(server) {
            return false;
        }
        let name = server.as_str();
        if rules.iter().any(|(s, r)| s == name && r == "deny") {
            return false;
        }
        let runtime_allows = rules.iter().any(|(_, r)| r == "allow");
        if self.allow.is_empty() && !runtime_allows {
            return true;
        }
        self.allow.contains(server) || rules.iter().any(|(s, r)| s == name && r == "allow")
    }
}

/// Limits on what a client or a peer can make the server hold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_pending_messages_per_device: u32,
    pub max_pending_bytes_per_device: u64,
    pub max_request_bytes: usize,
    /// Answers to inbound transactions remembered per origin server (the
    /// newest); older ones are forgotten early.
    pub max_txn_records_per_origin: u32,
    /// The part of each device's pending quotas one origin server (or, for
    /// local mail, one sending account) may fill, in (0, 1].
    pub max_pending_share_per_origin: f64,
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub max_pending_age: Duration,
    pub max_keep: Duration,
    pub device_inactivity: Duration,
    pub purge_interval: Duration,
}

/// A rate: at most `burst` events, refilled evenly over `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m`, `N/h` or `N/d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate (use e.g. 10/m)"))?;
        let burst: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{count}` is not a positive count"))?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3_600),
            "d" => Duration::from_secs(86_400),
            other => return Err(format!("unknown rate unit `{other}` (use s, m, h or d)")),
        };
        Ok(Self { burst, per })
    }
}

/// Per-client rate limits on the endpoints strangers can call.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub registration_per_ip: Rate,
    pub auth_per_ip: Rate,
    pub auth_per_account: Rate,
    pub send_per_device: Rate,
    pub federation_per_origin: Rate,
    /// Destination servers one account may add to the relay's work.
    pub new_destinations_per_account: Rate,
    /// Look-ups of addresses on other servers one account may make.
    pub directory_per_account: Rate,
}

/// WebSocket gateway behaviour.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub inline_max_bytes: usize,
    pub max_sessions_per_device: usize,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub token_ttl: Duration,
    pub challenge_ttl: Duration,
}

/// The defaults, as TOML so that `examples/homingd.toml` can be checked
/// against them by a test.
pub const DEFAULTS_TOML: &str = include_str!("defaults.toml");

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 4] = [
    "server.public_hosts",
    "federation.nameservers",
    "federation.allow",
    "federation.deny",
];

impl Settings {
    /// Loads defaults, then `file` when given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like `load`, with the environment passed in (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULTS_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let env_map = env
            .into_iter()
            .filter(|(key, _)| key.starts_with("HOMING__"))
            .collect();
        let mut environment = config::Environment::with_prefix("HOMING")
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(env_map));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let raw: RawSettings = builder.add_source(environment).build()?.try_deserialize()?;
        raw.validate()
    }
}

impl RawSettings {
    /// Checks every value and resolves defaults that depend on others.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let server_name = ServerName::parse(&self.server.name)
            .map_err(|e| invalid("server.name", &self.server.name, e.to_string()))?;
        let bind = self.server.bind.parse().map_err(|_| {
            invalid(
                "server.bind",
                &self.server.bind,
                "expected an address like 127.0.0.1:8008",
            )
        })?;
        let data_dir = self.server.data_dir.clone();
        let database_url = parse_database_url(&self.database.url, &data_dir)?;
        if self.database.pool_size == 0 || self.database.pool_size > 256 {
            return Err(invalid(
                "database.pool_size",
                self.database.pool_size.to_string(),
                "must be between 1 and 256",
            ));
        }
        if self.database.writers == 0 || self.database.writers > 32 {
            return Err(invalid(
                "database.writers",
                self.database.writers.to_string(),
                "must be between 1 and 32",
            ));
        }
        if self.database.writers >= self.database.pool_size as usize {
            // A writer holds a connection for each commit: the requests'
            // reads and token checks need at least one more.
            return Err(invalid(
                "database.writers",
                self.database.writers.to_string(),
                format!(
                    "must be less than database.pool_size ({})",
                    self.database.pool_size
                ),
            ));
        }
        let sqlite_synchronous = match self.database.sqlite_synchronous.as_str() {
            "normal" => SqliteSynchronous::Normal,
            "full" => SqliteSynchronous::Full,
            other => {
                return Err(invalid(
                    "database.sqlite_synchronous",
                    other,
                    "expected `normal` or `full`",
                ))
            }
        };
        let registration_policy = match self.registration.policy.as_str() {
            "open" => RegistrationPolicy::Open,
            "invite" => RegistrationPolicy::Invite,
            "closed" => RegistrationPolicy::Closed,
            other => {
                return Err(invalid(
                    "registration.policy",
                    other,
                    "expected `open`, `invite` or `closed`",
                ))
            }
        };
        let nameservers = self
            .federation
            .nameservers
            .iter()
            .map(|ns| parse_nameserver(ns))
            .collect::<Result<Vec<_>, _>>()?;
        let extra_ca_file = match self.federation.extra_ca_file.trim() {
            "" => None,
            path => Some(PathBuf::from(path)),
        };
        let limits = Limits {
            max_message_bytes: self.limits.max_message_bytes,
            max_pending_messages_per_device: self.limits.max_pending_messages_per_device,
            max_pending_bytes_per_device: self.limits.max_pending_bytes_per_device,
            max_request_bytes: self.limits.max_request_bytes,
            max_txn_records_per_origin: self.limits.max_txn_records_per_origin,
            max_pending_share_per_origin: self.limits.max_pending_share_per_origin,
        };
        let share = limits.max_pending_share_per_origin;
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid(
                "limits.max_pending_share_per_origin",
                share.to_string(),
                "must be above 0 and at most 1",
            ));
        }
        if limits.max_txn_records_per_origin == 0 {
            return Err(invalid(
                "limits.max_txn_records_per_origin",
                "0",
                "must be positive",
            ));
        }
        if limits.max_message_bytes == 0 {
            return Err(invalid("limits.max_message_bytes", "0", "must be positive"));
        }
        if limits.max_request_bytes < limits.max_message_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                limits.max_request_bytes.to_string(),
                "must be at least limits.max_message_bytes",
            ));
        }
        let log_format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log.format", other, "expected `text` or `json`")),
        };
        Ok(Settings {
            server_name,
            bind,
            data_dir,
            shutdown_timeout: duration("server.shutdown_timeout", &self.server.shutdown_timeout)?,
            client_timeout: duration("server.client_timeout", &self.server.client_timeout)?,
            body_timeout: duration("server.body_timeout", &self.server.body_timeout)?,
            database: DatabaseSettings {
                url: database_url,
                pool_size: self.database.pool_size,
                connect_timeout: duration(
                    "database.connect_timeout",
                    &self.database.connect_timeout,
                )?,
                sqlite_synchronous,
                writers: self.database.writers,
            },
            federation: FederationSettings {
                allow_insecure_http: self.federation.allow_insecure_http,
                allow_private_addresses: self.federation.allow_private_addresses,
                request_timeout: positive_duration(
                    "federation.request_timeout",
                    &self.federation.request_timeout,
                )?,
                relay_lease: positive_duration(
                    "federation.relay_lease",
                    &self.federation.relay_lease,
                )?,
                nameservers,
                extra_ca_file,
                allow: server_names("federation.allow", &self.federation.allow)?,
                deny: server_names("federation.deny", &self.federation.deny)?,
            },
            registration_policy,
            limits,
            retention: Retention {
                max_pending_age: positive_duration(
                    "retention.max_pending_age",
                    &self.retention.max_pending_age,
                )?,
                max_keep: duration("retention.max_keep", &self.retention.max_keep)?,
                device_inactivity: positive_duration(
                    "retention.device_inactivity",
                    &self.retention.device_inactivity,
                )?,
                purge_interval: duration(
                    "retention.purge_interval",
                    &self.retention.purge_interval,
                )?,
            },
            auth: AuthSettings {
                token_ttl: positive_duration("auth.token_ttl", &self.auth.token_ttl)?,
                challenge_ttl: positive_duration("auth.challenge_ttl", &self.auth.challenge_ttl)?,
            },
            rate_limits: RateLimits {
                registration_per_ip: rate(
                    "rate_limits.registration_per_ip",
                    &self.rate_limits.registration_per_ip,
                )?,
                auth_per_ip: rate("rate_limits.auth_per_ip", &self.rate_limits.auth_per_ip)?,
                auth_per_account: rate(
                    "rate_limits.auth_per_account",
                    &self.rate_limits.auth_per_account,
                )?,
                send_per_device: rate(
                    "rate_limits.send_per_device",
                    &self.rate_limits.send_per_device,
                )?,
                federation_per_origin: rate(
                    "rate_limits.federation_per_origin",
                    &self.rate_limits.federation_per_origin,
                )?,
                new_destinations_per_account: rate(
                    "rate_limits.new_destinations_per_account",
                    &self.rate_limits.new_destinations_per_account,
                )?,
                directory_per_account: rate(
                    "rate_limits.directory_per_account",
                    &self.rate_limits.directory_per_account,
                )?,
            },
            gateway: self.gateway.validate()?,
            push: self.push.validate()?,
            trust_forwarded_for: self.server.trust_forwarded_for,
            metrics_token_digest: metrics_token_digest(&self.server.metrics_token)?,
            public_hosts: server_names("server.public_hosts", &self.server.public_hosts)?,
            about: About::parse(
                &self.server.description,
                &self.server.contact,
                &self.server.rules_url,
            )?,
            log_format,
            log_filter: self.log.filter,
        })
    }
}

impl RawGateway {
    fn validate(&self) -> Result<GatewaySettings, ConfigError> {
        let heartbeat_interval = duration("gateway.heartbeat_interval", &self.heartbeat_interval)?;
        let heartbeat_timeout = duration("gateway.heartbeat_timeout", &self.heartbeat_timeout)?;
        if heartbeat_interval.is_zero() {
            return Err(invalid(
                "gateway.heartbeat_interval",
                &self.heartbeat_interval,
                "must be positive",
            ));
        }
        if heartbeat_timeout <= heartbeat_interval {
            return Err(invalid(
                "gateway.heartbeat_timeout",
                &self.heartbeat_timeout,
                "must be longer than gateway.heartbeat_interval",
            ));
        }
        if self.max_sessions_per_device == 0 {
            return Err(invalid(
                "gateway.max_sessions_per_device",
                "0",
                "must be positive",
            ));
        }
        Ok(GatewaySettings {
            heartbeat_interval,
            heartbeat_timeout,
            inline_max_bytes: self.inline_max_bytes,
            max_sessions_per_device: self.max_sessions_per_device,
        })
    }
}

#[cfg(test)]
mod tests;
