//! Send, sync, ack, retention, expiry and quotas through the real API.

use homing::mailbox::{purge_once, PurgeSettings};
use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp};

async fn send(app: &TestApp, token: &str, message: &Value) -> reqwest::Response {
    app.post_json("/api/v1/dms/send", message, Some(token))
        .await
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

pub(crate) fn purge_at(app: &TestApp, now: i64) -> homing::mailbox::PurgeReport {
    let settings = PurgeSettings {
        max_pending_age: app.state.settings.retention.max_pending_age,
        device_inactivity: app.state.settings.retention.device_inactivity,
        batch: 1_000,
    };
    let mut conn = app.state.db.get().unwrap();
    purge_once(&mut conn, &settings, now).unwrap()
}

#[tokio::test]
async fn both_devices_sync_their_own_wrap_and_two_acks_purge_the_message() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let message = message_to(&app, &[(&bob, &[0, 1])], b"ciphertext-bytes", "all");
    let response = send(&app, &alice.device(0).token, &message).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["recipients"][0]["status"], "stored");
    assert_eq!(app.count("messages"), 1);
    assert_eq!(app.count("deliveries"), 2);

    let id = message["message_id"].as_str().unwrap();
    for (index, token) in [&bob.device(0).token, &bob.device(1).token]
        .into_iter()
        .enumerate()
    {
        let page = app.sync(token).await;
        let item = &items(&page)[0];
        assert_eq!(item["message_id"], id);
        assert_eq!(item["body"], message["body"]);
        assert_eq!(
            item["key_wrap"],
            message["recipients"][0]["devices"][index]["key_wrap"]
        );
        assert!(item["expires_at"].as_i64().unwrap() > item["received_at"].as_i64().unwrap());
    }
    app.ack(&bob.device(0).token, &[id]).await;
    assert_eq!(
        app.count("messages"),
        1,
        "all-mode waits for the second device"
    );
    assert!(items(&app.sync(&bob.device(0).token).await).is_empty());
    let acked = app.ack(&bob.device(1).token, &[id]).await;
    assert_eq!(acked["purged"], 1);
    assert_eq!(app.count("messages"), 0);
    assert_eq!(app.count("deliveries"), 0);

    let status: Value = app
        .get_auth(&format!("/api/v1/dms/status/{id}"), &alice.device(0).token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "delivered");
    // Nobody else can read that status.
    let other = app
        .get_auth(&format!("/api/v1/dms/status/{id}"), &bob.device(0).token)
        .await;
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn in_any_mode_one_ack_ends_the_message_for_all_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let message = message_to(&app, &[(&bob, &[0, 1])], b"x", "any");
    assert_eq!(
        send(&app, &alice.device(0).token, &message).await.status(),
        202
    );
    let id = message["message_id"].as_str().unwrap();
    app.ack(&bob.device(1).token, &[id]).await;
    assert!(items(&app.sync(&bob.device(0).token).await).is_empty());
    assert_eq!(app.count("messages"), 0);
}

#[tokio::test]
async fn keep_retention_holds_an_acked_message_for_a_device_that_syncs_later() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let keep = app
        .http
        .put(app.url("/api/v1/account/retention"))
        .bearer_auth(&bob.device(0).token)
        .json(&json!({"policy": "keep", "duration_secs": 3_600}))
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), 200);
    let message = message_to(&app, &[(&bob, &[0, 1])], b"kept", "any");
    send(&app, &alice.device(0).token, &message).await;
    let id = message["message_id"].as_str().unwrap();
    app.ack(&bob.device(0).token, &[id]).await;
    // The phone syncs later and still finds it.
    let page = app.sync(&bob.device(1).token).await;
    assert_eq!(items(&page)[0]["message_id"], id);
    // Until the keep time has passed.
    let report = purge_at(&app, homing::time::now_ms() + 3_601_000);
    assert_eq!(report.expired_deliveries, 1);
    assert_eq!(report.finished_messages, 1);
    assert_eq!(app.count("messages"), 0);
}

#[tokio::test]
async fn retention_is_capped_by_the_server() {
    let app = spawn_app_with(vec![("HOMING__RETENTION__MAX_KEEP", "1h")]).await;
    let bob = app.register("bob").await;
    let answer: Value = app
        .http
        .put(app.url("/api/v1/account/retention"))
        .bearer_auth(&bob.device(0).token)
        .json(&json!({"policy": "keep", "duration_secs": 999_999}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"policy": "keep", "duration_secs": 3_600}));
}

