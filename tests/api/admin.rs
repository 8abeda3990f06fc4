//! `homingd admin` commands against a real database, and the federation
//! behaviours they drive (retry, drop, rotation, bounce, hello).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, TestApp};

fn admin(app: &TestApp, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homingd"))
        .env("HOMING__DATABASE__URL", &app.database.url)
        .arg("admin")
        .args(args)
        .output()
        .expect("homingd runs")
}

fn admin_json(app: &TestApp, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = admin(app, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

async fn queue_for(app: &TestApp, token: &str, address: &str) -> Value {
    let bob_like = app.register(&format!("u{}", rand::random::<u32>())).await;
    let mut message = message_to(app, &[(&bob_like, &[0])], b"queued", "all");
    message["recipients"][0]["address"] = json!(address);
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(token))
        .await;
    assert_eq!(response.status(), 202);
    message
}

#[tokio::test]
async fn destinations_list_retry_and_drop() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    // Nothing listens on port 9 of 127.0.0.1: the relay fails and backs off.
    let message = queue_for(&app, &alice.device(0).token, "ghost@127.0.0.1:9").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = admin_json(&app, &["destinations", "list"]);
        if listed[0]["failures"].as_i64().unwrap_or(0) > 0 {
            break listed;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {listed}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(listed[0]["server_name"], "127.0.0.1:9");
    assert_eq!(listed[0]["queued"], 1);
    assert!(listed[0]["last_error"].is_string());
    assert!(listed[0]["last_failure_at"].is_i64(), "{listed}");
    let human = admin(&app, &["destinations", "list"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("127.0.0.1:9"));

    assert_eq!(
        admin_json(&app, &["destinations", "retry", "127.0.0.1:9"])["retry"],
        "127.0.0.1:9"
    );
    let dropped = admin_json(&app, &["destinations", "drop", "127.0.0.1:9"]);
    assert_eq!(dropped["dropped"], 1);
    assert_eq!(app.count("outbox"), 0);
    assert_eq!(app.count("messages"), 0);
    // The time-shifted purge also ended every token: sign in again.
    let token = app.sign_in(&alice.account, &alice.device(0).keys).await;
    let status: Value = app
        .get_auth(
            &format!(
                "/api/v1/dms/status/{}",
                message["message_id"].as_str().unwrap()
            ),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "dropped");
    assert!(!admin(&app, &["destinations", "retry", "nowhere.example"])
        .status
        .success());
}

/// The destination `name` in `admin destinations list --json`.
fn destination(app: &TestApp, name: &str) -> Value {
    let listed = admin_json(app, &["destinations", "list"]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["server_name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_refusing_peer_shows_its_error_and_when_it_refused() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    admin_json(&b, &["federation", "deny", &a.server_name]);
    let before = homing::time::now_ms();
    let mut message = message_to(&a, &[(&bob, &[0])], b"refused", "all");
    message["recipients"][0]["address"] = json!(format!("bob@{}", b.server_name));
    let response = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);

    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let listed = destination(&a, &b.server_name);
        if listed["failures"].as_i64().unwrap_or(0) > 0 {
            break listed;
        }
        assert!(Instant::now() < deadline, "no failure recorded: {listed}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("403") && error.contains("federation_denied"),
        "{error}"
    );
    let failed_at = failed["last_failure_at"].as_i64().unwrap();
    assert!(
        (before..=homing::time::now_ms()).contains(&failed_at),
        "{failed}"
    );
    let human = String::from_utf8_lossy(&admin(&a, &["destinations", "list"]).stdout).to_string();
    assert!(
        human.contains(&homing::time::format_rfc3339(failed_at)),
        "{human}"
    );

    // Once B lets A in, a success clears the error and keeps its time.
    admin_json(&b, &["federation", "clear", &a.server_name]);
    admin_json(&a, &["destinations", "retry", &b.server_name]);
    crate::federation::wait_for_outbox(&a, 0).await;
    let relayed = destination(&a, &b.server_name);
    assert!(relayed["last_error"].is_null(), "{relayed}");
    assert_eq!(relayed["last_failure_at"], failed_at, "{relayed}");
    assert!(relayed["last_success_at"].as_i64().unwrap() >= failed_at);
}

#[tokio::test]
async fn federation_rules_can_be_set_listed_and_cleared() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    admin_json(&app, &["federation", "deny", "bad.example"]);
    let rules = admin_json(&app, &["federation", "list"]);
    assert_eq!(rules, json!([["bad.example", "deny"]]));
    let bob = app.register("bob").await;
    let mut message = message_to(&app, &[(&bob, &[0])], b"x", "all");
    message["recipients"][0]["address"] = json!("someone@bad.example");
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 403);
    admin_json(&app, &["federation", "clear", "bad.example"]);
    assert_eq!(admin_json(&app, &["federation", "list"]), json!([]));
    assert!(!admin(&app, &["federation", "clear", "bad.example"])
        .status
        .success());
    assert!(!admin(&app, &["federation", "deny", "not a name"])
        .status
        .success());
    // With an allow rule, only allowed servers pass.
    admin_json(&app, &["federation", "allow", "good.example"]);
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn a_rotated_key_is_used_at_once_and_peers_fetch_it() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let send = |body: &'static [u8]| {
        let mut message = message_to(&a, &[(&bob, &[0])], body, "all");
        message["recipients"][0]["address"] = json!(format!("bob@{}", b.server_name));
        message
    };
    a.post_json(
        "/api/v1/dms/send",
        &send(b"before"),
        Some(&alice.device(0).token),
    )
    .await;
    crate::federation::wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;

    let old = a.state.server_key.key_id().to_string();
    let rotated = admin_json(&a, &["rotate-key", "--grace", "1h"]);
    let new = rotated["current_key_id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let keys: Value = a
        .get("/.well-known/homing/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["current_key_id"], new.as_str());
    let listed: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&old.as_str()),
        "the old key stays listed during its grace period"
    );

    // B has A's old key cached; a message signed with the new key makes B
    // fetch the key document again.
    a.post_json(
        "/api/v1/dms/send",
        &send(b"after"),
        Some(&alice.device(0).token),
    )
    .await;
    crate::federation::wait_for_items(&b, &bob.device(0).token, 2, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn queued_mail_past_the_maximum_age_bounces() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let message = queue_for(&app, &alice.device(0).token, "ghost@127.0.0.1:9").await;
    let settings = homing::mailbox::PurgeSettings {
        max_pending_age: app.state.settings.retention.max_pending_age,
        device_inactivity: app.state.settings.retention.device_inactivity,
        batch: 100,
    };
    let later = homing::time::now_ms()
        + app.state.settings.retention.max_pending_age.as_millis() as i64
        + 1;
    let report = {
        let mut conn = app.state.db.get().unwrap();
        homing::mailbox::purge_once(&mut conn, &settings, later).unwrap()
    };
    assert_eq!(report.bounced, 1);
    assert!(report.status_events.iter().any(|e| e.state == "bounced"));
    assert_eq!(app.count("outbox"), 0);
    assert_eq!(app.count("messages"), 0);
    // The time-shifted purge also ended every token: sign in again.
    let token = app.sign_in(&alice.account, &alice.device(0).keys).await;
    let status: Value = app
        .get_auth(
            &format!(
                "/api/v1/dms/status/{}",
                message["message_id"].as_str().unwrap()
            ),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "bounced", "{status}");
}

#[tokio::test]
async fn hello_from_a_recovered_server_ends_the_back_off() {
    let a = spawn_app().await;
    let mut b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let b_name = b.server_name.clone();
    let message = |body: &'static [u8]| {
        let mut message = message_to(&a, &[(&bob, &[0])], body, "all");
        message["recipients"][0]["address"] = json!(format!("bob@{b_name}"));
        message
    };
    // B learns of A through a first delivery.
    a.post_json(
        "/api/v1/dms/send",
        &message(b"first"),
        Some(&alice.device(0).token),
    )
    .await;
    crate::federation::wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
    b.stop().await;
    let second = message(b"second");
    a.post_json("/api/v1/dms/send", &second, Some(&alice.device(0).token))
        .await;
    // A fails and is made to back off for an hour.
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_json(&a, &["destinations", "list"])[0]["failures"]
        .as_i64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "A never failed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    {
        use diesel::prelude::*;
        use homing::storage::schema::destinations;
        let mut conn = a.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::update(destinations::table)
            .set(destinations::next_attempt_at.eq(homing::time::now_ms() + 3_600_000))
            .execute(c))
        .unwrap();
    }
    // B comes back and says hello: A retries now, not in an hour.
    b.restart().await;
    let token = b.sign_in(&bob.account, &bob.device(0).keys).await;
    crate::federation::wait_for_items(&b, &token, 2, Duration::from_secs(10)).await;
}

