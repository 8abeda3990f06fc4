//! Two (or three) real daemons on 127.0.0.1 relaying to each other.

use std::time::{Duration, Instant};

use homing::federation::client::{key_id_for, COVERED};
use homing::federation::signing::{self, RequestParts, SignatureParams};
use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp, TestUser};

/// Waits until `bob`'s first device has `count` pending items, or fails.
pub async fn wait_for_items(app: &TestApp, token: &str, count: usize, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let page = app.sync(token).await;
        if page["items"].as_array().map_or(0, Vec::len) >= count {
            return page;
        }
        assert!(Instant::now() < deadline, "only {page} after {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `app`'s outbox holds at most `rows` rows, or fails.
pub async fn wait_for_outbox(app: &TestApp, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.count("outbox") > rows {
        assert!(
            Instant::now() < deadline,
            "the outbox never went down to {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn remote_message(from_app: &TestApp, to_app: &TestApp, to: &TestUser, body: &[u8]) -> Value {
    let mut message = message_to(from_app, &[(to, &[0])], body, "all");
    message["recipients"][0]["address"] = json!(format!("{}@{}", to.alias, to_app.server_name));
    message
}

/// The sender's view of message `id`: `GET /api/v1/dms/status/{id}`.
pub async fn delivery_status(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_auth(&format!("/api/v1/dms/status/{id}"), token)
        .await
        .json()
        .await
        .unwrap()
}

pub async fn status_of(app: &TestApp, token: &str, id: &str) -> String {
    delivery_status(app, token, id).await["recipients"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn alice_on_a_sends_to_bob_on_b_and_the_outbox_empties() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let message = remote_message(&a, &b, &bob, b"sealed for bob");
    let response = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["recipients"][0]["status"], "queued");

    let page = wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
    let item = &page["items"][0];
    assert_eq!(item["message_id"], message["message_id"]);
    assert_eq!(item["body"], message["body"]);
    assert_eq!(item["origin"], a.server_name.as_str());
    let id = message["message_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&a, &alice.device(0).token, id).await != "relayed" {
        assert!(Instant::now() < deadline, "A never recorded custody");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(a.count("outbox"), 0);
    assert_eq!(a.count("messages"), 0, "A keeps nothing once B has it");
    assert_eq!((a.orphans(), b.orphans()), (0, 0));
}

#[tokio::test]
async fn a_holds_mail_while_b_is_down_and_delivers_once_after_both_restart() {
    let mut a = spawn_app().await;
    let mut b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    b.stop().await;

    let message = remote_message(&a, &b, &bob, b"while you were out");
    let response = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    // A tries, fails and backs off; the message stays queued.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failures: Vec<homing::admin::federation::DestinationInfo> = {
            let mut conn = a.state.db.get().unwrap();
            homing::admin::federation::destinations(&mut conn).unwrap()
        };
        if failures.first().is_some_and(|d| d.failures > 0) {
            assert_eq!(failures[0].queued, 1);
            break;
        }
        assert!(Instant::now() < deadline, "A never recorded a failure");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(a.count("outbox"), 1);

    // A restarts (its queue is in the database), then B comes back.
    a.restart().await;
    b.restart().await;
    let token = b.sign_in(&bob.account, &bob.device(0).keys).await;
    let page = wait_for_items(&b, &token, 1, Duration::from_secs(15)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    wait_for_outbox(&a, 0).await;
    // Exactly once: one message and one delivery on B.
    assert_eq!(b.count("messages"), 1);
    assert_eq!(b.count("deliveries"), 1);
}

#[tokio::test]
async fn an_unreachable_destination_does_not_delay_a_healthy_one() {
    // A peer that accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = black_hole.local_addr().unwrap();
    let _keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().take(16) {
            held.push(stream);
        }
    });
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let mut stuck = message_to(&a, &[(&bob, &[0])], b"to nowhere", "all");
    stuck["recipients"][0]["address"] = json!(format!("ghost@{hole}"));
    assert_eq!(
        a.post_json("/api/v1/dms/send", &stuck, Some(&alice.device(0).token))
            .await
            .status(),
        202
    );
    let message = remote_message(&a, &b, &bob, b"hello");
    let sent = Instant::now();
    assert_eq!(
        a.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await
            .status(),
        202
    );
    wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(5)).await;
    assert!(sent.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn remote_directory_fetches_verifies_and_pins() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let path = format!("/api/v1/directory/bob@{}", b.server_name);
    let found: Value = a
        .get_auth(&path, &alice.device(0).token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["account_key"], bob.account.public().to_string());
    assert_eq!(found["key_changed"], false);
    let unknown = a
        .get_auth(
            &format!("/api/v1/directory/nobody@{}", b.server_name),
            &alice.device(0).token,
        )
        .await;
    assert_eq!(unknown.status(), 404);
}

/// Signs a federation request from `from` to `to`'s `path` and lets the
/// test change it before it is sent.
pub struct Forged {
    pub url: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

pub fn forge(
    from: &TestApp,
    to: &TestApp,
    path: &str,
    body: &[u8],
    created: i64,
    key: Option<&ed25519_dalek::SigningKey>,
) -> Forged {
    let url = format!("http://{}{path}", to.server_name);
    let digest = signing::content_digest(body);
    let params = SignatureParams::new(COVERED)
        .with_created(created)
        .with_expires(created + 60)
        .with_nonce(&homing::crypto::b64(&rand::random::<[u8; 24]>()))
        .with_alg("ed25519")
        .with_keyid(&key_id_for(&from.server_name, &from.state.server_key));
    let parts = RequestParts::new("PUT", &url)
        .unwrap()
        .with_header("content-digest", &digest);
    let signing_key = key.unwrap_or(from.state.server_key.signing_key());
    let headers = signing::sign(signing_key, "homing", &params, &parts).unwrap();
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

/// Sends `forged`; the status and the answer's JSON.
pub async fn send_forged_answer(forged: &Forged) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.put(&forged.url).body(forged.body.clone());
    for (name, value) in &forged.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sends `forged`; the status and the error code, if any.
pub async fn send_forged(forged: &Forged) -> (u16, String) {
    let (status, body) = send_forged_answer(forged).await;
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// A client's send request as a transaction's message.
pub fn txn_message(message: &Value) -> Value {
    json!({
        "message_id": message["message_id"],
        "body": message["body"],
        "delivery": "all",
        "created_at": homing::time::now_ms(),
        "expires_at": homing::time::now_ms() + 60_000,
        "recipients": message["recipients"],
    })
}

pub fn txn_body(a: &TestApp, b: &TestApp, bob: &TestUser) -> Vec<u8> {
    let message = remote_message(a, b, bob, b"forged?");
    serde_json::to_vec(&json!({
        "origin": a.server_name,
        "messages": [txn_message(&message)],
    }))
    .unwrap()
}

#[tokio::test]
async fn bad_signatures_are_refused_and_store_nothing() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let bob = b.register("bob").await;
    let now = homing::time::now_ms() / 1000;
    let body = txn_body(&a, &b, &bob);
    let path = "/federation/v1/txn/t1";

    // Correctly signed: accepted (this proves the forging helper is right).
    let good = forge(&a, &b, "/federation/v1/txn/t0", &body, now, None);
    assert_eq!(send_forged(&good).await.0, 200);
    // Replayed: the same signature again.
    assert_eq!(send_forged(&good).await, (401, "replayed".into()));
    let stored = b.count("messages");

    let mut unsigned = forge(&a, &b, path, &body, now, None);
    unsigned
        .headers
        .retain(|(name, _)| !name.starts_with("Signature"));
    assert_eq!(send_forged(&unsigned).await, (401, "unsigned".into()));

    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let wrong_key = forge(&a, &b, path, &body, now, Some(&stranger));
    assert_eq!(send_forged(&wrong_key).await, (401, "bad_signature".into()));

    let mut tampered_body = forge(&a, &b, path, &body, now, None);
    tampered_body.body = txn_body(&a, &b, &bob);
    assert_eq!(
        send_forged(&tampered_body).await,
        (401, "bad_digest".into())
    );

    let mut tampered_path = forge(&a, &b, path, &body, now, None);
    tampered_path.url = tampered_path.url.replace("/t1", "/t2");
    assert_eq!(
        send_forged(&tampered_path).await,
        (401, "bad_signature".into())
    );

    // Signed for another authority (localhost instead of 127.0.0.1).
    let mut other_authority = forge(&a, &b, path, &body, now, None);
    other_authority.url = other_authority.url.replace("127.0.0.1", "localhost");
    assert_eq!(send_forged(&other_authority).await.0, 403);

    let expired = forge(&a, &b, path, &body, now - 600, None);
    assert_eq!(send_forged(&expired).await, (401, "bad_signature".into()));

    assert_eq!(b.count("messages"), stored, "nothing new was stored");
}

#[tokio::test]
async fn denied_origins_are_refused_in_both_directions() {
    let a = spawn_app().await;
    let denied = a.server_name.clone();
    let b = spawn_app_with(vec![("HOMING__FEDERATION__DENY", denied.as_str())]).await;
    let bob = b.register("bob").await;
    let body = txn_body(&a, &b, &bob);
    let now = homing::time::now_ms() / 1000;
    let request = forge(&a, &b, "/federation/v1/txn/x", &body, now, None);
    assert_eq!(
        send_forged(&request).await,
        (403, "federation_denied".into())
    );
    assert_eq!(b.count("messages"), 0);

    // And B refuses to send to A.
    let alice_on_a = a.register("alice").await;
    let bob_token = &bob.device(0).token;
    let message = remote_message(&b, &a, &alice_on_a, b"no");
    let response = b
        .post_json("/api/v1/dms/send", &message, Some(bob_token))
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_retried_transaction_is_answered_from_the_record() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let bob = b.register("bob").await;
    let body = txn_body(&a, &b, &bob);
    let now = homing::time::now_ms() / 1000;
    let first = forge(&a, &b, "/federation/v1/txn/same", &body, now, None);
    assert_eq!(send_forged(&first).await.0, 200);
    // The sender never saw the 200 and retries: a new signature, same txn.
    let retry = forge(&a, &b, "/federation/v1/txn/same", &body, now, None);
    assert_eq!(send_forged(&retry).await.0, 200);
    assert_eq!(b.count("messages"), 1);
    assert_eq!(b.count("deliveries"), 1);
    // The same txn id with another body is refused.
    let other = forge(
        &a,
        &b,
        "/federation/v1/txn/same",
        &txn_body(&a, &b, &bob),
        now,
        None,
    );
    assert_eq!(send_forged(&other).await, (409, "txn_reused".into()));
}

/// Each message's status for its first recipient, from a transaction's answer.
fn first_recipient_statuses(answer: &Value) -> Vec<&str> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["recipients"][0]["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_message_already_held_is_accepted_again_and_stored_once() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let bob = b.register("bob").await;
    let held = remote_message(&a, &b, &bob, b"held");
    let fresh = remote_message(&a, &b, &bob, b"fresh");
    let now = homing::time::now_ms() / 1000;
    let body = |messages: &[&Value]| {
        let messages: Vec<Value> = messages.iter().map(|m| txn_message(m)).collect();
        serde_json::to_vec(&json!({"origin": a.server_name, "messages": messages})).unwrap()
    };
    let first = forge(&a, &b, "/federation/v1/txn/one", &body(&[&held]), now, None);
    assert_eq!(send_forged(&first).await.0, 200);
    // A later transaction (another id) carries the held message again, as
    // after a crash between the remote's commit and the sender's.
    let second = forge(
        &a,
        &b,
        "/federation/v1/txn/two",
        &body(&[&held, &fresh]),
        now,
        None,
    );
    let (status, answer) = send_forged_answer(&second).await;
    assert_eq!(status, 200);
    let statuses = first_recipient_statuses(&answer);
    assert_eq!(statuses, ["accepted", "accepted"]);
    assert_eq!(
        b.count("messages"),
        2,
        "the held message is not stored twice"
    );
    assert_eq!(b.count("deliveries"), 2);
}

#[tokio::test]
async fn one_transaction_counts_its_own_mail_against_the_quota_and_stores_a_repeat_once() {
    let a = spawn_app().await;
    let b = spawn_app_with(vec![
        ("HOMING__LIMITS__MAX_PENDING_MESSAGES_PER_DEVICE", "2"),
        ("HOMING__LIMITS__MAX_PENDING_SHARE_PER_ORIGIN", "1"),
    ])
    .await;
    let bob = b.register("bob").await;
    let first = remote_message(&a, &b, &bob, b"first");
    let second = remote_message(&a, &b, &bob, b"second");
    let third = remote_message(&a, &b, &bob, b"third");
    // The first message twice: a repeat within one transaction.
    let messages = [&first, &first, &second, &third].map(txn_message);
    let body = serde_json::to_vec(&json!({"origin": a.server_name, "messages": messages})).unwrap();
    let now = homing::time::now_ms() / 1000;
    let forged = forge(&a, &b, "/federation/v1/txn/quota", &body, now, None);
    let (status, answer) = send_forged_answer(&forged).await;
    assert_eq!(status, 200);
    let statuses = first_recipient_statuses(&answer);
    // Bob's device holds at most two: the third message finds it full.
    assert_eq!(
        statuses,
        ["accepted", "accepted", "accepted", "mailbox_full"]
    );
    assert_eq!(b.count("messages"), 2, "the repeat is stored once");
    assert_eq!(b.count("deliveries"), 2);
}

/// Each recipient's alias and receipt state for `message`, sorted.
pub async fn receipt_states(app: &TestApp, token: &str, message: &Value) -> Vec<(String, String)> {
    let id = message["message_id"].as_str().unwrap();
    let status = delivery_status(app, token, id).await;
    let mut states: Vec<(String, String)> = status["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let address = r["recipient"].as_str().unwrap();
            let alias = address.split('@').next().unwrap().to_string();
            (alias, r["state"].as_str().unwrap().to_string())
        })
        .collect();
    states.sort();
    states
}

#[tokio::test]
async fn each_remote_recipient_gets_its_own_result_on_the_senders_receipt() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let token = &alice.device(0).token;
    // One message all of whose recipients B accepts, one that B accepts
    // for bob and refuses for a recipient it does not know.
    let whole = remote_message(&a, &b, &bob, b"for bob alone");
    let mut mixed = remote_message(&a, &b, &bob, b"for bob and a ghost");
    let mut ghost = mixed["recipients"][0].clone();
    ghost["address"] = json!(format!("ghost@{}", b.server_name));
    mixed["recipients"].as_array_mut().unwrap().push(ghost);
    for message in [&whole, &mixed] {
        let response = a.post_json("/api/v1/dms/send", message, Some(token)).await;
        assert_eq!(response.status(), 202);
    }
    wait_for_outbox(&a, 0).await;
    assert_eq!(
        receipt_states(&a, token, &whole).await,
        [("bob".to_string(), "relayed".to_string())]
    );
    assert_eq!(
        receipt_states(&a, token, &mixed).await,
        [
            ("bob".to_string(), "relayed".to_string()),
            ("ghost".to_string(), "unknown_recipient".to_string())
        ]
    );
}
