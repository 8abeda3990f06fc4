//! `homingd admin migrate-store`: a server with real state on SQLite moves
//! to PostgreSQL and keeps working there. (The target must be PostgreSQL, so
//! the moves only run when the suite has it: `HOMING_TEST_DATABASE_URL`.)

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, spawn_app_on_sqlite, TestApp, TestDatabase};

fn homingd_admin(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homingd"))
        .env("HOMING__DATABASE__URL", database_url)
        .arg("admin")
        .args(args)
        .output()
        .expect("homingd runs")
}

fn admin_json(database_url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = homingd_admin(database_url, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

/// A fresh PostgreSQL database for the target, or `None` (with a note) on
/// the SQLite run of the suite.
async fn target_database() -> Option<TestDatabase> {
    let database = TestDatabase::postgres().await;
    if database.is_none() {
        eprintln!(
            "migrate-store tests need PostgreSQL (HOMING_TEST_DATABASE_URL); checked on that run"
        );
    }
    database
}

/// Every table's row count, straight from the database.
fn table_counts(app: &TestApp) -> BTreeMap<String, i64> {
    homing::admin::migrate_store::TABLES
        .iter()
        .map(|table| (table.to_string(), app.count(table)))
        .collect()
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

#[tokio::test]
async fn a_sqlite_server_moves_to_postgres_and_keeps_working() {
    let Some(target) = target_database().await else {
        return;
    };
    let mut app = spawn_app_on_sqlite().await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let alice_token = &alice.device(0).token;

    // Pending mail for both of bob's devices; one of them is read by the
    // phone, so ids have a gap and the phone's mailbox differs.
    let mut sent = Vec::new();
    for body in [&b"first"[..], b"second", b"third"] {
        let message = message_to(&app, &[(&bob, &[0, 1])], body, "all");
        let response = app
            .post_json("/api/v1/dms/send", &message, Some(alice_token))
            .await;
        assert_eq!(response.status(), 202);
        sent.push(message);
    }
    let first_id = sent[0]["message_id"].as_str().unwrap();
    app.ack(&bob.device(1).token, &[first_id]).await;
    // Mail for a server that never answers stays in the outbox.
    let mut remote = message_to(&app, &[(&bob, &[0])], b"far away", "all");
    remote["recipients"][0]["address"] = json!("ghost@127.0.0.1:9");
    let response = app
        .post_json("/api/v1/dms/send", &remote, Some(alice_token))
        .await;
    assert_eq!(response.status(), 202);
    // The newest delivery is read and purged before the move: its id is a
    // cursor alice's device keeps, so the target must not hand it out again.
    let read = message_to(&app, &[(&alice, &[0])], b"read", "all");
    let response = app
        .post_json("/api/v1/dms/send", &read, Some(&bob.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let alice_page = app.sync(alice_token).await;
    let alice_cursor = items(&alice_page).last().unwrap()["cursor"]
        .as_i64()
        .unwrap();
    app.ack(alice_token, &[read["message_id"].as_str().unwrap()])
        .await;
    let source_url = app.database.url.clone();
    let invite = admin_json(&source_url, &["invite", "create", "--uses", "3"]);
    admin_json(&source_url, &["federation", "deny", "bad.example"]);
    // Two server keys, one current: booleans and the signing identity.
    let rotated = admin_json(&source_url, &["rotate-key", "--grace", "1h"]);
    let current_key = rotated["current_key_id"].as_str().unwrap().to_string();

    app.stop().await;
    let before = table_counts(&app);
    for table in [
        "accounts",
        "devices",
        "auth_tokens",
        "messages",
        "deliveries",
        "delivery_receipts",
        "outbox",
        "invites",
        "federation_rules",
        "server_keys",
        "send_idempotency",
    ] {
        assert!(before[table] > 0, "no {table} rows to copy: {before:?}");
    }

    let report = admin_json(&source_url, &["migrate-store", "--to", &target.url]);
    let reported: BTreeMap<String, (i64, i64)> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                (
                    t["source_rows"].as_i64().unwrap(),
                    t["target_rows"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (i64, i64)> =
        before.iter().map(|(t, n)| (t.clone(), (*n, *n))).collect();
    assert_eq!(reported, expected, "{report}");
    assert_eq!(
        report["total_rows"].as_i64().unwrap(),
        before.values().sum::<i64>()
    );
    eprintln!(
        "migrated {} rows in {} ms",
        report["total_rows"], report["elapsed_ms"]
    );

    // The same server, now on PostgreSQL.
    app.restart_on(target).await;
    assert_eq!(table_counts(&app), before);
    let keys: Value = app
        .get("/.well-known/homing/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["current_key_id"], current_key.as_str());

    // Bob's phone keeps its token and finds exactly the mail it had not
    // read, with the same bodies; his first device finds all three.
    let phone = app.sync(&bob.device(1).token).await;
    let bodies: Vec<&Value> = items(&phone).iter().map(|i| &i["body"]).collect();
    assert_eq!(bodies, vec![&sent[1]["body"], &sent[2]["body"]]);
    let token = app.sign_in(&bob.account, &bob.device(0).keys).await;
    let old = app.sync(&token).await;
    let bodies: Vec<&Value> = items(&old).iter().map(|i| &i["body"]).collect();
    assert_eq!(
        bodies,
        sent.iter().map(|m| &m["body"]).collect::<Vec<_>>(),
        "{old}"
    );
    let status: Value = app
        .get_auth(
            &format!(
                "/api/v1/dms/status/{}",
                remote["message_id"].as_str().unwrap()
            ),
            alice_token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "queued", "{status}");
    // A retried send is still answered from its idempotency record.
    let retried = app
        .post_json("/api/v1/dms/send", &sent[2], Some(alice_token))
        .await;
    assert_eq!(retried.status(), 202);
    assert_eq!(app.count("messages"), before["messages"]);

    // New rows get ids after the copied ones: the sequences moved on.
    let after_move = message_to(&app, &[(&alice, &[0])], b"after", "all");
    let response = app
        .post_json("/api/v1/dms/send", &after_move, Some(&bob.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let alice_page: Value = app
        .post_json(
            "/api/v1/dms/sync",
            &json!({ "cursor": alice_cursor }),
            Some(alice_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(items(&alice_page).len(), 1, "{alice_page}");
    assert_eq!(items(&alice_page)[0]["body"], after_move["body"]);

    let carol = app.register("carol").await;
    let fresh = message_to(&app, &[(&bob, &[0, 1]), (&carol, &[0])], b"fourth", "all");
    let response = app
        .post_json("/api/v1/dms/send", &fresh, Some(alice_token))
        .await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let mut queued = message_to(&app, &[(&carol, &[0])], b"far again", "all");
    queued["recipients"][0]["address"] = json!("ghost2@127.0.0.1:9");
    let response = app
        .post_json("/api/v1/dms/send", &queued, Some(alice_token))
        .await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let page = app.sync(&token).await;
    let newest = items(&page).last().expect("the new message");
    assert_eq!(newest["body"], fresh["body"]);
    let old_cursor = items(&old).last().unwrap()["cursor"].as_i64().unwrap();
    assert!(newest["cursor"].as_i64().unwrap() > old_cursor, "{page}");

    let database_url = app.database.url.clone();
    let invites = admin_json(&database_url, &["invite", "list"]);
    assert_eq!(invites[0]["invite_id"], invite["invite_id"]);
    assert_eq!(invites[0]["max_uses"], 3);
    assert_eq!(
        admin_json(&database_url, &["federation", "list"]),
        json!([["bad.example", "deny"]])
    );
}

#[tokio::test]
async fn a_target_that_holds_data_is_refused() {
    let Some(target) = target_database().await else {
        return;
    };
    let mut app = spawn_app_on_sqlite().await;
    app.register("alice").await;
    app.stop().await;
    let source_url = app.database.url.clone();
    admin_json(&source_url, &["migrate-store", "--to", &target.url]);

    // A second run into the same, now filled, database.
    let again = homingd_admin(&source_url, &["migrate-store", "--to", &target.url]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert!(stderr.contains("accounts: 1"), "{stderr}");
    // Nothing was added by the refused run.
    let counts = admin_json(&target.url, &["stats"]);
    assert_eq!(counts["accounts"], 1);
}

#[tokio::test]
async fn bad_targets_are_refused_with_a_clear_error() {
    let app = spawn_app().await;
    app.register("alice").await;
    let url = app.database.url.clone();
    let refused = |args: &[&str], expected: &str| {
        let output = homingd_admin(&url, args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("secret"), "a password is shown: {stderr}");
    };
    refused(
        &["migrate-store", "--to", "sqlite:///tmp/elsewhere.db"],
        "must be a postgres:// URL",
    );
    refused(
        &["migrate-store", "--to", "mysql://root:secret@db/homing"],
        "must be a postgres:// URL",
    );
    refused(
        &[
            "migrate-store",
            "--to",
            "postgres://homing:secret@127.0.0.1:1/homing",
        ],
        "cannot connect to PostgreSQL",
    );
    refused(&["migrate-store"], "--to");
    if app.database.is_postgres() {
        // The configured database itself, named exactly or another way.
        refused(
            &["migrate-store", "--to", &url],
            "is the configured database itself",
        );
        let other_spelling = url.replacen("127.0.0.1", "localhost", 1);
        if other_spelling != url {
            refused(
                &["migrate-store", "--to", &other_spelling],
                "is the configured database itself",
            );
        }
    }
    assert_eq!(app.count("accounts"), 1);
}
