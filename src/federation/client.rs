//! Outbound server-to-server requests, signed with RFC 9421.

use std::time::Duration;

use rand::RngCore;

use super::resolver::{Destination, FederationClient};
use super::signing::{self, RequestParts, SignatureParams};
use super::wire::{Hello, Recall, RecallResponse, Transaction, TxnResponse};
use crate::crypto::b64;
use crate::server_key::ServerKey;

/// The components every Homing signature covers.
pub const COVERED: [&str; 4] = ["@method", "@target-uri", "@authority", "content-digest"];
/// How long a signature is valid; receivers accept at most five minutes.
const VALIDITY_SECS: i64 = 60;
/// Largest answer read from a peer.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a request to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Resolve(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// A non-2xx answer: its status, the `error` code of its JSON body when
    /// there is one, and the start of the body.
    #[error("the peer answered {status}: {body}")]
    Status {
        status: u16,
        code: Option<String>,
        body: String,
    },
    #[error("unreadable answer: {0}")]
    Body(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// `keyid` as Homing writes it: the server name and the key id.
pub fn key_id_for(origin: &str, key: &ServerKey) -> String {
    format!("{origin}#{}", key.key_id())
}

/// Who signs outbound requests, and how long they may take.
pub struct Signer<'a> {
    pub client: &'a FederationClient,
    pub key: &'a ServerKey,
    pub origin: &'a str,
    pub timeout: Duration,
}

/// Sends a signed request with a JSON body and reads a bounded answer.
pub async fn send_signed(
    signer: &Signer<'_>,
    destination: &Destination,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, RequestError> {
    let Signer {
        client,
        key,
        origin,
        timeout,
    } = *signer;
    let digest = signing::content_digest(&body);
    let now = crate::time::now_ms() / 1000;
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let params = SignatureParams::new(COVERED)
        .with_created(now)
        .with_expires(now + VALIDITY_SECS)
        .with_nonce(&b64(&nonce))
        .with_alg("ed25519")
        .with_keyid(&key_id_for(origin, key));
    // Sent to the normalised URI, so that what is signed is exactly what
    // the receiver rebuilds from the request line and `Host`.
    let parts = RequestParts::new(method.as_str(), &format!("{}{path}", destination.base_url))
        .map_err(|e| RequestError::Sign(e.to_string()))?
        .with_header("content-digest", &digest);
    let headers = signing::sign(key.signing_key(), "homing", &params, &parts)
        .map_err(|e| RequestError::Sign(e.to_string()))?;
    let response = client
        .http()
        .request(method, parts.target_uri())
        .header("Content-Type", "application/json")
        .header("Content-Digest", digest)
        .header("Signature-Input", headers.signature_input)
        .header("Signature", headers.signature)
        .body(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                RequestError::Timeout(e.to_string())
            } else {
                RequestError::Connect(e.to_string())
            }
        })?;
    let status = response.status();
    let body = read_limited(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(RequestError::Body)?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(RequestError::Status {
            status: status.as_u16(),
            // From the whole body: the start kept may cut the JSON short.
            code: error_code(&body),
            body: text,
        });
    }
    Ok(body)
}

/// The `error` of a Homing error body (`{"error": "bad_signature",
/// "message": …}`), when it looks like a code: a peer cannot put text of
/// its choosing into logs and metrics through it.
pub fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let code = serde_json::from_slice::<ErrorBody>(body).ok()?.error;
    let plain = code
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (plain && (1..=64).contains(&code.len())).then_some(code)
}

/// Reads at most `limit` bytes of a response body.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `PUT /federation/v1/txn/{txn_id}`.
pub async fn put_transaction(
    signer: &Signer<'_>,
    destination: &Destination,
    txn_id: &str,
    transaction: &Transaction,
) -> Result<TxnResponse, RequestError> {
    let body = serde_json::to_vec(transaction).map_err(|e| RequestError::Sign(e.to_string()))?;
    let path = format!("/federation/v1/txn/{txn_id}");
    let answer = send_signed(signer, destination, reqwest::Method::PUT, &path, body).await?;
    serde_json::from_slice(&answer).map_err(|e| RequestError::Body(e.to_string()))
}

/// `PUT /federation/v1/recall/{message_id}`.
pub async fn put_recall(
    signer: &Signer<'_>,
    destination: &Destination,
    message_id: &str,
    recall: &Recall,
) -> Result<RecallResponse, RequestError> {
    let body = serde_json::to_vec(recall).map_err(|e| RequestError::Sign(e.to_string()))?;
    let path = format!("/federation/v1/recall/{message_id}");
    let answer = send_signed(signer, destination, reqwest::Method::PUT, &path, body).await?;
    let answer: RecallResponse =
        serde_json::from_slice(&answer).map_err(|e| RequestError::Body(e.to_string()))?;
    if answer.message_id != message_id {
        return Err(RequestError::Body(
            "the answer is about another message".into(),
        ));
    }
    Ok(answer)
}

/// `POST /federation/v1/hello`.
pub async fn post_hello(
    signer: &Signer<'_>,
    destination: &Destination,
) -> Result<(), RequestError> {
    let body =
        serde_json::to_vec(&Hello::default()).map_err(|e| RequestError::Sign(e.to_string()))?;
    send_signed(
        signer,
        destination,
        reqwest::Method::POST,
        "/federation/v1/hello",
        body,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_code;

    #[test]
    fn error_codes_are_read_from_homing_error_bodies_only() {
        let body = br#"{"message": "the signature does not verify", "error": "bad_signature"}"#;
        assert_eq!(error_code(body).as_deref(), Some("bad_signature"));
        for other in [
            &b"<html>Bad Gateway</html>"[..],
            br#"{"message": "no code"}"#,
            br#"{"error": 401}"#,
            br#"{"error": "Spaces and\nnewlines"}"#,
            br#"{"error": ""}"#,
        ] {
            assert_eq!(
                error_code(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
