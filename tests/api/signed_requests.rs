//! What a signed federation request must carry: the `alg` parameter is
//! required.

use ed25519_dalek::SigningKey;
use homing::crypto::b64;
use homing::federation::client::{key_id_for, COVERED};
use homing::federation::signing::{self, RequestParts, SignatureParams};

use crate::federation::Forged;
use crate::helpers::{spawn_app, TestApp};

/// A `POST /federation/v1/hello` to `to`, signed by `key` as `keyid`, with
/// or without the `alg` parameter.
fn hello(to: &TestApp, keyid: &str, key: &SigningKey, with_alg: bool) -> Forged {
    let url = format!("http://{}/federation/v1/hello", to.server_name);
    let body = b"{}";
    let digest = signing::content_digest(body);
    let now = homing::time::now_ms() / 1000;
    let mut params = SignatureParams::new(COVERED)
        .with_created(now)
        .with_expires(now + 60)
        .with_nonce(&b64(&rand::random::<[u8; 24]>()))
        .with_keyid(keyid);
    if with_alg {
        params = params.with_alg("ed25519");
    }
    let parts = RequestParts::new("POST", &url)
        .unwrap()
        .with_header("content-digest", &digest);
    let headers = signing::sign(key, "homing", &params, &parts).unwrap();
    Forged {
        url,
        body: body.to_vec(),
        headers: vec![
            ("Content-Digest".into(), digest),
            ("Signature-Input".into(), headers.signature_input),
            ("Signature".into(), headers.signature),
            ("Content-Type".into(), "application/json".into()),
        ],
    }
}

/// Sends `forged` as a POST (`send_forged` sends PUT); status and code.
async fn post(forged: &Forged) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(&forged.url)
        .body(forged.body.clone());
    for (name, value) in &forged.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_signature_without_alg_is_refused() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let keyid = key_id_for(&a.server_name, &a.state.server_key);
    let key = a.state.server_key.signing_key();
    let without = hello(&b, &keyid, key, false);
    assert_eq!(post(&without).await, (401, "bad_signature".into()));
    // The same request with `alg` passes: nothing else was wrong.
    assert_eq!(post(&hello(&b, &keyid, key, true)).await.0, 200);
}