#[tokio::test]
async fn expiry_and_inactivity_remove_what_they_should_and_nothing_else() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let first = message_to(&app, &[(&bob, &[0, 1])], b"one", "all");
    send(&app, &alice.device(0).token, &first).await;

    // Nothing is due yet.
    let report = purge_at(&app, homing::time::now_ms());
    assert_eq!(
        (report.expired_deliveries, report.inactive_deliveries),
        (0, 0)
    );
    assert_eq!(app.count("deliveries"), 2);

    // The phone goes silent past the inactivity limit: only its delivery goes.
    {
        use diesel::prelude::*;
        use homing::storage::schema::devices;
        let mut conn = app.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::update(devices::table.filter(devices::device_id.eq("phone")))
            .set(devices::last_seen_at.eq(0i64))
            .execute(c))
        .unwrap();
    }
    let report = purge_at(&app, homing::time::now_ms());
    assert_eq!(report.inactive_deliveries, 1);
    assert_eq!(items(&app.sync(&bob.device(0).token).await).len(), 1);
    // A silent device is no longer a required target.
    let second = message_to(&app, &[(&bob, &[0])], b"two", "all");
    assert_eq!(
        send(&app, &alice.device(0).token, &second).await.status(),
        202
    );

    // Past the maximum pending age everything unacknowledged expires, and
    // the sender can see it.
    let later = homing::time::now_ms()
        + app.state.settings.retention.max_pending_age.as_millis() as i64
        + 1;
    let report = purge_at(&app, later);
    assert_eq!(report.expired_deliveries, 2);
    assert!(report.status_events.iter().any(|e| e.state == "expired"));
    assert_eq!(app.count("deliveries"), 0);
    assert_eq!(app.count("messages"), 0);
}

#[tokio::test]
async fn retried_sends_store_once_and_reused_ids_conflict() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&bob, &[0])], b"hello", "all");
    let first: Value = send(&app, &alice.device(0).token, &message)
        .await
        .json()
        .await
        .unwrap();
    let again = send(&app, &alice.device(0).token, &message).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    assert_eq!(app.count("messages"), 1);
    assert_eq!(app.count("deliveries"), 1);

    let mut changed = message.clone();
    changed["body"] = json!(homing::crypto::b64(b"different"));
    let response = send(&app, &alice.device(0).token, &changed).await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "message_id_reused"
    );

    // Even after the message was delivered and purged, a retry stores nothing.
    let id = message["message_id"].as_str().unwrap();
    app.ack(&bob.device(0).token, &[id]).await;
    assert_eq!(app.count("messages"), 0);
    assert_eq!(
        send(&app, &alice.device(0).token, &message).await.status(),
        202
    );
    assert_eq!(app.count("messages"), 0);
}

#[tokio::test]
async fn concurrent_sends_committed_together_keep_their_own_answers() {
    // Concurrent sends share a transaction; a refused one must not take the
    // others with it, and retries inside one batch must store once.
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let token = alice.device(0).token.clone();
    let distinct: Vec<Value> = (0..20u8)
        .map(|i| message_to(&app, &[(&bob, &[0, 1])], &[i], "all"))
        .collect();
    let retried = message_to(&app, &[(&bob, &[0, 1])], b"retried", "all");
    let stale = message_to(&app, &[(&bob, &[0])], b"stale", "all");
    let mut requests: Vec<(&Value, u16)> = distinct.iter().map(|m| (m, 202)).collect();
    requests.extend((0..5).map(|_| (&retried, 202)));
    requests.push((&stale, 409));
    let answers = futures_util::future::join_all(
        requests
            .iter()
            .map(|(message, _)| send(&app, &token, message)),
    )
    .await;
    for ((message, expected), answer) in requests.iter().zip(answers) {
        assert_eq!(answer.status(), *expected, "{}", message["message_id"]);
    }
    assert_eq!(app.count("messages"), 21);
    assert_eq!(app.count("deliveries"), 42);
}

#[tokio::test]
async fn a_burst_fills_a_mailbox_to_its_cap_and_no_further() {
    // Sends committed together must count each other's deliveries against
    // the recipient's quota, as if they had run one after another.
    // One sender may fill the whole quota here: the share per sender is
    // tested in `abuse_federation`.
    let app = spawn_app_with(vec![
        ("HOMING__LIMITS__MAX_PENDING_MESSAGES_PER_DEVICE", "5"),
        ("HOMING__LIMITS__MAX_PENDING_SHARE_PER_ORIGIN", "1"),
    ])
    .await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let token = alice.device(0).token.clone();
    let burst: Vec<Value> = (0..30u8)
        .map(|i| message_to(&app, &[(&bob, &[0, 1])], &[i], "all"))
        .collect();
    let answers = futures_util::future::join_all(burst.iter().map(|m| send(&app, &token, m))).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        25,
        "{statuses:?}"
    );
    assert_eq!(app.count("deliveries"), 10);
    for device in 0..2 {
        let page = app.sync(&bob.device(device).token).await;
        let mut cursors: Vec<i64> = items(&page)
            .iter()
            .map(|i| i["cursor"].as_i64().unwrap())
            .collect();
        assert_eq!(cursors.len(), 5);
        cursors.dedup();
        assert_eq!(cursors.len(), 5, "cursors are distinct and ascending");
    }
}