/// No foreign key removes a delivery with its device or account: the
/// revocation and the deletion do. Mail for others stays, exactly.
#[tokio::test]
async fn revocations_and_deletions_leave_no_rows_pointing_at_them() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "second").await;
    let carol = app.register("carol").await;
    let token = alice.device(0).token.clone();
    for targets in [
        vec![(&bob, &[0usize, 1][..]), (&carol, &[0][..])],
        vec![(&bob, &[0, 1][..])],
        vec![(&carol, &[0][..])],
    ] {
        let message = message_to(&app, &targets, b"pending", "all");
        let response = app
            .post_json("/api/v1/dms/send", &message, Some(&token))
            .await;
        assert_eq!(response.status(), 202);
    }
    assert_eq!((app.count("messages"), app.count("deliveries")), (3, 6));

    // Bob's second device revokes his first.
    let remaining = vec![bob.device(1).certificate.clone()];
    let list = bob.account.device_list(3, remaining).unwrap();
    let response = app
        .post_json(
            "/api/v1/devices/first/revoke",
            &json!({ "device_list": list }),
            Some(&bob.device(1).token),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.count("deliveries"), 4);

    let deleted = admin_json(&app, &["users", "delete", "carol"]);
    assert_eq!(deleted["pending_dropped"], 2);
    // Carol's own message is gone; the one she shared with bob stays.
    assert_eq!((app.count("messages"), app.count("deliveries")), (2, 2));
    assert_eq!(app.orphans(), 0);
}

