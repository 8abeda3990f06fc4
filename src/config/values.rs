//! Parsers for single setting values: each error names the key and the
//! bad value (never a secret).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{invalid, ConfigError, DatabaseUrl, Rate};
use crate::address::ServerName;
use crate::time::parse_duration;

pub(super) fn duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|reason| invalid(key, text, reason))
}

/// A duration that must not be zero: a zero there would make every
/// message expire at once, every token dead on arrival, or a loop spin.
pub(super) fn positive_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    match duration(key, text)? {
        zero if zero.is_zero() => Err(invalid(key, text, "must be longer than zero")),
        positive => Ok(positive),
    }
}

pub(super) fn rate(key: &'static str, text: &str) -> Result<Rate, ConfigError> {
    Rate::parse(text).map_err(|reason| invalid(key, text, reason))
}

pub(super) fn server_names(
    key: &'static str,
    names: &[String],
) -> Result<Vec<ServerName>, ConfigError> {
    names
        .iter()
        .map(|name| ServerName::parse(name).map_err(|e| invalid(key, name, e.to_string())))
        .collect()
}

pub(super) fn parse_database_url(url: &str, data_dir: &Path) -> Result<DatabaseUrl, ConfigError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(DatabaseUrl::Sqlite(data_dir.join("homing.db")));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid(
                "database.url",
                url,
                "the sqlite:// URL names no file",
            ));
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(url.to_string()));
    }
    Err(invalid(
        "database.url",
        redact_url(url),
        "expected sqlite://PATH or postgres://…",
    ))
}

/// Hides a password in a database URL before it reaches a log or an error.
pub fn redact_url(url: &str) -> String {
    // libpq also takes a password as a query parameter (`?password=…`,
    // `sslpassword=…`).
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &base[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => {
                    format!("{}{}:***{}", &base[..scheme_end + 3], user, &base[at..])
                }
                None => base.to_string(),
            }
        }
        _ => base.to_string(),
    };
    let Some(query) = query else {
        return base;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                format!("{key}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

pub(super) fn parse_nameserver(text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| invalid("federation.nameservers", text, "expected IP or IP:port"))
}

impl DatabaseUrl {
    /// A description safe to log (no password).
    pub fn describe(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url),
        }
    }
}

pub(super) fn metrics_token_digest(token: &str) -> Result<Option<[u8; 32]>, ConfigError> {
    use sha2::{Digest, Sha256};
    if token.is_empty() {
        return Ok(None);
    }
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "server.metrics_token",
            "(hidden)".to_string(),
            "must be at least 16 printable characters without spaces",
        ));
    }
    Ok(Some(Sha256::digest(token.as_bytes()).into()))
}
