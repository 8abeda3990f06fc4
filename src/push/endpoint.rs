//! Checking a subscription a device sends before it is stored: the
//! endpoint is a URL this server will later POST to, so it gets the
//! federation's address rules; the keys must be what RFC 8291 needs.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use homing_proto::push::{PushSubscription, MAX_ENDPOINT_CHARS};

use crate::federation::resolver::FederationClient;

/// Length of an uncompressed P-256 point.
const P256DH_BYTES: usize = 65;
/// Length of the authentication secret (RFC 8291, section 3.2).
const AUTH_BYTES: usize = 16;

/// A subscription that passed every check. No `Debug`: the endpoint is a
/// capability and `auth` a secret, neither to end up in a log.
#[derive(Clone)]
pub struct ValidSubscription {
    pub endpoint: reqwest::Url,
    pub p256dh: [u8; P256DH_BYTES],
    pub auth: [u8; AUTH_BYTES],
}

/// Why a subscription was refused: a code for the client, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: &'static str,
    pub reason: String,
}

fn refused(code: &'static str, reason: impl Into<String>) -> Refused {
    Refused {
        code,
        reason: reason.into(),
    }
}

/// Checks `subscription` under `federation`'s rules (HTTPS unless
/// `allow_insecure_http`, no loopback or private IP literals unless
/// `allow_private_addresses`; host names are checked when looked up).
pub fn validate(
    subscription: &PushSubscription,
    federation: &FederationClient,
    allow_insecure_http: bool,
) -> Result<ValidSubscription, Refused> {
    let endpoint = check_endpoint(&subscription.endpoint, allow_insecure_http)?;
    let host = endpoint.host_str().unwrap_or_default();
    if let Some(refusal) = federation.literal_refusal(host) {
        return Err(refused("push_endpoint_refused", refusal.to_string()));
    }
    let p256dh: [u8; P256DH_BYTES] = decode(&subscription.keys.p256dh)
        .and_then(|bytes| bytes.try_into().ok())
        .filter(|bytes: &[u8; P256DH_BYTES]| p256::PublicKey::from_sec1_bytes(bytes).is_ok())
        .ok_or_else(|| {
            refused(
                "invalid_push_keys",
                "keys.p256dh must be an uncompressed P-256 point (65 bytes, base64url)",
            )
        })?;
    let auth: [u8; AUTH_BYTES] = decode(&subscription.keys.auth)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| refused("invalid_push_keys", "keys.auth must be 16 bytes, base64url"))?;
    Ok(ValidSubscription {
        endpoint,
        p256dh,
        auth,
    })
}

/// The endpoint as a URL the push client may POST to.
fn check_endpoint(text: &str, allow_insecure_http: bool) -> Result<reqwest::Url, Refused> {
    let invalid = |reason: &str| refused("invalid_push_endpoint", reason);
    if text.chars().count() > MAX_ENDPOINT_CHARS {
        return Err(invalid("the endpoint is longer than 1024 characters"));
    }
    let url = reqwest::Url::parse(text).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http => {}
        _ => return Err(invalid("the endpoint must be an https:// URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the endpoint has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("the endpoint must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("the endpoint must not have a fragment"));
    }
    Ok(url)
}

/// Browsers write base64url without padding; some libraries pad it.
fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > 128 {
        return None;
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_https_urls() {
        for good in [
            "https://push.example/wpush/v2/abc",
            "https://ntfy.example:8443/upAbC?up=1",
        ] {
            assert!(check_endpoint(good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://push.example/x",
            "ftp://push.example/x",
            "https://user:pw@push.example/x",
            "https://push.example/x#frag",
            "not a url",
            "https://",
        ] {
            let refusal = check_endpoint(bad, false).unwrap_err();
            assert_eq!(refusal.code, "invalid_push_endpoint", "{bad}");
        }
        assert!(check_endpoint("http://push.example/x", true).is_ok());
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_CHARS));
        assert!(check_endpoint(&long, false).is_err());
    }

    #[test]
    fn keys_are_decoded_padded_or_not() {
        assert_eq!(decode("AAAA").unwrap(), vec![0, 0, 0]);
        assert_eq!(decode("AA==").unwrap(), vec![0]);
        assert_eq!(decode("AA").unwrap(), vec![0]);
        assert!(decode("!!").is_none());
    }
}
