//! Finding where another Homing server listens, and the HTTP client that
//! talks to it. The rules are in `federation-spec/resolution.md`:
//!
//! 1. an IP literal or an explicit port is used as written;
//! 2. otherwise `/.well-known/homing/server` may delegate to another host;
//! 3. otherwise `_homing._tcp` SRV records may name targets and a port;
//! 4. otherwise port 443.
//!
//! Outcomes (failures too) are cached in memory and in `resolution_cache`.

mod addresses;
mod cache;
mod client;
mod dns;
mod explain;
mod well_known;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;

use crate::address::{Host, ServerName};
use crate::config::FederationSettings;
use crate::storage::Database;
use crate::time::{duration_ms, now_ms};

use cache::{Cached, MemoryCache, Outcome, Target};
use client::HostMap;
use dns::SrvError;
use well_known::WellKnown;

pub use addresses::{is_private, PrivateAddress};
pub use explain::{CachedResolution, Explained, ResolutionStep};
pub use well_known::error_chain;
pub use well_known::{MAX_BODY_BYTES as WELL_KNOWN_MAX_BYTES, PATH as WELL_KNOWN_PATH};

/// The port used when neither the name, a delegation nor SRV gives one.
pub const DEFAULT_PORT: u16 = 443;
/// How many server names the in-memory cache holds.
const MEMORY_CACHE_ENTRIES: usize = 10_000;
/// How long a result is trusted when the well-known document was missing:
/// a domain that starts delegating is noticed within this time.
const NO_DELEGATION_TTL: Duration = Duration::from_secs(3600);
/// How long a failure is remembered before the name is tried again.
const FAILURE_TTL: Duration = Duration::from_secs(3600);
/// The same for failed DNS lookups, which are usually passing trouble.
const TRANSIENT_FAILURE_TTL: Duration = Duration::from_secs(5 * 60);

/// Where requests for a server go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The server name that was resolved.
    pub server_name: ServerName,
    /// `scheme://host:port` without a trailing slash; append the path.
    pub base_url: String,
}

/// Why a server name could not be resolved, or the client not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The federation settings do not give a working client.
    #[error("federation client set-up: {0}")]
    Setup(String),
    /// The well-known document answered 200 but is not a valid delegation.
    #[error("{server}: invalid {}: {reason}", well_known::PATH)]
    InvalidWellKnown { server: String, reason: String },
    /// The SRV records say there is no Homing service, or none is usable.
    #[error("{server}: {reason}")]
    Srv { server: String, reason: String },
    /// A DNS lookup failed other than with "no such name or record".
    #[error("{server}: DNS lookup failed: {reason}")]
    Dns { server: String, reason: String },
    /// An earlier resolution failed and that failure is still cached.
    #[error("{reason} (remembered failure)")]
    Cached { server: String, reason: String },
    /// The server is at an address `federation.allow_private_addresses`
    /// keeps this server from reaching.
    #[error(transparent)]
    PrivateAddress(#[from] PrivateAddress),
}

impl ResolveError {
    /// How long this failure is remembered.
    fn ttl(&self) -> Duration {
        match self {
            ResolveError::Dns { .. } => TRANSIENT_FAILURE_TTL,
            _ => FAILURE_TTL,
        }
    }
}

/// Resolves server names and sends federation requests: one reqwest client
/// (rustls, webpki roots plus `federation.extra_ca_file`, no proxy, no
/// redirects) whose DNS goes through hickory and follows SRV targets.
/// Cheap to clone.
#[derive(Clone)]
pub struct FederationClient {
    inner: Arc<Inner>,
}

struct Inner {
    scheme: &'static str,
    allow_private: bool,
    http: reqwest::Client,
    well_known_http: reqwest::Client,
    push_http: reqwest::Client,
    dns: TokioResolver,
    hosts: Arc<HostMap>,
    memory: MemoryCache,
    db: Database,
}

impl std::fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationClient")
            .field("scheme", &self.inner.scheme)
            .finish_non_exhaustive()
    }
}

impl FederationClient {
    /// Builds the client; reads `extra_ca_file` and the system DNS
    /// configuration, so call it once at start-up.
    pub fn new(settings: &FederationSettings, db: Database) -> Result<Self, ResolveError> {
        let scheme = if settings.allow_insecure_http {
            "http"
        } else {
            "https"
        };
        let dns = dns::build_resolver(&settings.nameservers);
        let hosts = Arc::new(HostMap::default());
        let clients = client::build(settings, &dns, &hosts)?;
        Ok(Self {
            inner: Arc::new(Inner {
                scheme,
                allow_private: settings.allow_private_addresses,
                http: clients.http,
                well_known_http: clients.well_known,
                push_http: clients.push,
                dns,
                hosts,
                memory: MemoryCache::new(MEMORY_CACHE_ENTRIES),
                db,
            }),
        })
    }