#[tokio::test]
async fn users_can_be_listed_disabled_enabled_and_deleted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&bob, &[0])], b"for bob", "all");
    app.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;

    let users = admin_json(&app, &["users", "list"]);
    let bob_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["alias"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_row["pending_deliveries"], 1);
    assert_eq!(bob_row["active_devices"], 1);
    let stats = admin_json(&app, &["stats"]);
    assert_eq!(stats["accounts"], 2);
    assert_eq!(stats["pending_deliveries"], 1);
    assert!(String::from_utf8_lossy(&admin(&app, &["stats"]).stdout).contains("pending deliveries"));

    // Bob's token was checked, so the daemon remembers it; the disable
    // happens in another process, which the daemon hears of through the
    // revocation counter within a fraction of a second.
    assert_eq!(
        app.get_auth("/api/v1/account", &bob.device(0).token)
            .await
            .status(),
        200
    );
    admin_json(&app, &["users", "disable", "bob"]);
    let disabled_at = Instant::now();
    loop {
        let status = app
            .get_auth("/api/v1/account", &bob.device(0).token)
            .await
            .status();
        if status == 401 {
            break;
        }
        // Until then the account reads as gone (404).
        assert!(status == 200 || status == 404, "{status}");
        assert!(
            disabled_at.elapsed() < Duration::from_secs(3),
            "a disabled account's token still works"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.get("/.well-known/homing/identity/bob").await.status(),
        404
    );
    admin_json(&app, &["users", "enable", "bob"]);
    assert_eq!(
        app.get_auth("/api/v1/account", &bob.device(0).token)
            .await
            .status(),
        200
    );

    let deleted = admin_json(&app, &["users", "delete", "bob"]);
    assert_eq!(deleted["pending_dropped"], 1);
    assert_eq!(app.count("messages"), 0);
    assert_eq!(app.count("devices"), 1);
    assert_eq!(app.orphans(), 0);
    assert!(!admin(&app, &["users", "delete", "bob"]).status.success());
    let purged = admin_json(&app, &["purge"]);
    assert!(purged["finished_messages"].is_number());
}
