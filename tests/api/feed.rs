//! The delivery feed: every change of an account's sent messages, in
//! order, readable from a cursor by a device that was away.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{message_to, spawn_app, TestApp};

async fn feed(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.get_auth(&format!("/api/v1/dms/status{query}"), token)
        .await
}

/// The feed from the start once it holds `count` changes. On PostgreSQL a
/// change shows once every older transaction (anywhere on the database
/// server) has ended, so it may take a moment.
async fn changes(app: &TestApp, token: &str, count: usize) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = feed(app, token, "?limit=500").await.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        if events.len() >= count {
            return events
                .iter()
                .map(|e| {
                    let recipient = e["recipient"].as_str().unwrap().to_string();
                    (recipient, e["state"].as_str().unwrap().to_string())
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_feed_lists_every_change_in_order_and_resumes_from_its_cursor() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let token = alice.device(0).token.clone();
    let first = message_to(&app, &[(&bob, &[0])], b"one", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &first, Some(&token))
        .await;
    assert_eq!(sent.status(), 202);
    app.ack(
        &bob.device(0).token,
        &[first["message_id"].as_str().unwrap()],
    )
    .await;
    let second = message_to(&app, &[(&carol, &[0])], b"two", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &second, Some(&token))
        .await;
    assert_eq!(sent.status(), 202);
    let recalled = app
        .http
        .delete(app.url(&format!(
            "/api/v1/dms/{}",
            second["message_id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(recalled.status(), 200);

    let (b, c) = (
        format!("bob@{}", app.server_name),
        format!("carol@{}", app.server_name),
    );
    let expected = vec![
        (b.clone(), "stored".to_string()),
        (b, "delivered".to_string()),
        (c.clone(), "stored".to_string()),
        (c, "recalled".to_string()),
    ];
    assert_eq!(changes(&app, &token, 4).await, expected);

    // Page by page, each page's cursor leads to the next change.
    let mut since = String::new();
    let mut paged = Vec::new();
    loop {
        let query = if since.is_empty() {
            "?limit=1".to_string()
        } else {
            format!("?limit=1&since={since}")
        };
        let page: Value = feed(&app, &token, &query).await.json().await.unwrap();
        for event in page["events"].as_array().unwrap() {
            assert_eq!(event["cursor"], page["cursor"]);
            paged.push(event["state"].as_str().unwrap().to_string());
        }
        let next = page["cursor"].as_str().unwrap().to_string();
        if page["more"] != Value::Bool(true) {
            // Past the last change: nothing, and the cursor stays.
            let rest: Value = feed(&app, &token, &format!("?since={next}"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(rest["events"], Value::Array(Vec::new()));
            assert_eq!(rest["cursor"], next.as_str());
            break;
        }
        since = next;
    }
    assert_eq!(paged, ["stored", "delivered", "stored", "recalled"]);
}

#[tokio::test]
async fn each_account_reads_only_its_own_feed_and_bad_cursors_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&bob, &[0])], b"hi", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    changes(&app, &alice.device(0).token, 1).await;
    let bobs: Value = feed(&app, &bob.device(0).token, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["events"], Value::Array(Vec::new()));
    for query in [
        "?since=nope",
        "?since=1",
        "?since=-1-2",
        "?limit=0",
        "?limit=501",
        "?other=1",
    ] {
        let answer = feed(&app, &alice.device(0).token, query).await;
        assert_eq!(answer.status(), 400, "{query}");
    }
    let anonymous = app.get("/api/v1/dms/status").await;
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn homing_status_without_an_id_lists_the_changes_since_last_time() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    crate::cli::init(&alice, &format!("alice@{}", app.server_name)).await;
    crate::cli::init(&bob, &format!("bob@{}", app.server_name)).await;
    let bob_address = format!("bob@{}", app.server_name);
    crate::cli::ok(crate::cli::homing(&alice, &["send", &bob_address, "--text", "hi"]).await);
    crate::cli::wait_inbox(&bob, 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = crate::cli::ok(crate::cli::homing(&alice, &["status"]).await);
        if listed.contains("delivered") || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        listed.contains(&bob_address) && listed.contains("delivered"),
        "{listed}"
    );
    let again = crate::cli::ok(crate::cli::homing(&alice, &["status"]).await);
    assert!(
        again.contains("no changes since you last looked"),
        "{again}"
    );
}

#[tokio::test]
async fn homing_inbox_tells_once_of_sent_mail_that_will_not_arrive() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    crate::cli::init(&alice, &format!("alice@{}", app.server_name)).await;
    // Dave's server refuses connections and is backing off: his mail
    // waits in the queue, until an admin drops it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap().to_string();
    drop(listener);
    crate::recall::back_off(&app, &server);
    let dave = format!("dave@{server}");
    // Sent with alice's own session (her client would need dave's keys,
    // which his unreachable server cannot give).
    let session: Value =
        serde_json::from_slice(&std::fs::read(alice.join("session.json")).unwrap()).unwrap();
    let token = session["token"].as_str().unwrap();
    let id = crate::helpers::new_message_id();
    let message = serde_json::json!({
        "message_id": id,
        "body": homing::crypto::b64(b"sealed"),
        "recipients": [{"address": dave, "devices": [
            {"device_id": "first", "key_wrap": homing::crypto::b64(&[7u8; 80])}]}],
    });
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(token))
        .await;
    assert_eq!(sent.status(), 202);
    let mut conn = app.state.db.get().unwrap();
    assert_eq!(
        homing::admin::federation::drop_queue(&mut conn, &server).unwrap(),
        1
    );
    drop(conn);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inbox = crate::cli::homing(&alice, &["inbox"]).await;
        let told = String::from_utf8_lossy(&inbox.stderr).into_owned();
        if told.contains("not delivered") {
            assert!(
                told.contains(&id) && told.contains(&dave) && told.contains("dropped"),
                "{told}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never told: {told}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = crate::cli::homing(&alice, &["inbox"]).await;
    assert!(!String::from_utf8_lossy(&again.stderr).contains("not delivered"));
}
