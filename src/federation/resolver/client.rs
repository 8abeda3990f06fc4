//! The HTTP clients: rustls with the webpki roots plus
//! `federation.extra_ca_file`, no proxy, and DNS through hickory, where a
//! host name with SRV records connects to its targets' addresses while TLS
//! and `Host` keep the host name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Resolve, Resolving};

use super::{addresses, ResolveError};
use crate::config::FederationSettings;

/// Most host names whose connections are redirected to SRV targets; each
/// resolution re-installs its own entry, so a dropped one comes back.
const MAX_SRV_HOSTS: usize = 10_000;
/// Limits on the well-known fetch.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
const WELL_KNOWN_MAX_REDIRECTS: usize = 3;
/// Default limits on federation requests; a caller may set a per-request
/// time-out with `RequestBuilder::timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The three clients: federation requests (following SRV targets, no
/// redirects), well-known fetches (a host's own addresses, a few
/// redirects, a short time-out) and Web Push requests (a host's own
/// addresses, no redirects; each request sets its time-out).
pub(crate) struct Clients {
    pub http: reqwest::Client,
    pub well_known: reqwest::Client,
    pub push: reqwest::Client,
}

/// Builds both clients over `dns` and the shared `hosts` overrides.
pub(crate) fn build(
    settings: &FederationSettings,
    dns: &TokioResolver,
    hosts: &Arc<HostMap>,
) -> Result<Clients, ResolveError> {
    let roots = match &settings.extra_ca_file {
        Some(path) => read_certificates(path)?,
        None => Vec::new(),
    };
    let allow_private = settings.allow_private_addresses;
    let builder = |follow_srv: bool| {
        let resolver = ConnectResolver {
            dns: dns.clone(),
            hosts: hosts.clone(),
            follow_srv,
            allow_private,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(!settings.allow_insecure_http)
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("homing/", env!("CARGO_PKG_VERSION")));
        for root in &roots {
            builder = builder.add_root_certificate(root.clone());
        }
        builder
    };
    let setup = |e: reqwest::Error| ResolveError::Setup(e.to_string());
    let http = builder(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(setup)?;
    let well_known = builder(false)
        .redirect(well_known_redirects(allow_private))
        .timeout(WELL_KNOWN_TIMEOUT)
        .build()
        .map_err(setup)?;
    let push = builder(false)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(setup)?;
    Ok(Clients {
        http,
        well_known,
        push,
    })
}

/// At most a few redirects, none to a refused IP literal: reqwest does not
/// ask the resolver about IP literals, so its address check would not see
/// them. Host names are checked by [`ConnectResolver`] like any other.
fn well_known_redirects(allow_private: bool) -> reqwest::redirect::Policy {
    let limited = reqwest::redirect::Policy::limited(WELL_KNOWN_MAX_REDIRECTS);
    reqwest::redirect::Policy::custom(move |attempt| {
        // The URL parser has already put IP literals in canonical form.
        let literal = attempt
            .url()
            .host_str()
            .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|host| Some((host, host.parse::<IpAddr>().ok()?)));
        let refused = literal.and_then(|(host, ip)| addresses::check(host, ip, allow_private));
        match refused {
            Some(refusal) => attempt.error(refusal),
            None => limited.redirect(attempt),
        }
    })
}

/// The PEM certificates in `path`, refusing a file that holds none.
fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, ResolveError> {
    let unusable = |reason: String| {
        ResolveError::Setup(format!(
            "federation.extra_ca_file {}: {reason}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no PEM certificate in the file".into()));
    }
    Ok(certificates)
}

/// Host-name overrides shared by the resolver's HTTP clients.
#[derive(Default)]
pub(crate) struct HostMap {
    pins: RwLock<HashMap<String, SocketAddr>>,
    srv: RwLock<HashMap<String, Vec<String>>>,
}

impl HostMap {
    /// Connects `host` to `addr` instead of looking it up.
    pub fn pin(&self, host: &str, addr: SocketAddr) {
        let mut pins = self.pins.write().unwrap_or_else(|e| e.into_inner());
        pins.insert(normalise(host), addr);
    }

