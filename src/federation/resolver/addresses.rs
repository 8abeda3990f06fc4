//! Which addresses federation requests may reach. Server names come from
//! strangers (addresses users look up, `keyid`s, delegation documents, DNS
//! answers), so without a check a user or a peer could make this server
//! connect to itself or to its private network. By default only public
//! unicast addresses pass; `federation.allow_private_addresses` lifts that
//! for tests and closed networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A federation request refused because it would reach a non-public address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} is at {address}, a loopback, private or reserved address \
     (federation.allow_private_addresses is off)"
)]
pub struct PrivateAddress {
    /// The host name or IP literal that led there.
    pub host: String,
    /// The refused address.
    pub address: IpAddr,
}

impl PrivateAddress {
    /// The refusal somewhere in `error`'s chain of causes, as when reqwest
    /// reports that its resolver refused every address of a host.
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut next = Some(error);
        while let Some(cause) = next {
            if let Some(found) = cause.downcast_ref::<Self>() {
                return Some(found);
            }
            // An `io::Error` wrapping an error reports that error's source,
            // skipping the error itself.
            let wrapped = cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref);
            if let Some(found) = wrapped.and_then(|inner| inner.downcast_ref::<Self>()) {
                return Some(found);
            }
            next = cause.source();
        }
        None
    }
}

/// The refusal for `host` at `address`, or `None` when it may be reached.
pub(crate) fn check(host: &str, address: IpAddr, allow_private: bool) -> Option<PrivateAddress> {
    (!allow_private && is_private(address)).then(|| PrivateAddress {
        host: host.to_string(),
        address,
    })
}

/// True for loopback, private (RFC 1918, ULA `fc00::/7`), link-local,
/// multicast, unspecified and "this network" (`0.0.0.0/8`), CGNAT
/// (`100.64.0.0/10`), broadcast and site-local addresses, and for IPv6
/// forms that carry one of those IPv4 addresses.
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || (a == 100 && (b & 0xc0) == 64)
}

fn private_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return private_v4(v4);
    }
    let first = ip.segments()[0];
    ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, which also covers `::` and `::1`) or NAT64
/// (`64:ff9b::a.b.c.d`) address: connecting to one reaches the other.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let segments = ip.segments();
    let tail = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    match segments[..6] {
        [0, 0, 0, 0, 0, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(tail()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_private() {
        for text in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
        ] {
            let address: IpAddr = text.parse().unwrap();
            assert!(is_private(address), "{text} should be private");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.2.7",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::1.1.1.1",
        ] {
            let address: IpAddr = text.parse().unwrap();
            assert!(!is_private(address), "{text} should be public");
        }
    }

    #[test]
    fn the_setting_lifts_the_check_and_the_refusal_is_found_in_a_chain() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check("h", loopback, true).is_none());
        let refused = check("h", loopback, false).unwrap();
        let wrapped = std::io::Error::other(refused.clone());
        assert_eq!(PrivateAddress::find_in(&wrapped), Some(&refused));
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] PrivateAddress);
        let outer = Outer(refused.clone());
        assert_eq!(PrivateAddress::find_in(&outer), Some(&refused));
    }
}