#[tokio::test]
async fn an_id_taken_by_another_sender_in_the_same_burst_is_refused_alone() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let bob = app.register("bob").await;
    let mut mine: Vec<Value> = (0..10u8)
        .map(|i| message_to(&app, &[(&bob, &[0])], &[i], "all"))
        .collect();
    let mut theirs = message_to(&app, &[(&bob, &[0])], b"carol", "all");
    theirs["message_id"] = mine[0]["message_id"].clone();
    mine.push(theirs);
    let tokens: Vec<&str> = (0..mine.len())
        .map(|i| {
            if i == 10 {
                carol.device(0).token.as_str()
            } else {
                alice.device(0).token.as_str()
            }
        })
        .collect();
    let answers = futures_util::future::join_all(
        mine.iter()
            .zip(&tokens)
            .map(|(m, token)| send(&app, token, m)),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert!(statuses[1..10].iter().all(|s| *s == 202), "{statuses:?}");
    let mut contested = vec![statuses[0], statuses[10]];
    contested.sort();
    assert_eq!(contested, vec![202, 409], "{statuses:?}");
    assert_eq!(app.count("messages"), 10);
    assert_eq!(app.count("deliveries"), 10);
}

#[tokio::test]
async fn a_stale_device_list_gets_409_with_missing_and_extra() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let mut message = message_to(&app, &[(&bob, &[0])], b"x", "all");
    message["recipients"][0]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"device_id": "old-tablet", "key_wrap": "AAAA"}));
    let response = send(&app, &alice.device(0).token, &message).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "stale_devices");
    assert_eq!(body["recipients"][0]["missing"], json!(["phone"]));
    assert_eq!(body["recipients"][0]["extra"], json!(["old-tablet"]));
    assert_eq!(app.count("messages"), 0);

    let unknown = message_to(&app, &[(&bob, &[0, 1])], b"x", "all");
    let mut unknown = unknown;
    unknown["recipients"][0]["address"] = json!(format!("nobody@{}", app.server_name));
    let response = send(&app, &alice.device(0).token, &unknown).await;
    assert_eq!(response.status(), 404);
    assert_eq!(app.count("messages"), 0);
    // A recipient on another server is queued for relay, not checked here.
    let mut remote = message_to(&app, &[(&bob, &[0, 1])], b"x", "all");
    remote["recipients"][0]["address"] = json!("bob@elsewhere.example");
    let response = send(&app, &alice.device(0).token, &remote).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["recipients"][0]["status"], "queued");
    assert_eq!(app.count("outbox"), 1);
}

