//! Recall: a sender takes back a message nobody has read yet. Mailboxes
//! that have not acknowledged it lose it, relay work still on this server
//! goes, and each recipient's receipt says what happened.

use serde_json::{json, Value};

use crate::federation::delivery_status;
use crate::helpers::{message_to, spawn_app, TestApp};

async fn recall(app: &TestApp, token: &str, message_id: &str) -> reqwest::Response {
    app.http
        .delete(app.url(&format!("/api/v1/dms/{message_id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// Each recipient's state in a recall or status answer, by address.
fn states(answer: &Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = answer["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            let address = r["recipient"].as_str().unwrap_or_default().to_string();
            (address, r["state"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    states.sort();
    states
}

/// A destination that failed before and is not due for an hour.
pub fn back_off(app: &TestApp, destination: &str) {
    use diesel::prelude::*;
    use homing::storage::schema::destinations as d;
    let mut conn = app.state.db.get().unwrap();
    let later = homing::time::now_ms() + 3_600_000;
    homing::with_backend!(&mut *conn, c => diesel::insert_into(d::table)
        .values((d::server_name.eq(destination), d::failures.eq(3), d::next_attempt_at.eq(later)))
        .execute(c))
    .unwrap();
}

async fn wait_for_failed_attempt(app: &TestApp, destination: &str) {
    use diesel::prelude::*;
    use homing::storage::schema::destinations as d;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut conn = app.state.db.get().unwrap();
        let row: Option<(i32, Option<String>)> = homing::with_backend!(&mut *conn, c => d::table
            .find(destination)
            .select((d::failures, d::lease_owner))
            .first(c)
            .optional())
        .unwrap();
        if matches!(row, Some((failures, None)) if failures > 0) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{destination}: {row:?}"
        );
        drop(conn);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_recalled_message_leaves_the_mailboxes_that_have_not_read_it() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let mut message = message_to(&app, &[(&bob, &[0]), (&carol, &[0])], b"oops", "all");
    // And two people on servers that refuse connections. Dave's server
    // failed before and is backing off for an hour: his mail waits here,
    // in no transaction. Erin's is tried at once: her mail goes into a
    // transaction, which may have reached her server for all this one
    // knows, so it is recalled from there: after the transaction.
    let closed = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (dave_server, erin_server) = (closed(), closed());
    back_off(&app, &dave_server);
    let (dave, erin) = (format!("dave@{dave_server}"), format!("erin@{erin_server}"));
    for address in [&dave, &erin] {
        message["recipients"].as_array_mut().unwrap().push(json!({
            "address": address,
            "devices": [{"device_id": "first", "key_wrap": homing::crypto::b64(&[7u8; 80])}],
        }));
    }
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202, "{:?}", sent.text().await);
    let id = message["message_id"].as_str().unwrap();
    // Carol reads it before the recall.
    app.ack(&carol.device(0).token, &[id]).await;
    wait_for_failed_attempt(&app, &erin_server).await;

    let answer = recall(&app, &alice.device(0).token, id).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    let (b, c) = (
        format!("bob@{}", app.server_name),
        format!("carol@{}", app.server_name),
    );
    assert_eq!(
        states(&answer),
        vec![
            (b.clone(), "recalled".to_string()),
            (c.clone(), "delivered".to_string()),
            (dave.clone(), "recalled".to_string()),
            (erin.clone(), "recalling".to_string()),
        ]
    );
    assert_eq!(app.count("outbound_recalls"), 1);
    // Gone from Bob's mailbox and from the relay's queue; counters agree.
    let page = app.sync(&bob.device(0).token).await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(app.count("deliveries"), 0);
    assert_eq!(app.count("outbox"), 1);
    assert_eq!(app.count("messages"), 1);
    let pending: i64 = {
        use diesel::prelude::*;
        use homing::storage::schema::devices as d;
        let mut conn = app.state.db.get().unwrap();
        let counts: Vec<i64> = homing::with_backend!(&mut *conn, c => d::table
            .select(d::pending_messages)
            .load(c))
        .unwrap();
        counts.iter().sum()
    };
    assert_eq!(pending, 0, "every device's pending count is back to zero");

    // Asking again answers the same.
    let again: Value = recall(&app, &alice.device(0).token, id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(states(&again), states(&answer));
    // The status endpoint says the same too.
    let status = delivery_status(&app, &alice.device(0).token, id).await;
    assert_eq!(states(&status), states(&answer));

    // An admin who gives up on Erin's server drops the recall with the
    // mail it waits behind.
    {
        let mut conn = app.state.db.get().unwrap();
        homing::storage::mail::outbox::drop_queue(&mut conn, &erin_server).unwrap();
    }
    assert_eq!(app.count("outbound_recalls"), 0);
    let status = delivery_status(&app, &alice.device(0).token, id).await;
    assert!(
        states(&status).contains(&(erin.clone(), "dropped".to_string())),
        "{status}"
    );
}

#[tokio::test]
async fn only_the_sender_recalls_and_only_its_own_ids() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&bob, &[0])], b"mine", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let id = message["message_id"].as_str().unwrap();
    // Bob cannot take back what Alice sent him.
    let answer = recall(&app, &bob.device(0).token, id).await;
    assert_eq!(answer.status(), 404);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["error"], "unknown_message");
    assert_eq!(app.count("deliveries"), 1);
    // Not an id at all.
    assert_eq!(
        recall(&app, &alice.device(0).token, "short").await.status(),
        400
    );
    // No token.
    let anonymous = app
        .http
        .delete(app.url(&format!("/api/v1/dms/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // The other routes under /api/v1/dms still answer as before.
    assert_eq!(
        app.sync(&bob.device(0).token).await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn homing_recall_takes_a_message_back_before_it_is_read() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    crate::cli::init(&alice, &format!("alice@{}", app.server_name)).await;
    crate::cli::init(&bob, &format!("bob@{}", app.server_name)).await;
    let bob_address = format!("bob@{}", app.server_name);
    let id = crate::cli::ok(
        crate::cli::homing(&alice, &["send", &bob_address, "--text", "wrong person"]).await,
    );
    let said = crate::cli::ok(crate::cli::homing(&alice, &["recall", id.trim()]).await);
    assert!(
        said.contains("recalled") && said.contains("taken back"),
        "{said}"
    );
    assert!(crate::cli::inbox(&bob).await.is_empty());
}
