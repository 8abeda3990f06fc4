//! The digest a send is remembered by: a retry with the same message id
//! must carry the same content, and "the same" must not depend on the order
//! the client lists recipients and devices in.

use sha2::{Digest, Sha256};

use super::{DeviceWrap, SendRequest};
use crate::crypto::canonical::write_string;

/// SHA-256 of the request's canonical JSON (RFC 8785) with recipients
/// sorted by address, each recipient's devices by id, and addresses in
/// lower case.
///
/// The bytes are exactly those `to_canonical_bytes` gives for that
/// normalised request (a test holds the two together), written out
/// directly: going through a clone and a `serde_json::Value` copied the
/// body three times per send, a tenth of the request path's time.
pub(super) fn request_digest(request: &SendRequest) -> Vec<u8> {
    let mut recipients: Vec<_> = request.recipients.iter().collect();
    // Sorted before the addresses are lowered, as the stored digests were.
    recipients.sort_by(|a, b| a.address.cmp(&b.address));
    let wraps: usize = request
        .recipients
        .iter()
        .map(|r| r.address.len() + r.devices.len() * 400)
        .sum();
    let mut out = Vec::with_capacity(request.body.len() + wraps + 128);
    out.extend_from_slice(b"{\"body\":");
    write_string(&request.body, &mut out);
    out.extend_from_slice(b",\"delivery\":");
    write_string(request.delivery.as_str(), &mut out);
    out.extend_from_slice(b",\"message_id\":");
    write_string(&request.message_id, &mut out);
    out.extend_from_slice(b",\"recipients\":[");
    for (i, recipient) in recipients.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"address\":");
        write_string(&recipient.address.to_ascii_lowercase(), &mut out);
        out.extend_from_slice(b",\"devices\":[");
        let mut devices: Vec<&DeviceWrap> = recipient.devices.iter().collect();
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        for (j, device) in devices.into_iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"device_id\":");
            write_string(&device.device_id, &mut out);
            out.extend_from_slice(b",\"key_wrap\":");
            write_string(&device.key_wrap, &mut out);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    Sha256::digest(&out).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::canonical::to_canonical_bytes;
    use crate::mailbox::DeliveryMode;
    use crate::mailbox::RecipientWraps;

    /// The digest as it was first defined: through the generic canonical
    /// form of a normalised copy.
    fn reference(request: &SendRequest) -> Vec<u8> {
        let mut normal = request.clone();
        normal.recipients.sort_by(|a, b| a.address.cmp(&b.address));
        for recipient in &mut normal.recipients {
            recipient.address = recipient.address.to_ascii_lowercase();
            recipient
                .devices
                .sort_by(|a, b| a.device_id.cmp(&b.device_id));
        }
        Sha256::digest(to_canonical_bytes(&normal).unwrap()).to_vec()
    }

    fn wrap(device_id: &str, key_wrap: &str) -> DeviceWrap {
        DeviceWrap {
            device_id: device_id.into(),
            key_wrap: key_wrap.into(),
        }
    }

    fn request(addresses: &[&str], delivery: DeliveryMode) -> SendRequest {
        SendRequest {
            message_id: "0190a1b2c3d4AbCdEfGhIjKlMnOpQrSt".into(),
            body: "Zm9v-YmFy_".repeat(150),
            delivery,
            recipients: addresses
                .iter()
                .map(|address| RecipientWraps {
                    address: address.to_string(),
                    devices: vec![wrap("phone", "d3JhcA"), wrap("laptop", "a2V5")],
                })
                .collect(),
        }
    }

    #[test]
    fn the_digest_matches_the_generic_canonical_form() {
        let cases = [
            request(&["bob@example.org"], DeliveryMode::All),
            request(
                &["Zed@b.example", "amy@a.example", "Amy@a.example"],
                DeliveryMode::Any,
            ),
            request(
                &["carol@example.org:8448", "bob@EXAMPLE.org"],
                DeliveryMode::All,
            ),
        ];
        for case in &cases {
            assert_eq!(request_digest(case), reference(case));
        }
        // Characters that need escaping, which validation would refuse but
        // the digest must still agree on.
        let mut odd = request(&["x@y.example"], DeliveryMode::All);
        odd.body = "quote\" back\\ tab\t nul\u{0} é 😀".into();
        odd.recipients[0].devices[0].device_id = "\u{1f}\n".into();
        assert_eq!(request_digest(&odd), reference(&odd));
    }

    #[test]
    fn order_does_not_change_the_digest_but_content_does() {
        let one = request(&["amy@a.example", "bob@b.example"], DeliveryMode::All);
        let mut other = request(&["bob@b.example", "amy@a.example"], DeliveryMode::All);
        other.recipients[0].devices.reverse();
        assert_eq!(request_digest(&one), request_digest(&other));
        other.recipients[1].devices[0].key_wrap = "b3RoZXI".into();
        assert_ne!(request_digest(&one), request_digest(&other));
    }
}
