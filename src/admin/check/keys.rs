//! The connection, TLS and the peer's key document, checked with one
//! `GET /.well-known/homing/keys`: the first request a peer of this server
//! makes, and one that needs no signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use reqwest::header::ACCEPT;

use super::{advice, Checker};
use crate::address::ServerName;
use crate::config::Settings;
use crate::federation::client::read_limited;
use crate::federation::resolver::{error_chain, Destination, FederationClient};
use crate::time::now_ms;
use homing_proto::documents::{KeysDocument, PublishedKey};

/// Where every server publishes its signing keys.
pub(super) const KEYS_PATH: &str = "/.well-known/homing/keys";
/// Largest key document read, as when a peer's keys are fetched for real.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Fetches and verifies the peer's key document. True when a connection
/// was made (so a signed request is worth trying), whatever the answer.
pub(super) async fn check_keys(
    checker: &mut Checker,
    client: &FederationClient,
    settings: &Settings,
    server: &ServerName,
    destination: &Destination,
) -> bool {
    let url = format!("{}{KEYS_PATH}", destination.base_url);
    let host = reqwest::Url::parse(&destination.base_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_else(|| destination.base_url.clone());
    let https = !settings.federation.allow_insecure_http;
    let sent = client
        .http()
        .get(&url)
        .header(ACCEPT, "application/json")
        .timeout(settings.federation.request_timeout)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            let reason = error_chain(&error);
            if https && is_tls_failure(&reason) {
                let advice = advice::tls(&host, &reason);
                checker.fail("tls", format!("GET {url}: {reason}"), "tls", advice);
            } else {
                let advice = advice::unreachable(&url, &reason);
                checker.fail(
                    "connect",
                    format!("GET {url}: {reason}"),
                    "unreachable",
                    advice,
                );
            }
            return false;
        }
    };
    let address = response
        .remote_addr()
        .map_or_else(|| "the peer".to_string(), |addr| addr.to_string());
    checker.ok(
        "connect",
        format!("connected to {address} for {}", destination.base_url),
    );
    if https {
        checker.ok(
            "tls",
            format!("the certificate of {host} is valid and trusted"),
        );
    } else {
        checker.ok(
            "tls",
            "not used: federation.allow_insecure_http makes federation plain http".into(),
        );
    }
    let status = response.status();
    if !status.is_success() {
        let advice = advice::no_keys(&url, status.as_u16());
        checker.fail(
            "keys",
            format!("GET {url} answered {status}"),
            "peer_keys",
            advice,
        );
        return true;
    }
    let checked = read_limited(response, MAX_DOCUMENT_BYTES)
        .await
        .and_then(|body| verify(server, &body, now_ms()));
    match checked {
        Ok(found) => checker.ok("keys", format!("{url}: {found}")),
        Err(reason) => {
            let advice = advice::bad_keys(server, &url, &reason);
            checker.fail("keys", format!("{url}: {reason}"), "peer_keys", advice);
        }
    }
    true
}

/// rustls reports certificate and handshake trouble in its own words; a
/// refused or timed-out connection never mentions them.
fn is_tls_failure(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    ["certificate", "tls", "handshake", "alert"]
        .iter()
        .any(|word| reason.contains(word))
}

/// Checks a key document as a peer uses it: it names `server`, and its
/// current key is a valid, unexpired ed25519 key. Says what it found.
fn verify(server: &ServerName, body: &[u8], now: i64) -> Result<String, String> {
    let document: KeysDocument =
        serde_json::from_slice(body).map_err(|e| format!("not a key document: {e}"))?;
    if ServerName::parse(&document.server_name).ok().as_ref() != Some(server) {
        return Err(format!(
            "the document names the server {:?}, not {server}",
            document.server_name
        ));
    }
    let current = document
        .keys
        .iter()
        .find(|key| key.key_id == document.current_key_id)
        .ok_or_else(|| {
            format!(
                "the current key {:?} is not among the listed keys",
                document.current_key_id
            )
        })?;
    usable(current, now)?;
    Ok(format!(
        "names {server}; current key {} is a valid ed25519 key; {} key(s) listed",
        current.key_id,
        document.keys.len()
    ))
}

fn usable(key: &PublishedKey, now: i64) -> Result<(), String> {
    let id = &key.key_id;
    if key.algorithm != "ed25519" {
        return Err(format!("key {id} is {:?}, not ed25519", key.algorithm));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(&key.public_key)
        .map_err(|_| format!("key {id} is not unpadded base64url"))?;
    let bytes = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("key {id} is {} bytes, not 32", bytes.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| format!("key {id} is not an ed25519 point"))?;
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(format!("the current key {id} has expired"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document(server: &str, public_key: &str, expires_at: Option<i64>) -> Vec<u8> {
        json!({
            "server_name": server,
            "current_key_id": "ed25519:k",
            "keys": [{"key_id": "ed25519:k", "algorithm": "ed25519", "public_key": public_key,
                      "created_at": 1, "expires_at": expires_at}],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_key_document_must_name_the_server_and_hold_a_usable_current_key() {
        let server = ServerName::parse("b.example:8448").unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let good = URL_SAFE_NO_PAD.encode(key.as_bytes());
        let short = URL_SAFE_NO_PAD.encode([1u8; 16]);
        assert!(verify(&server, &document("B.example:8448", &good, None), 10).is_ok());
        let refused = [
            (document("c.example:8448", &good, None), "names the server"),
            (document("b.example:8448", &short, None), "not 32"),
            (document("b.example:8448", &good, Some(5)), "expired"),
            (b"<html>".to_vec(), "not a key document"),
        ];
        for (body, reason) in refused {
            let error = verify(&server, &body, 10).unwrap_err();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn tls_failures_are_told_from_connection_failures() {
        assert!(is_tls_failure(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        assert!(!is_tls_failure(
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        ));
    }
}