    /// Connects `host` to the addresses of `targets`, or to its own when
    /// `targets` is empty.
    pub fn set_srv(&self, host: &str, targets: &[String]) {
        let host = normalise(host);
        {
            let current = self.srv.read().unwrap_or_else(|e| e.into_inner());
            let unchanged = match current.get(&host) {
                Some(existing) => existing.as_slice() == targets,
                None => targets.is_empty(),
            };
            if unchanged {
                return;
            }
        }
        let mut srv = self.srv.write().unwrap_or_else(|e| e.into_inner());
        if targets.is_empty() {
            srv.remove(&host);
            return;
        }
        if !srv.contains_key(&host) && srv.len() >= MAX_SRV_HOSTS {
            if let Some(victim) = srv.keys().next().cloned() {
                srv.remove(&victim);
            }
        }
        srv.insert(host, targets.to_vec());
    }

    fn srv_targets(&self, host: &str) -> Option<Vec<String>> {
        let srv = self.srv.read().unwrap_or_else(|e| e.into_inner());
        srv.get(host).cloned()
    }

    fn pinned(&self, host: &str) -> Option<SocketAddr> {
        let pins = self.pins.read().unwrap_or_else(|e| e.into_inner());
        pins.get(host).copied()
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// reqwest's resolver: pins first, then (when `follow_srv`) the SRV targets
/// of the host, then the host itself, all looked up through hickory. Looked
/// up addresses that are not public are dropped unless `allow_private`:
/// this is where a DNS answer or an SRV target pointing at loopback or a
/// private network is stopped. Pins are set by this server's own code, not
/// by peers, and pass unchecked.
pub(crate) struct ConnectResolver {
    dns: TokioResolver,
    hosts: Arc<HostMap>,
    follow_srv: bool,
    allow_private: bool,
}

impl Resolve for ConnectResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> Resolving {
        let host = normalise(name.as_str());
        let lookups = self
            .follow_srv
            .then(|| self.hosts.srv_targets(&host))
            .flatten()
            .unwrap_or_else(|| vec![host.clone()]);
        let plan: Vec<(String, Option<SocketAddr>)> = lookups
            .into_iter()
            .map(|name| {
                let pinned = self.hosts.pinned(&name);
                (name, pinned)
            })
            .collect();
        let dns = self.dns.clone();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let mut addrs = Vec::new();
            let mut last_error = None;
            let mut refused = None;
            for (name, pinned) in plan {
                if let Some(addr) = pinned {
                    addrs.push(addr);
                    continue;
                }
                match dns.lookup_ip(format!("{name}.")).await {
                    Ok(found) => {
                        for ip in found.iter() {
                            match addresses::check(&name, ip, allow_private) {
                                // Port 0 lets the connector use the port of the URL.
                                None => addrs.push(SocketAddr::new(ip, 0)),
                                Some(refusal) => refused = Some(refusal),
                            }
                        }
                    }
                    Err(error) => last_error = Some(format!("{name}: {error}")),
                }
            }
            if let (true, Some(refusal)) = (addrs.is_empty(), refused) {
                return Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>);
            }
            if addrs.is_empty() {
                let reason = last_error.unwrap_or_else(|| "no addresses".into());
                return Err(format!("cannot resolve {host}: {reason}").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_overrides_are_replaced_and_removed() {
        let hosts = HostMap::default();
        hosts.set_srv("Example.org", &["a.example".into()]);
        assert_eq!(
            hosts.srv_targets("example.org"),
            Some(vec!["a.example".to_string()])
        );
        hosts.set_srv("example.org", &["b.example".into()]);
        assert_eq!(
            hosts.srv_targets("example.org"),
            Some(vec!["b.example".to_string()])
        );
        hosts.set_srv("example.org", &[]);
        assert_eq!(hosts.srv_targets("example.org"), None);
    }

    #[test]
    fn an_empty_or_missing_ca_file_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for path in [empty, dir.path().join("missing.pem")] {
            let error = read_certificates(&path).unwrap_err();
            assert!(matches!(error, ResolveError::Setup(_)), "{error}");
            assert!(error.to_string().contains("extra_ca_file"), "{error}");
        }
    }
}
