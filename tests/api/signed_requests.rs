//! What a signed federation request must carry, and what a stranger's
//! request can make the receiver do before its signature is checked: the
//! `alg` parameter is required, every check that needs no key runs before
//! the key is fetched, made-up key ids cost the origin's key document at
//! most one fetch a minute, and a transaction names its signer as origin.

use ed25519_dalek::SigningKey;
use homing::crypto::b64;
use homing::federation::client::{key_id_for, COVERED};
use homing::federation::signing::{self, RequestParts, SignatureParams};
use serde_json::json;

use crate::federation::{forge, remote_message, send_forged, txn_message, Forged};
use crate::helpers::{spawn_app, TestApp};
use crate::test_servers::{HttpServer, Reply};

const KEYS_PATH: &str = "/.well-known/homing/keys";

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

/// A fake origin on loopback whose key document lists `key` as
/// `ed25519:real`: the server name and the server, which counts fetches.
async fn fake_origin(key: &SigningKey) -> (String, HttpServer) {
    let listener = HttpServer::listen().await;
    let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let document = json!({
        "server_name": name,
        "current_key_id": "ed25519:real",
        "keys": [{
            "key_id": "ed25519:real",
            "algorithm": "ed25519",
            "public_key": b64(key.verifying_key().as_bytes()),
            "created_at": 0,
            "expires_at": null,
        }],
    })
    .to_string();
    let server = HttpServer::serve(listener, None, move |seen| match seen.path.as_str() {
        KEYS_PATH => Reply::ok(document.clone()),
        _ => Reply::not_found(),
    });
    (name, server)
}

#[tokio::test]
async fn made_up_key_ids_fetch_the_origins_keys_at_most_once_a_minute() {
    let b = spawn_app().await;
    let real = SigningKey::generate(&mut rand::rngs::OsRng);
    let (origin, server) = fake_origin(&real).await;
    let stranger = SigningKey::generate(&mut rand::rngs::OsRng);
    let made_up = |n: usize| hello(&b, &format!("{origin}#ed25519:fake{n}"), &stranger, true);

    // At once: the requests wait for one fetch instead of each fetching.
    let burst: Vec<Forged> = (0..8).map(made_up).collect();
    let answers = futures_util::future::join_all(burst.iter().map(post)).await;
    for answer in answers {
        assert_eq!(answer, (401, "unknown_key".into()));
    }
    // One after the other: the origin was just fetched without those keys.
    for n in 8..20 {
        assert_eq!(post(&made_up(n)).await, (401, "unknown_key".into()));
    }
    assert_eq!(server.hits(KEYS_PATH), 1);

    // The real key came with that one fetch and works without another.
    let genuine = hello(&b, &format!("{origin}#ed25519:real"), &real, true);
    assert_eq!(post(&genuine).await.0, 200);
    assert_eq!(server.hits(KEYS_PATH), 1);
}

#[tokio::test]
async fn requests_that_fail_a_check_without_the_key_fetch_nothing() {
    let b = spawn_app().await;
    let real = SigningKey::generate(&mut rand::rngs::OsRng);
    let (origin, server) = fake_origin(&real).await;
    for keyid in [
        format!("{origin}#ed25519:real"),
        format!("{origin}#ed25519:made-up"),
    ] {
        let mut bad_digest = hello(&b, &keyid, &real, true);
        bad_digest.body = b"{\"other\": 1}".to_vec();
        assert_eq!(post(&bad_digest).await, (401, "bad_digest".into()));
        let without_alg = hello(&b, &keyid, &real, false);
        assert_eq!(post(&without_alg).await, (401, "bad_signature".into()));
        let mut misaddressed = hello(&b, &keyid, &real, true);
        misaddressed.url = misaddressed.url.replace("127.0.0.1", "localhost");
        assert_eq!(post(&misaddressed).await.0, 403);
    }
    assert_eq!(server.hits(KEYS_PATH), 0);
}

#[tokio::test]
async fn a_transaction_whose_origin_is_not_the_signer_is_refused() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let bob = b.register("bob").await;
    let message = remote_message(&a, &b, &bob, b"who sent this?");
    let body = serde_json::to_vec(&json!({
        "origin": "elsewhere.example",
        "messages": [txn_message(&message)],
    }))
    .unwrap();
    let now = homing::time::now_ms() / 1000;
    let forged = forge(&a, &b, "/federation/v1/txn/t1", &body, now, None);
    assert_eq!(
        send_forged(&forged).await,
        (400, "invalid_transaction".into())
    );
    assert_eq!(b.count("messages"), 0);
    assert_eq!(b.count("inbound_txns"), 0);
}

#[tokio::test]
async fn an_origin_over_its_rate_stores_no_more_nonces() {
    let a = spawn_app().await;
    let b =
        crate::helpers::spawn_app_with(vec![("HOMING__RATE_LIMITS__FEDERATION_PER_ORIGIN", "5/m")])
            .await;
    let keyid = key_id_for(&a.server_name, &a.state.server_key);
    let key = a.state.server_key.signing_key();
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(post(&hello(&b, &keyid, key, true)).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429]);
    // What an origin keeps is bounded by its rate, not by what it sends.
    assert_eq!(b.count("federation_nonces"), 5);
}