#[tokio::test]
async fn a_device_never_sees_or_acks_another_devices_deliveries() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let to_carol = message_to(&app, &[(&carol, &[0])], b"for carol", "all");
    send(&app, &alice.device(0).token, &to_carol).await;
    assert!(items(&app.sync(&bob.device(0).token).await).is_empty());
    let id = to_carol["message_id"].as_str().unwrap();
    let acked = app.ack(&bob.device(0).token, &[id]).await;
    assert_eq!(acked["acknowledged"], 0);
    assert_eq!(items(&app.sync(&carol.device(0).token).await).len(), 1);
    for path in ["/api/v1/dms/sync", "/api/v1/dms/ack", "/api/v1/dms/send"] {
        let response = app.post_json(path, &json!({}), None).await;
        assert_eq!(response.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn sync_pages_in_server_order_with_a_cursor() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let message = message_to(&app, &[(&bob, &[0])], &[i], "all");
        send(&app, &alice.device(0).token, &message).await;
        ids.push(message["message_id"].as_str().unwrap().to_string());
    }
    let token = &bob.device(0).token;
    let page: Value = app
        .post_json("/api/v1/dms/sync", &json!({"limit": 2}), Some(token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["more"], true);
    let got: Vec<&str> = items(&page)
        .iter()
        .map(|i| i["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[0].as_str(), ids[1].as_str()]);
    let page: Value = app
        .post_json(
            "/api/v1/dms/sync",
            &json!({"cursor": page["cursor"], "limit": 10}),
            Some(token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["more"], false);
    assert_eq!(items(&page).len(), 3);
    let bad = app
        .post_json("/api/v1/dms/sync", &json!({"limit": 100_000}), Some(token))
        .await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_cursor_kept_across_an_emptied_mailbox_still_sees_new_mail() {
    // Clients keep their cursor; if ids were reused once a mailbox empties,
    // new mail would sort at or below it and never be synced.
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let token = &bob.device(0).token;
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let message = message_to(&app, &[(&bob, &[0])], &[i], "all");
        assert_eq!(
            send(&app, &alice.device(0).token, &message).await.status(),
            202
        );
        ids.push(message["message_id"].as_str().unwrap().to_string());
    }
    let page = app.sync(token).await;
    let cursor = page["cursor"].as_i64().unwrap();
    let acked: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.ack(token, &acked).await;
    assert_eq!(app.count("deliveries"), 0, "the mailbox is empty");

    let later = message_to(&app, &[(&bob, &[0])], b"later", "all");
    assert_eq!(
        send(&app, &alice.device(0).token, &later).await.status(),
        202
    );
    let page: Value = app
        .post_json(
            "/api/v1/dms/sync",
            &json!({ "cursor": cursor }),
            Some(token),
        )
        .await
        .json()
        .await
        .unwrap();
    let got: Vec<&str> = items(&page)
        .iter()
        .map(|i| i["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [later["message_id"].as_str().unwrap()]);
    assert!(page["cursor"].as_i64().unwrap() > cursor);
}

#[tokio::test]
async fn size_quota_and_rate_limits_answer_with_their_limits() {
    let app = spawn_app_with(vec![
        ("HOMING__LIMITS__MAX_MESSAGE_BYTES", "1024"),
        ("HOMING__LIMITS__MAX_PENDING_MESSAGES_PER_DEVICE", "3"),
        ("HOMING__LIMITS__MAX_PENDING_SHARE_PER_ORIGIN", "1"),
        ("HOMING__RATE_LIMITS__SEND_PER_DEVICE", "8/h"),
    ])
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let token = &alice.device(0).token;

    let big = message_to(&app, &[(&bob, &[0])], &[7u8; 1025], "all");
    let response = send(&app, token, &big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["limit"], 1024);

    // A flood at bob fills his mailbox to the cap and no further.
    for _ in 0..3 {
        assert_eq!(
            send(&app, token, &message_to(&app, &[(&bob, &[0])], b"m", "all"))
                .await
                .status(),
            202
        );
    }
    let response = send(&app, token, &message_to(&app, &[(&bob, &[0])], b"m", "all")).await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "mailbox_full");
    assert_eq!(body["limit"]["max_pending_messages_per_device"], 3);
    // With carol too, carol gets it and bob is reported full.
    let both = message_to(&app, &[(&bob, &[0]), (&carol, &[0])], b"m", "all");
    let body: Value = send(&app, token, &both).await.json().await.unwrap();
    let statuses: Vec<&str> = body["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["mailbox_full", "stored"]);
    assert_eq!(items(&app.sync(&bob.device(0).token).await).len(), 3);

    // The per-device send rate (8/h; 6 used above, the 413 included).
    for _ in 0..2 {
        send(
            &app,
            token,
            &message_to(&app, &[(&carol, &[0])], b"m", "all"),
        )
        .await;
    }
    let response = send(
        &app,
        token,
        &message_to(&app, &[(&carol, &[0])], b"m", "all"),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "rate_limited"
    );
}

#[tokio::test]
async fn malformed_sends_are_400() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let token = &alice.device(0).token;
    let good = message_to(&app, &[(&bob, &[0])], b"m", "all");
    let mut cases = Vec::new();
    let mut short_id = good.clone();
    short_id["message_id"] = json!("short");
    cases.push(short_id);
    let mut bad_body = good.clone();
    bad_body["body"] = json!("not base64!!");
    cases.push(bad_body);
    let mut no_recipients = good.clone();
    no_recipients["recipients"] = json!([]);
    cases.push(no_recipients);
    let mut bad_mode = good.clone();
    bad_mode["delivery"] = json!("some");
    cases.push(bad_mode);
    let mut bad_address = good.clone();
    bad_address["recipients"][0]["address"] = json!("not an address");
    cases.push(bad_address);
    for case in cases {
        let response = send(&app, token, &case).await;
        assert_eq!(response.status(), 400, "{case}");
    }
    assert_eq!(app.count("messages"), 0);
}

#[tokio::test]
async fn a_receipt_outlives_its_last_change_by_a_pending_age() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&bob, &[0])], b"hello", "all");
    let pending = app.state.settings.retention.max_pending_age.as_millis() as i64;
    let before = homing::time::now_ms();
    assert_eq!(
        send(&app, &alice.device(0).token, &message).await.status(),
        202
    );
    let after = homing::time::now_ms();

    // The delivery expires unacknowledged: the receipt's last change.
    let report = purge_at(&app, after + pending + 1);
    assert!(report.status_events.iter().any(|e| e.state == "expired"));
    assert_eq!(app.count("delivery_receipts"), 1);
    // Almost a pending age after that change, the sender may still ask.
    purge_at(&app, before + 2 * pending - 1);
    assert_eq!(app.count("delivery_receipts"), 1);
    // Two pending ages after the send, it goes.
    purge_at(&app, after + 2 * pending + 1);
    assert_eq!(app.count("delivery_receipts"), 0);
}
