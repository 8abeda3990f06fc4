//! Leaving a server: the account deletes itself with a departure its
//! account key signs. Its devices, tokens and pending mail go; its address
//! answers `410 Gone` with that departure, here and, once their cached
//! copy expires, at peers; and the alias is not registered again.

use diesel::prelude::*;
use homing::crypto::identity::DepartureStatement;
use homing::storage::schema::remote_identities;
use homing_client::keys::{AccountKeys, DeviceKeys};
use homing_proto::documents::DepartureDocument;
use serde_json::{json, Value};

use crate::helpers::{device_id, message_to, spawn_app, TestApp, TestUser};

/// A departure of `user` from `server` at `at`, signed with `key`.
fn departure(user: &TestUser, key: &AccountKeys, server: &str, at: i64) -> Value {
    let statement = DepartureStatement::new(user.account.public(), &user.alias, server, at);
    let signature = statement.sign(&key.signing).expect("signs");
    json!({"departed_at": at, "signature": signature.to_string()})
}

async fn leave(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .delete(app.url("/api/v1/account"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("request")
}

/// The departure served for `path`, checked as a peer would.
async fn served_departure(response: reqwest::Response) -> DepartureDocument {
    assert_eq!(response.status(), 410);
    let document: DepartureDocument = response.json().await.expect("a departure");
    assert_eq!(document.error, "account_gone");
    document
        .departure
        .verify(&document.signature)
        .expect("the departure verifies with its account key");
    document
}

#[tokio::test]
async fn an_account_that_leaves_is_gone_with_its_mail_and_its_alias_stays_taken() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(&app, &[(&alice, &[0])], b"hi", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&bob.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let push = crate::push::valid_subscription("https://push.example/alice");
    assert_eq!(
        crate::push::set_push(&app, &alice, 0, &push).await.status(),
        204
    );

    let body = departure(
        &alice,
        &alice.account,
        &app.server_name,
        homing::time::now_ms(),
    );
    let left = leave(&app, &alice.device(0).token, &body).await;
    let status = left.status();
    let left: Value = left.json().await.unwrap();
    assert_eq!(status, 200, "{left}");
    assert_eq!(left["address"], format!("alice@{}", app.server_name));
    assert_eq!(left["pending_deliveries_removed"], 1);
    assert_eq!(app.count("deliveries"), 0);
    assert_eq!(app.count("messages"), 0);
    assert_eq!(app.count("accounts"), 1);
    // Its devices will never be woken again.
    assert_eq!(app.count("push_subscriptions"), 0);

    // Its token ended with it.
    let me = app
        .get_auth("/api/v1/account", &alice.device(0).token)
        .await;
    assert_eq!(me.status(), 401);
    // The address answers with the departure the account key signed.
    let served = served_departure(app.get("/.well-known/homing/identity/alice").await).await;
    assert_eq!(served.departure.account_key, alice.account.public());
    assert_eq!(served.departure.alias, "alice");
    assert_eq!(served.departure.server, app.server_name);
    let looked_up = app
        .get_auth(
            &format!("/api/v1/directory/alice@{}", app.server_name),
            &bob.device(0).token,
        )
        .await;
    served_departure(looked_up).await;
    // Mail to it is refused, not stored.
    let again = message_to(&app, &[(&alice, &[0])], b"still there?", "all");
    let refused = app
        .post_json("/api/v1/dms/send", &again, Some(&bob.device(0).token))
        .await;
    assert_eq!(refused.status(), 404, "{:?}", refused.text().await);
    // Nobody registers the alias again, not even the same key.
    for account in [
        AccountKeys::generate(),
        AccountKeys {
            signing: alice.account.signing.clone(),
        },
    ] {
        let keys = DeviceKeys::generate(device_id("first"));
        let registration = account
            .registration("alice", &app.server_name, &keys, None)
            .unwrap();
        let answer = app.post_json("/api/v1/accounts", &registration, None).await;
        assert_eq!(answer.status(), 409);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["error"], "alias_departed");
    }
}

#[tokio::test]
async fn a_departure_needs_the_account_key_this_server_and_the_current_time() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let token = alice.device(0).token.clone();
    let now = homing::time::now_ms();
    let stranger = AccountKeys::generate();
    let cases = [
        // Signed by another key.
        (
            departure(&alice, &stranger, &app.server_name, now),
            400,
            "bad_signature",
        ),
        // Signed for another server.
        (
            departure(&alice, &alice.account, "elsewhere.example", now),
            400,
            "bad_signature",
        ),
        // Ten minutes old.
        (
            departure(&alice, &alice.account, &app.server_name, now - 600_000),
            400,
            "stale_departure",
        ),
        // Not a departure at all.
        (json!({"departed_at": now}), 400, ""),
    ];
    for (body, status, code) in cases {
        let answer = leave(&app, &token, &body).await;
        assert_eq!(answer.status(), status, "{body}");
        let answer: Value = answer.json().await.unwrap();
        if !code.is_empty() {
            assert_eq!(answer["error"], code, "{body}");
        }
    }
    let valid = departure(&alice, &alice.account, &app.server_name, now);
    let anonymous = app
        .http
        .delete(app.url("/api/v1/account"))
        .json(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // None of that touched the account: mail to alice still flows.
    assert_eq!(app.get_auth("/api/v1/account", &token).await.status(), 200);
    let message = message_to(&app, &[(&alice, &[0])], b"still here?", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&bob.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    assert_eq!(
        app.sync(&token).await["items"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        app.get("/.well-known/homing/identity/alice").await.status(),
        200
    );
}

#[tokio::test]
async fn peers_answer_410_once_their_copy_expires() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let path = format!("/api/v1/directory/alice@{}", a.server_name);
    assert_eq!(b.get_auth(&path, &bob.device(0).token).await.status(), 200);

    let body = departure(
        &alice,
        &alice.account,
        &a.server_name,
        homing::time::now_ms(),
    );
    assert_eq!(leave(&a, &alice.device(0).token, &body).await.status(), 200);
    // b's cached copy expires (as it would within five minutes).
    expire_cached_identities(&b);
    let document = served_departure(b.get_auth(&path, &bob.device(0).token).await).await;
    assert_eq!(document.departure.account_key, alice.account.public());
}

/// `homing account delete` with `typed` on its standard input.
async fn delete_with_cli(home: &std::path::Path, typed: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(home)
        .arg("--insecure-http")
        .args(["account", "delete"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("homing runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(typed.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.expect("homing ends")
}

#[tokio::test]
async fn homing_account_delete_asks_for_the_address_first() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("alice");
    let address = format!("alice@{}", app.server_name);
    crate::cli::init(&home, &address).await;
    // Bob's client pins alice's key with its first message to her.
    let bob_home = dir.path().join("bob");
    crate::cli::init(&bob_home, &format!("bob@{}", app.server_name)).await;
    crate::cli::ok(crate::cli::homing(&bob_home, &["send", &address, "--text", "hello"]).await);

    let refused = delete_with_cli(&home, &format!("bob@{}\n", app.server_name)).await;
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not confirmed"), "{said}");
    assert_eq!(
        app.get("/.well-known/homing/identity/alice").await.status(),
        200
    );

    let deleted = delete_with_cli(&home, &format!("{address}\n")).await;
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(String::from_utf8_lossy(&deleted.stdout).contains("is deleted"));
    served_departure(app.get("/.well-known/homing/identity/alice").await).await;
    // Bob's client checks the departure against the key it pinned, and
    // tells him why nothing can be sent.
    let send = crate::cli::homing(&bob_home, &["send", &address, "--text", "hi"]).await;
    assert!(!send.status.success());
    let said = String::from_utf8_lossy(&send.stderr);
    assert!(said.contains("left its home server"), "{said}");
}

#[tokio::test]
async fn a_client_does_not_believe_a_departure_its_server_made_up() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_home, bob_home) = (dir.path().join("alice"), dir.path().join("bob"));
    let address = format!("alice@{}", app.server_name);
    crate::cli::init(&alice_home, &address).await;
    crate::cli::init(&bob_home, &format!("bob@{}", app.server_name)).await;
    crate::cli::ok(crate::cli::homing(&bob_home, &["send", &address, "--text", "hello"]).await);
    // The server deletes alice and serves a departure under a key of its
    // own making: it verifies, but not with the key bob pinned.
    forge_departure_of_alice(&app);
    let send = crate::cli::homing(&bob_home, &["send", &address, "--text", "hi"]).await;
    assert!(!send.status.success());
    let said = String::from_utf8_lossy(&send.stderr);
    assert!(said.contains("not believing it"), "{said}");
}

/// Ends `app`'s cached copies of remote identities, as five minutes would.
fn expire_cached_identities(app: &TestApp) {
    let mut conn = app.state.db.get().unwrap();
    homing::with_backend!(&mut *conn, c => diesel::update(remote_identities::table)
        .set(remote_identities::expires_at.eq(0))
        .execute(c))
    .unwrap();
}

/// What a hostile server does: deletes alice behind her back and serves a
/// departure for her address signed by a key of its own making, which it
/// returns.
fn forge_departure_of_alice(app: &TestApp) -> AccountKeys {
    use homing::storage::schema::departed_accounts as d;
    let forger = AccountKeys::generate();
    let now = homing::time::now_ms();
    let statement = DepartureStatement::new(forger.public(), "alice", &app.server_name, now);
    let signature = statement.sign(&forger.signing).unwrap();
    let mut conn = app.state.db.get().unwrap();
    homing::admin::users::delete(&mut conn, "alice").unwrap();
    homing::with_backend!(&mut *conn, c => diesel::insert_into(d::table)
        .values((
            d::alias.eq("alice"),
            d::account_key.eq(forger.public().to_string()),
            d::departed_at.eq(now),
            d::signature.eq(signature.to_string()),
        ))
        .execute(c))
    .unwrap();
    forger
}

#[tokio::test]
async fn a_server_cannot_make_up_the_departure_of_an_account_a_peer_pinned() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let path = format!("/api/v1/directory/alice@{}", a.server_name);
    assert_eq!(b.get_auth(&path, &bob.device(0).token).await.status(), 200);

    // Server a deletes alice behind her back and serves a departure signed
    // by a key of its own making, for her address.
    let forger = forge_departure_of_alice(&a);
    // What a serves verifies on its own...
    served_departure(a.get("/.well-known/homing/identity/alice").await).await;
    // ...but b pinned alice's key, and says the remote answered badly.
    expire_cached_identities(&b);
    let answer = b.get_auth(&path, &bob.device(0).token).await;
    assert_eq!(answer.status(), 502);
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or_default()
            .contains("another key than the one pinned"),
        "{answer}"
    );
    assert_ne!(alice.account.public(), forger.public());
}
