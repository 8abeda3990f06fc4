//! The DNS resolver the server's federation and the client both use: hickory
//! on the configured name servers, or on the system configuration.

use std::net::SocketAddr;

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

/// A hickory resolver on `nameservers` (UDP and TCP each), or on the system
/// configuration when the list is empty.
pub fn build_resolver(nameservers: &[SocketAddr]) -> TokioResolver {
    if nameservers.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(builder) => return builder.build(),
            Err(error) => tracing::warn!(
                %error,
                "cannot read the system DNS configuration; federation lookups use \
                 hickory's default public resolvers until federation.nameservers is set"
            ),
        }
        return TokioResolver::builder_with_config(
            ResolverConfig::default(),
            TokioConnectionProvider::default(),
        )
        .build();
    }
    let mut group = NameServerConfigGroup::with_capacity(nameservers.len() * 2);
    for addr in nameservers {
        group.push(NameServerConfig::new(*addr, Protocol::Udp));
        group.push(NameServerConfig::new(*addr, Protocol::Tcp));
    }
    let config = ResolverConfig::from_parts(None, Vec::new(), group);
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_used_over_udp_and_tcp() {
        let addr: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let resolver = build_resolver(&[addr]);
        let servers = resolver.config().name_servers();
        assert_eq!(servers.len(), 2);
        assert!(servers.iter().all(|server| server.socket_addr == addr));
        assert_eq!(servers[0].protocol, Protocol::Udp);
        assert_eq!(servers[1].protocol, Protocol::Tcp);
    }
}
