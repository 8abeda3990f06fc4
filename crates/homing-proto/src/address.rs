//! Addresses of the form `alias@server`: parsed once at the edge, so that an
//! invalid name never travels further into the server.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a name was refused; the message is safe to show to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(String);

fn refuse<T>(message: impl Into<String>) -> Result<T, AddressError> {
    Err(AddressError(message.into()))
}

/// The local part of an address: `[a-z0-9._-]{1,64}` after lower-casing,
/// beginning and ending with a letter or digit, without `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Alias(String);

impl Alias {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let lowered = Self::from_stored(text)?.0;
        // `.` and `..` cannot travel in a URL path (clients and proxies
        // resolve them away), and names made of punctuation or with empty
        // dot-separated parts are look-alike traps.
        let alphanumeric = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
        if !alphanumeric(lowered.as_bytes().first()) || !alphanumeric(lowered.as_bytes().last()) {
            return refuse("an alias begins and ends with a letter or a digit");
        }
        if lowered.contains("..") {
            return refuse("an alias may not contain two dots in a row");
        }
        Ok(Self(lowered))
    }

    /// An alias this server registered itself, under the character rule
    /// alone: aliases such as `-` or `a..b` were accepted before the shape
    /// rule of [`Alias::parse`], and their accounts must still be served.
    pub fn from_stored(text: &str) -> Result<Self, AddressError> {
        let lowered = text.to_ascii_lowercase();
        if lowered.is_empty() || lowered.len() > Self::MAX_LEN {
            return refuse("an alias is 1 to 64 characters long");
        }
        if !lowered
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            return refuse("an alias may contain only a-z, 0-9, '.', '_' and '-'");
        }
        Ok(Self(lowered))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a server name points before any resolution: a DNS name or an IP
/// literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Domain(String),
    Ip(IpAddr),
}

/// A server name as used in addresses: a lower-cased ASCII (IDNA) domain or an
/// IP literal, optionally followed by `:port`, as Matrix server names allow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName {
    host: Host,
    port: Option<u16>,
    canonical: String,
}

