//! A resolution that says what each step found, for an admin checking
//! federation by hand: the same steps as [`FederationClient::resolve`],
//! without either cache.

use serde::Serialize;

use super::dns::{SrvError, SrvRoute};
use super::well_known::{WellKnown, PATH};
use super::{destination, Destination, FederationClient, ResolveError, DEFAULT_PORT};
use crate::address::{Host, ServerName};
use crate::storage::StorageError;
use crate::time::now_ms;

/// What one step of a resolution found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolutionStep {
    /// `name`, `well_known`, `srv` or `target`.
    pub step: &'static str,
    /// False when this step made the resolution fail.
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
}

/// What the daemon's shared cache holds for a server name: the base URL
/// or the remembered failure, until `expires_at` (Unix ms). Until then a
/// daemon does not resolve the name again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResolution {
    pub outcome: Result<String, String>,
    pub expires_at: i64,
}

/// The steps of a resolution and where it ended.
#[derive(Debug, Clone)]
pub struct Explained {
    pub steps: Vec<ResolutionStep>,
    pub result: Result<Destination, ResolveError>,
}

fn step(step: &'static str, ok: bool, detail: String) -> ResolutionStep {
    ResolutionStep { step, ok, detail }
}

impl FederationClient {
    /// The unexpired outcome the daemons of this server share for `server`
    /// (table `resolution_cache`), if any; names used as written have none.
    pub async fn cached_resolution(
        &self,
        server: &ServerName,
    ) -> Result<Option<CachedResolution>, StorageError> {
        let cached = super::cache::load(&self.inner.db, server.as_str(), now_ms()).await?;
        Ok(cached.map(|cached| CachedResolution {
            outcome: cached.outcome.map(|target| target.url),
            expires_at: cached.expires_at,
        }))
    }

    /// Resolves `server` afresh, neither reading nor writing the caches,
    /// and says what each step found. Like `resolve`, it points the host at
    /// its SRV targets, so requests through [`FederationClient::http`] go
    /// where the steps say.
    pub async fn explain(&self, server: &ServerName) -> Explained {
        let mut steps = Vec::new();
        let domain = match (server.host(), server.port()) {
            (Host::Domain(domain), None) => domain,
            (host, port) => {
                let what = match (host, port) {
                    (Host::Ip(_), None) => "an IP literal without a port (443)",
                    (Host::Ip(_), Some(_)) => "an IP literal with a port",
                    (Host::Domain(_), _) => "a name with an explicit port",
                };
                let target = self.direct(host, port.unwrap_or(DEFAULT_PORT));
                steps.push(step(
                    "name",
                    true,
                    format!("{server} is {what}: used as written, nothing is looked up"),
                ));
                steps.push(target_step(&target));
                return Explained {
                    steps,
                    result: Ok(destination(server, &target)),
                };
            }
        };
        steps.push(step(
            "name",
            true,
            format!("{server} is a domain without a port: look for a delegation, then SRV records"),
        ));
        let result = self.discover(server.as_str(), domain, &mut steps).await;
        let result = result.map(|(target, _)| {
            self.point(&target);
            steps.push(target_step(&target));
            destination(server, &target)
        });
        Explained { steps, result }
    }
}

/// Where requests go, and whose addresses the connection uses.
fn target_step(target: &super::cache::Target) -> ResolutionStep {
    let connect = match target.srv.as_deref() {
        Some(targets) if !targets.is_empty() => format!(
            "TCP to the addresses of {} (SRV targets), TLS and Host for {}",
            targets.join(", then "),
            target.host
        ),
        _ if target.host.parse::<std::net::IpAddr>().is_ok() => "TCP to that address".into(),
        _ => format!("TCP to the addresses of {}", target.host),
    };
    step(
        "target",
        true,
        format!("requests go to {}: {connect}", target.url),
    )
}

/// What the well-known fetch of `domain` found.
pub(super) fn well_known_step(scheme: &str, domain: &str, fetched: &WellKnown) -> ResolutionStep {
    let url = format!("{scheme}://{domain}{PATH}");
    match fetched {
        WellKnown::Delegated { server, ttl } => step(
            "well_known",
            true,
            format!(
                "{url} delegates to {server} (trusted for {}s)",
                ttl.as_secs()
            ),
        ),
        WellKnown::Absent(reason) => step(
            "well_known",
            true,
            format!("no delegation at {url} ({reason})"),
        ),
        WellKnown::Invalid(reason) => step(
            "well_known",
            false,
            format!("{url} answered 200 but is not a valid delegation: {reason}"),
        ),
    }
}

/// What the SRV lookup for `host` found.
pub(super) fn srv_step(host: &str, found: &Result<Option<SrvRoute>, SrvError>) -> ResolutionStep {
    let name = format!("_homing._tcp.{host}.");
    match found {
        Ok(Some(route)) => step(
            "srv",
            true,
            format!(
                "{name} names port {} on {}",
                route.port,
                route.targets.join(", ")
            ),
        ),
        Ok(None) => step(
            "srv",
            true,
            format!("{name} has no SRV records: port {DEFAULT_PORT}"),
        ),
        Err(SrvError::NoService) => step(
            "srv",
            false,
            format!("{name} has the target \".\": {host} offers no Homing service"),
        ),
        Err(SrvError::Invalid(reason)) => {
            step("srv", false, format!("{name} is unusable: {reason}"))
        }
        Err(SrvError::Transient(reason)) => {
            step("srv", false, format!("looking up {name} failed: {reason}"))
        }
    }
}
