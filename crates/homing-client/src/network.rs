//! How the client reaches servers: which certificate authorities it trusts
//! beyond the Web PKI and which nameservers it asks. A person on a private
//! network (a test network, a company's own CA) sets them once with
//! `--ca-file` and `--nameserver`; nobody needs to turn TLS off for it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use super::api::ClientError;

/// Trusted roots and name resolution for every connection the client makes
/// (HTTP and the WebSocket gateway). Cheap to clone.
#[derive(Clone, Default)]
pub struct Network {
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
    resolver: Option<TokioResolver>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("extra_roots", &self.extra_roots.len())
            .field("own_nameservers", &self.resolver.is_some())
            .finish()
    }
}

/// Why the network settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

impl Network {
    /// The Web PKI roots plus the PEM certificates in `ca_file`; names
    /// resolved through `nameservers` when any are given, else the system's.
    pub fn new(ca_file: Option<&Path>, nameservers: &[SocketAddr]) -> Result<Self, NetworkError> {
        let extra_roots = match ca_file {
            Some(path) => read_certificates(path)?,
            None => Vec::new(),
        };
        let resolver =
            (!nameservers.is_empty()).then(|| homing_proto::dns::build_resolver(nameservers));
        Ok(Self {
            extra_roots: Arc::new(extra_roots),
            resolver,
        })
    }

    /// An HTTP client with these roots and this resolver.
    pub fn http_client(&self, timeout: Duration) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        for root in self.extra_roots.iter() {
            if let Ok(certificate) = reqwest::Certificate::from_der(root) {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(resolver) = &self.resolver {
            builder = builder.dns_resolver(Arc::new(HickoryResolve(resolver.clone())));
        }
        builder.build().unwrap_or_default()
    }

    /// TLS settings for a raw connection (the gateway's WebSocket).
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for root in self.extra_roots.iter() {
            roots
                .add(root.clone())
                .map_err(|e| ClientError::Protocol(format!("unusable CA certificate: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }

    /// A TCP connection to `host:port`, the name resolved like HTTP's.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let Some(resolver) = &self.resolver else {
            return tokio::net::TcpStream::connect((host, port)).await;
        };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return tokio::net::TcpStream::connect((ip, port)).await;
        }
        let found = resolver
            .lookup_ip(host)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        let mut last = std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        );
        for ip in found.iter() {
            match tokio::net::TcpStream::connect((ip, port)).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = error,
            }
        }
        Err(last)
    }
}

/// reqwest's name resolution through a hickory resolver.
struct HickoryResolve(TokioResolver);

impl Resolve for HickoryResolve {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let found = resolver.lookup_ip(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The PEM certificates in `path`, refusing a file that holds none.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetworkError> {
    let unusable = |reason: String| NetworkError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable("no PEM certificate in the file".into()));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = Network::new(Some(&path), &[]).unwrap_err().to_string();
        assert!(error.contains("empty.pem"), "{error}");
        assert!(error.contains("no PEM certificate"), "{error}");
        let missing = Network::new(Some(&dir.path().join("missing.pem")), &[]);
        assert!(missing.is_err());
    }

    #[test]
    fn a_pem_certificate_is_trusted_for_raw_tls_too() {
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["ca.homing.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, certificate.pem()).unwrap();
        let network = Network::new(Some(&path), &[]).unwrap();
        assert_eq!(network.extra_roots.len(), 1);
        network.tls_config().unwrap();
    }
}