impl ServerName {
    const MAX_LEN: usize = 255;

    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return refuse("a server name is 1 to 255 characters long");
        }
        let (host_text, port) = split_port(text)?;
        let host = if let Some(inner) = host_text
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
        {
            match inner.parse::<Ipv6Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V6(ip)),
                Err(_) => return refuse("invalid IPv6 literal in server name"),
            }
        } else if let Ok(ip) = host_text.parse::<std::net::Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            // A trailing dot or IDNA's full-width dots can hide an IPv4
            // literal from the parse above; the canonical domain shows it.
            let domain = parse_domain(host_text)?;
            match domain.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) => Host::Domain(domain),
            }
        };
        let host_part = match &host {
            Host::Domain(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        };
        let canonical = match port {
            Some(port) => format!("{host_part}:{port}"),
            None => host_part,
        };
        Ok(Self {
            host,
            port,
            canonical,
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

fn split_port(text: &str) -> Result<(&str, Option<u16>), AddressError> {
    let port_start = if text.starts_with('[') {
        match text.find(']') {
            Some(end) if text[end + 1..].is_empty() => return Ok((text, None)),
            Some(end) if text[end + 1..].starts_with(':') => end + 1,
            _ => return refuse("invalid IPv6 literal in server name"),
        }
    } else {
        match text.rfind(':') {
            Some(idx) => idx,
            None => return Ok((text, None)),
        }
    };
    let port_text = &text[port_start + 1..];
    let valid_digits = !port_text.is_empty()
        && port_text.len() <= 5
        && port_text.bytes().all(|b| b.is_ascii_digit());
    match port_text.parse::<u16>() {
        Ok(port) if valid_digits && port != 0 => Ok((&text[..port_start], Some(port))),
        _ => refuse("the port of a server name must be a number from 1 to 65535"),
    }
}

fn parse_domain(text: &str) -> Result<String, AddressError> {
    let ascii = match idna::domain_to_ascii(text) {
        Ok(ascii) => ascii,
        Err(_) => return refuse("the server name is not a valid domain name"),
    };
    let ascii = ascii.strip_suffix('.').unwrap_or(&ascii).to_string();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if ascii.is_empty() || ascii.len() > 253 || !ascii.split('.').all(label_ok) {
        return refuse("the server name is not a valid domain name");
    }
    Ok(ascii)
}

/// The names this server answers to: `server.name` and every
/// `server.public_hosts` entry. An address at any of them is local, so a
/// message to it is never relayed back to this server.
#[derive(Debug, Clone)]
pub struct LocalNames {
    names: Vec<ServerName>,
}

impl LocalNames {
    /// The server's own name first, then its public hosts.
    pub fn new(server_name: &ServerName, public_hosts: &[ServerName]) -> Self {
        let mut names = vec![server_name.clone()];
        names.extend(public_hosts.iter().cloned());
        Self { names }
    }

    /// True when `server` is one of this server's names.
    pub fn contains(&self, server: &ServerName) -> bool {
        self.names.iter().any(|name| name == server)
    }
}

/// `alias@server`, the way people address each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    alias: Alias,
    server: ServerName,
}

impl Address {
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let Some((alias, server)) = text.split_once('@') else {
            return refuse("an address has the form alias@server");
        };
        Ok(Self {
            alias: Alias::parse(alias)?,
            server: ServerName::parse(server)?,
        })
    }

    pub fn new(alias: Alias, server: ServerName) -> Self {
        Self { alias, server }
    }

    pub fn alias(&self) -> &Alias {
        &self.alias
    }

    pub fn server(&self) -> &ServerName {
        &self.server
    }
}

macro_rules! display_and_serde {
    ($ty:ty, $fmt:expr) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                #[allow(clippy::redundant_closure_call)]
                ($fmt)(self, f)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

display_and_serde!(Alias, |a: &Alias, f: &mut fmt::Formatter<'_>| f
    .write_str(&a.0));
display_and_serde!(ServerName, |s: &ServerName, f: &mut fmt::Formatter<'_>| f
    .write_str(&s.canonical));
display_and_serde!(Address, |a: &Address, f: &mut fmt::Formatter<'_>| write!(
    f,
    "{}@{}",
    a.alias, a.server
));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_lowercased_and_restricted() {
        assert_eq!(
            Alias::parse("Bob.Smith_1-x").unwrap().as_str(),
            "bob.smith_1-x"
        );
        assert!(Alias::parse("").is_err());
        assert!(Alias::parse(&"a".repeat(65)).is_err());
        assert!(Alias::parse("bob smith").is_err());
        assert!(Alias::parse("bob+tag").is_err());
        assert!(Alias::parse("böb").is_err());
        for bad in [".", "..", "-", "_", "a..b", ".bob", "bob.", "-bob", "bob_"] {
            assert!(Alias::parse(bad).is_err(), "{bad} should be refused");
            // Registered before the shape rule: still served.
            assert_eq!(Alias::from_stored(bad).unwrap().as_str(), bad);
        }
        assert!(Alias::from_stored("bob smith").is_err());
        for good in ["a", "0", "b.o-b_9", "a.b.c"] {
            assert!(Alias::parse(good).is_ok(), "{good} should be accepted");
        }
    }

    #[test]
    fn server_names_keep_ports_and_normalise_case() {
        let name = ServerName::parse("Example.ORG:8448").unwrap();
        assert_eq!(name.as_str(), "example.org:8448");
        assert_eq!(name.port(), Some(8448));
        assert_eq!(
            ServerName::parse("127.0.0.1:9000").unwrap().as_str(),
            "127.0.0.1:9000"
        );
        assert_eq!(ServerName::parse("[::1]:80").unwrap().as_str(), "[::1]:80");
        // A trailing dot names the same server, IP literal or not.
        assert_eq!(
            ServerName::parse("127.0.0.1.:9000").unwrap(),
            ServerName::parse("127.0.0.1:9000").unwrap()
        );
        assert_eq!(
            ServerName::parse("Example.org.").unwrap(),
            ServerName::parse("example.org").unwrap()
        );
        assert_eq!(ServerName::parse("[::1]").unwrap().port(), None);
        assert_eq!(
            ServerName::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            ServerName::parse("xn--bcher-kva.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn server_names_refuse_bad_ports_and_labels() {
        for bad in [
            "",
            "example.org:",
            "example.org:0",
            "example.org:65536",
            "a..b",
            "-a.b",
            "a_b.c",
            "[::1",
            "::1",
            "exa mple.org",
            "host:+80",
            // An A-label must be valid Punycode.
            "xn--6x.example",
            "xn--a",
        ] {
            assert!(ServerName::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn addresses_round_trip() {
        let address = Address::parse("Alice@Example.org:8443").unwrap();
        assert_eq!(address.to_string(), "alice@example.org:8443");
        assert!(Address::parse("alice").is_err());
        assert!(Address::parse("@example.org").is_err());
        assert!(Address::parse("a@b@c").is_err());
    }
}
