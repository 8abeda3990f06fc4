//! What one peer can make this server record: transactions over the
//! recipient limits are refused whole, answers repeat only valid
//! addresses, and each origin keeps a bounded number of records.

use homing::federation::client::{key_id_for, COVERED};
use homing::federation::signing::{self, RequestParts, SignatureParams};
use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp, TestUser};

/// A transaction PUT from `from` to `to`, signed with `from`'s key.
async fn put_txn(from: &TestApp, to: &TestApp, txn_id: &str, body: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let url = format!("http://{}/federation/v1/txn/{txn_id}", to.server_name);
    let digest = signing::content_digest(&body);
    let created = homing::time::now_ms() / 1000;
    let params = SignatureParams::new(COVERED)
        .with_created(created)
        .with_expires(created + 60)
        .with_nonce(&homing::crypto::b64(&rand::random::<[u8; 24]>()))
        .with_alg("ed25519")
        .with_keyid(&key_id_for(&from.server_name, &from.state.server_key));
    let parts = RequestParts::new("PUT", &url)
        .unwrap()
        .with_header("content-digest", &digest);
    let headers = signing::sign(
        from.state.server_key.signing_key(),
        "homing",
        &params,
        &parts,
    )
    .unwrap();
    let response = reqwest::Client::new()
        .put(&url)
        .header("Content-Digest", digest)
        .header("Signature-Input", headers.signature_input)
        .header("Signature", headers.signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One message of a transaction for `recipients`, each with one device.
fn txn_message(recipients: Vec<Value>) -> Value {
    json!({
        "message_id": crate::helpers::new_message_id(),
        "body": homing::crypto::b64(b"sealed"),
        "delivery": "all",
        "created_at": homing::time::now_ms(),
        "expires_at": homing::time::now_ms() + 60_000,
        "recipients": recipients,
    })
}

fn recipient(address: String) -> Value {
    json!({"address": address, "devices": [{"device_id": "first", "key_wrap": homing::crypto::b64(&[7u8; 80])}]})
}

/// A transaction carrying one honest message to `bob`.
fn honest(a: &TestApp, b: &TestApp, bob: &TestUser) -> Value {
    let message = message_to(b, &[(bob, &[0])], b"hello bob", "all");
    json!({"origin": a.server_name, "messages": [{
        "message_id": message["message_id"],
        "body": message["body"],
        "delivery": "all",
        "created_at": homing::time::now_ms(),
        "expires_at": homing::time::now_ms() + 60_000,
        "recipients": message["recipients"],
    }]})
}

#[tokio::test]
async fn a_transaction_over_the_recipient_limits_is_refused_whole_and_recorded_nowhere() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let bob = b.register("bob").await;
    // One message naming 20,000 recipients of about 200 characters each.
    let server = format!("{}.{}.example", "s".repeat(60), "t".repeat(60));
    let crowd: Vec<Value> = (0..20_000)
        .map(|i| recipient(format!("{}{i:05}@{server}", "u".repeat(58))))
        .collect();
    let txn = json!({"origin": a.server_name, "messages": [txn_message(crowd)]});
    let (status, answer) = put_txn(&a, &b, "crowd", &txn).await;
    assert_eq!(status, 413, "answered {}", answer["error"]);
    assert_eq!(answer["error"], "payload_too_large");
    assert_eq!(answer["limit"], 100);

    // Within the per-message limit but over the per-transaction one.
    let messages: Vec<Value> = (0..11)
        .map(|m| {
            txn_message(
                (0..100)
                    .map(|i| recipient(format!("u{m}x{i}@{}", b.server_name)))
                    .collect(),
            )
        })
        .collect();
    let txn = json!({"origin": a.server_name, "messages": messages});
    let (status, answer) = put_txn(&a, &b, "many", &txn).await;
    assert_eq!(status, 413, "answered {}", answer["error"]);
    assert_eq!(answer["limit"], 1000);
    assert_eq!(
        b.count("inbound_txns"),
        0,
        "a refused transaction is recorded"
    );

    // An address no server could have is answered by position, not
    // repeated into the record.
    let long = format!("{}@{}", "x".repeat(5000), b.server_name);
    let mut txn = honest(&a, &b, &bob);
    txn["messages"][0]["recipients"]
        .as_array_mut()
        .unwrap()
        .push(recipient(long));
    let (status, answer) = put_txn(&a, &b, "mixed", &txn).await;
    assert_eq!(status, 200, "{answer}");
    let results = &answer["results"][0]["recipients"];
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[1], json!({"address": "", "status": "invalid"}));

    // Bob's honest mail arrived through all of it.
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_origin_keeps_only_its_newest_transaction_records() {
    let a = spawn_app().await;
    let b = spawn_app_with(vec![("HOMING__LIMITS__MAX_TXN_RECORDS_PER_ORIGIN", "3")]).await;
    let bob = b.register("bob").await;
    let mut last = (String::new(), Value::Null, Value::Null);
    for n in 0..6 {
        let txn = honest(&a, &b, &bob);
        let id = format!("t{n}");
        let (status, answer) = put_txn(&a, &b, &id, &txn).await;
        assert_eq!(status, 200, "{answer}");
        last = (id, txn, answer);
        // Records of one origin differ in time, so the newest are clear.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(b.count("inbound_txns"), 3);
    // The newest is still answered from its record, storing nothing.
    let (id, txn, answer) = last;
    let (status, again) = put_txn(&a, &b, &id, &txn).await;
    assert_eq!((status, &again), (200, &answer));
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 6);
    // Another origin's records are its own.
    let c = spawn_app().await;
    let (status, _) = put_txn(&c, &b, "t0", &honest(&c, &b, &bob)).await;
    assert_eq!(status, 200);
    assert_eq!(b.count("inbound_txns"), 4);
}

#[tokio::test]
async fn one_origin_or_account_fills_at_most_its_share_of_a_mailbox() {
    let a = spawn_app().await;
    let c = spawn_app().await;
    // A quota of 8 messages: each sender may hold 2 of them.
    let b = spawn_app_with(vec![(
        "HOMING__LIMITS__MAX_PENDING_MESSAGES_PER_DEVICE",
        "8",
    )])
    .await;
    let bob = b.register("bob").await;
    let statuses = |answer: &Value| answer["results"][0]["recipients"][0]["status"].clone();
    for n in 0..2 {
        let (status, answer) = put_txn(&a, &b, &format!("a{n}"), &honest(&a, &b, &bob)).await;
        assert_eq!((status, statuses(&answer)), (200, json!("accepted")));
    }
    // A's third message would take more than its share.
    let (status, answer) = put_txn(&a, &b, "a2", &honest(&a, &b, &bob)).await;
    assert_eq!((status, statuses(&answer)), (200, json!("mailbox_full")));
    // Another server still reaches bob.
    let (status, answer) = put_txn(&c, &b, "c0", &honest(&c, &b, &bob)).await;
    assert_eq!((status, statuses(&answer)), (200, json!("accepted")));

    // Local mail: each sending account has the same share.
    let alice = b.register("alice").await;
    let carol = b.register("carol").await;
    let send = |from: &TestUser| {
        let message = message_to(&b, &[(&bob, &[0])], b"local", "all");
        let token = from.device(0).token.clone();
        let b = &b;
        async move {
            let response = b
                .post_json("/api/v1/dms/send", &message, Some(&token))
                .await;
            response.status().as_u16()
        }
    };
    assert_eq!(send(&alice).await, 202);
    assert_eq!(send(&alice).await, 202);
    assert_eq!(send(&alice).await, 429);
    assert_eq!(send(&carol).await, 202);
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 6);
    // Clients and peers can see the share.
    let info: Value = b
        .get("/.well-known/homing/server-info")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["limits"]["max_pending_share_per_origin"], 0.25);
}