    /// The client for requests to a [`Destination`]'s `base_url`. Resolve
    /// the server first (a memory lookup once cached): that is what points
    /// the host name at its SRV targets.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The client for Web Push requests: the same TLS roots and address
    /// rules as federation, a host's own addresses, no redirects. An IP
    /// literal in a URL never reaches its address check: see
    /// [`Self::literal_refusal`].
    pub fn push_http(&self) -> &reqwest::Client {
        &self.inner.push_http
    }

    /// The refusal of `host` when it is an IP literal federation may not
    /// reach (host names are checked when they are looked up).
    pub fn literal_refusal(&self, host: &str) -> Option<PrivateAddress> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip = bare.parse::<IpAddr>().ok()?;
        addresses::check(bare, ip, self.inner.allow_private)
    }

    /// Connects `host` to `addr` instead of looking it up, like curl's
    /// `--resolve`; a non-zero port replaces the URL's default port.
    pub fn pin_host(&self, host: &str, addr: SocketAddr) {
        self.inner.hosts.pin(host, addr);
    }

    /// Finds where `server` listens, from the cache when it is fresh.
    pub async fn resolve(&self, server: &ServerName) -> Result<Destination, ResolveError> {
        let domain = match (server.host(), server.port()) {
            (Host::Domain(domain), None) => domain,
            (host, port) => {
                let target = self.direct(host, port.unwrap_or(DEFAULT_PORT));
                self.admit(&target)?;
                return Ok(destination(server, &target));
            }
        };
        let key = server.as_str();
        let now = now_ms();
        if let Some(outcome) = self.inner.memory.get(key, now) {
            return self.cached(server, outcome);
        }
        match cache::load(&self.inner.db, key, now).await {
            // A row written before `allow_insecure_http` changed is resolved
            // again rather than used with the other scheme.
            Ok(Some(cached)) if self.has_scheme(&cached.outcome) => {
                let outcome = cached.outcome.clone();
                self.inner.memory.insert(key, cached, now);
                return self.cached(server, outcome);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(server = key, %error, "resolution cache unreadable"),
        }
        let (result, ttl) = match self.discover(key, domain, &mut Vec::new()).await {
            Ok((target, ttl)) => (Ok(target), ttl),
            Err(error) => {
                let ttl = error.ttl();
                (Err(error), ttl)
            }
        };
        match &result {
            Ok(target) => tracing::debug!(server = key, url = %target.url, ?ttl, "resolved"),
            Err(error) => tracing::info!(server = key, %error, ?ttl, "resolution failed"),
        }
        let outcome: Outcome = result.clone().map_err(|error| error.to_string());
        let resolved_at = now_ms();
        let expires_at = resolved_at.saturating_add(duration_ms(ttl));
        if let Err(error) =
            cache::store(&self.inner.db, key, &outcome, resolved_at, expires_at).await
        {
            tracing::warn!(server = key, %error, "resolution cache not written");
        }
        if let Ok(target) = &outcome {
            self.point(target);
        }
        let cached = Cached {
            outcome,
            expires_at,
        };
        self.inner.memory.insert(key, cached, resolved_at);
        let target = result?;
        self.admit(&target)?;
        Ok(destination(server, &target))
    }

    /// Refuses a target that is an IP literal this server may not reach.
    /// reqwest connects to IP literals without asking the resolver, which
    /// checks every looked-up address; so a literal is checked here, after
    /// the cache: the outcome is cached as found and refused on every use,
    /// whatever `allow_private_addresses` was when it was resolved.
    fn admit(&self, target: &Target) -> Result<(), ResolveError> {
        let host = target.host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(ip) => match addresses::check(host, ip, self.inner.allow_private) {
                Some(refusal) => Err(refusal.into()),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }

    /// A cached outcome as the caller sees it.
    fn cached(&self, server: &ServerName, outcome: Outcome) -> Result<Destination, ResolveError> {
        match outcome {
            Ok(target) => {
                self.admit(&target)?;
                self.point(&target);
                Ok(destination(server, &target))
            }
            Err(reason) => Err(ResolveError::Cached {
                server: server.to_string(),
                reason,
            }),
        }
    }

    /// False for a target whose URL uses the other scheme.
    fn has_scheme(&self, outcome: &Outcome) -> bool {
        match outcome {
            Ok(target) => target
                .url
                .strip_prefix(self.inner.scheme)
                .is_some_and(|rest| rest.starts_with("://")),
            Err(_) => true,
        }
    }

    /// Points the target's host name at its SRV targets (or back at itself).
    fn point(&self, target: &Target) {
        if let Some(srv) = &target.srv {
            self.inner.hosts.set_srv(&target.host, srv);
        }
    }

    /// Steps 2 to 4 for a domain without a port: the target and how long it
    /// may be trusted. What each step found is added to `steps`.
    async fn discover(
        &self,
        server: &str,
        domain: &str,
        steps: &mut Vec<ResolutionStep>,
    ) -> Result<(Target, Duration), ResolveError> {
        let fetched =
            well_known::fetch(&self.inner.well_known_http, self.inner.scheme, domain).await;
        steps.push(explain::well_known_step(
            self.inner.scheme,
            domain,
            &fetched,
        ));
        match fetched {
            WellKnown::Delegated {
                server: delegated,
                ttl,
            } => {
                tracing::debug!(server, delegated = %delegated, "delegated by the well-known document");
                match (delegated.host(), delegated.port()) {
                    (Host::Domain(host), None) => {
                        let (target, srv_ttl) = self.via_srv(server, host, steps).await?;
                        Ok((target, srv_ttl.map_or(ttl, |srv_ttl| srv_ttl.min(ttl))))
                    }
                    (host, port) => Ok((self.direct(host, port.unwrap_or(DEFAULT_PORT)), ttl)),
                }
            }
            WellKnown::Absent(reason) => {
                tracing::debug!(server, %reason, "no well-known delegation");
                let (target, srv_ttl) = self.via_srv(server, domain, steps).await?;
                let ttl = srv_ttl.map_or(NO_DELEGATION_TTL, |t| t.min(NO_DELEGATION_TTL));
                Ok((target, ttl))
            }
            WellKnown::Invalid(reason) => Err(ResolveError::InvalidWellKnown {
                server: server.to_string(),
                reason,
            }),
        }
    }

    /// Steps 3 and 4 for `host`: its SRV route, else port 443. The duration
    /// is the SRV answer's, when there was one.
    async fn via_srv(
        &self,
        server: &str,
        host: &str,
        steps: &mut Vec<ResolutionStep>,
    ) -> Result<(Target, Option<Duration>), ResolveError> {
        let srv_error = |reason: String| ResolveError::Srv {
            server: server.to_string(),
            reason,
        };
        let found = dns::lookup_srv(&self.inner.dns, host).await;
        steps.push(explain::srv_step(host, &found));
        match found {
            Ok(Some(route)) => Ok((
                Target {
                    url: self.url(host, route.port),
                    host: host.to_string(),
                    srv: Some(route.targets),
                },
                Some(route.ttl),
            )),
            Ok(None) => Ok((
                Target {
                    url: self.url(host, DEFAULT_PORT),
                    host: host.to_string(),
                    srv: Some(Vec::new()),
                },
                None,
            )),
            Err(SrvError::NoService) => Err(srv_error(format!(
                "the SRV record of {host} says it offers no Homing service"
            ))),
            Err(SrvError::Invalid(reason)) => Err(srv_error(format!(
                "unusable SRV records for {host}: {reason}"
            ))),
            Err(SrvError::Transient(reason)) => Err(ResolveError::Dns {
                server: server.to_string(),
                reason,
            }),
        }
    }

    /// A target used as written: no SRV lookup decides its port.
    fn direct(&self, host: &Host, port: u16) -> Target {
        let host = match host {
            Host::Domain(domain) => domain.clone(),
            Host::Ip(ip) => ip.to_string(),
        };
        Target {
            url: self.url(&host, port),
            host,
            srv: None,
        }
    }

    /// `scheme://host[:port]`, with brackets around an IPv6 literal.
    fn url(&self, host: &str, port: u16) -> String {
        base_url(self.inner.scheme, host, port)
    }
}

/// The canonical base URL (RFC 3986 §6.2.3): the port is left out when it
/// is the scheme's default, as HTTP leaves it out of `Host`, so the URL a
/// request is signed for is the one the receiver rebuilds.
fn base_url(scheme: &str, host: &str, port: u16) -> String {
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_string(),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

fn destination(server: &ServerName, target: &Target) -> Destination {
    Destination {
        server_name: server.clone(),
        base_url: target.url.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_leave_out_only_the_schemes_default_port() {
        assert_eq!(base_url("https", "b.example", 443), "https://b.example");
        assert_eq!(
            base_url("https", "b.example", 8448),
            "https://b.example:8448"
        );
        assert_eq!(base_url("http", "127.0.0.3", 80), "http://127.0.0.3");
        // Insecure federation keeps Homing's port 443: not http's default.
        assert_eq!(base_url("http", "127.0.0.3", 443), "http://127.0.0.3:443");
        assert_eq!(base_url("https", "::1", 443), "https://[::1]");
        assert_eq!(base_url("https", "::1", 8448), "https://[::1]:8448");
    }

    #[test]
    fn failures_are_remembered_for_an_hour_and_dns_trouble_briefly() {
        let srv = ResolveError::Srv {
            server: "a".into(),
            reason: "b".into(),
        };
        assert_eq!(srv.ttl(), FAILURE_TTL);
        let dns = ResolveError::Dns {
            server: "a".into(),
            reason: "b".into(),
        };
        assert_eq!(dns.ttl(), TRANSIENT_FAILURE_TTL);
    }
}
