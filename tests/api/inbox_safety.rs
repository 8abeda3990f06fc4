//! `homing inbox` and `homing listen` never lose mail: a delivery is
//! acknowledged only once it is on the device (verified, held or
//! quarantined); what cannot be checked now stays on the server.

use std::process::Stdio;
use std::time::{Duration, Instant};

use homing::crypto::envelope::{self, Plaintext};
use homing::crypto::BoxPublicKey;
use serde_json::{json, Value};

use crate::cli::{homing, inbox, init, ok};
use crate::helpers::{new_message_id, spawn_app, TestApp, TestUser};

/// The id and box key of the first device of `alias` on `app`.
pub async fn bob_device(app: &TestApp, alias: &str) -> (String, BoxPublicKey) {
    let document: Value = app
        .get(&format!("/.well-known/homing/identity/{alias}"))
        .await
        .json()
        .await
        .unwrap();
    let device = &document["signed_device_list"]["device_list"]["devices"][0];
    (
        device["device_id"].as_str().unwrap().to_string(),
        BoxPublicKey::parse(device["box_key"].as_str().unwrap()).unwrap(),
    )
}

/// Has `sender` sign a message to `to` and seal it to one device of
/// `recipient` (whatever `to` says); returns the message id.
pub async fn send_sealed(
    app: &TestApp,
    sender: &TestUser,
    to: &[&str],
    content_type: &str,
    content: &[u8],
    recipient: &str,
    device: &(String, BoxPublicKey),
) -> String {
    let keys = &sender.device(0).keys;
    let plaintext = Plaintext {
        from: format!("{}@{}", sender.alias, app.server_name),
        from_device: keys.device_id.clone(),
        to: to.iter().map(|a| a.to_string()).collect(),
        sent_at: homing::time::now_ms(),
        thread: None,
        content_type: content_type.to_string(),
        content: content.to_vec(),
    };
    let sealed = envelope::seal(&plaintext, &keys.signing, &[device.1]).unwrap();
    let id = new_message_id();
    let request = json!({
        "message_id": id,
        "body": homing::crypto::b64(&sealed.body),
        "delivery": "all",
        "recipients": [{"address": recipient, "devices": [
            {"device_id": device.0, "key_wrap": homing::crypto::b64(&sealed.wraps[0].1)}
        ]}],
    });
    let response = app
        .post_json("/api/v1/dms/send", &request, Some(&sender.device(0).token))
        .await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    id
}

/// The contents of the messages in `shown` from `from`.
pub fn text_from(shown: &[Value], from: &str) -> Vec<String> {
    shown
        .iter()
        .filter(|m| m["from"] == from)
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .collect()
}

/// How many deliveries `home`'s device has pending on `app`.
pub async fn pending(app: &TestApp, home: &std::path::Path) -> usize {
    let session = homing_client::store::Store::locate(Some(home.to_path_buf()))
        .session()
        .unwrap()
        .expect("a session");
    let page = app.sync(&session.token).await;
    page["items"].as_array().map_or(0, Vec::len)
}

/// Waits until `app` holds `count` deliveries.
async fn wait_deliveries(app: &TestApp, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.count("deliveries") < count {
        assert!(Instant::now() < deadline, "no delivery arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn mail_from_a_server_that_is_down_waits_for_the_next_inbox() {
    let mut a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", a.server_name)).await;
    init(&bob, &format!("bob@{}", b.server_name)).await;
    let bob_address = format!("bob@{}", b.server_name);
    ok(homing(
        &alice,
        &["send", &bob_address, "--text", "while you were out"],
    )
    .await);
    wait_deliveries(&b, 1).await;
    a.stop().await;

    let first = homing(&bob, &["--json", "inbox"]).await;
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(!stderr.contains("dropped"), "{stderr}");
    assert!(stderr.contains("stays on the server"), "{stderr}");
    let shown: Vec<Value> = serde_json::from_str(ok(first).trim()).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
    assert_eq!(b.count("deliveries"), 1, "the delivery was acknowledged");

    a.restart().await;
    let shown = inbox(&bob).await;
    assert_eq!(
        text_from(&shown, &format!("alice@{}", a.server_name)),
        vec!["while you were out"]
    );
    assert_eq!(b.count("deliveries"), 0);
}

#[tokio::test]
async fn mail_under_a_changed_key_is_kept_until_trusted() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_again, bob) = (
        dir.path().join("alice"),
        dir.path().join("alice2"),
        dir.path().join("bob"),
    );
    let alice_address = format!("alice@{}", app.server_name);
    let bob_address = format!("bob@{}", app.server_name);
    init(&alice, &alice_address).await;
    init(&bob, &bob_address).await;
    ok(homing(&bob, &["send", &alice_address, "--text", "hello alice"]).await);
    // Alice's identity is replaced on the server (lost keys, or an attack).
    {
        use diesel::prelude::*;
        use homing::storage::schema::accounts;
        let mut conn = app.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::delete(accounts::table.filter(accounts::alias.eq("alice"))).execute(c)).unwrap();
    }
    init(&alice_again, &alice_address).await;
    ok(homing(
        &alice_again,
        &["send", &bob_address, "--text", "it is me, new keys"],
    )
    .await);

    let first = homing(&bob, &["--json", "inbox"]).await;
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(
        stderr.contains(&format!("homing trust {alice_address}")),
        "{stderr}"
    );
    let shown: Vec<Value> = serde_json::from_str(ok(first).trim()).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
    // Kept on bob's device, so the server may forget it.
    assert_eq!(pending(&app, &bob).await, 0);
    let again: Vec<Value> = inbox(&bob).await;
    assert!(again.is_empty(), "{again:?}");

    ok(homing(&bob, &["trust", &alice_address]).await);
    let shown = inbox(&bob).await;
    assert_eq!(
        text_from(&shown, &alice_address),
        vec!["it is me, new keys"]
    );
    let kept = ok(homing(&bob, &["inbox", "--quarantine"]).await);
    assert!(kept.contains("nothing"), "{kept}");
}

#[tokio::test]
async fn text_with_media_type_parameters_is_shown_as_text() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let bob = dir.path().join("bob");
    let bob_address = format!("bob@{}", app.server_name);
    init(&bob, &bob_address).await;
    let carol = app.register("carol").await;
    let device = bob_device(&app, "bob").await;
    let to = [bob_address.as_str()];
    for content_type in ["text/plain; charset=utf-8", "Text/Plain;Charset=\"UTF-8\""] {
        send_sealed(
            &app,
            &carol,
            &to,
            content_type,
            "grüße".as_bytes(),
            &bob_address,
            &device,
        )
        .await;
    }
    send_sealed(
        &app,
        &carol,
        &to,
        "application/octet-stream",
        b"\x00\x01",
        &bob_address,
        &device,
    )
    .await;
    let shown = inbox(&bob).await;
    let contents = text_from(&shown, &format!("carol@{}", app.server_name));
    assert_eq!(contents, vec!["grüße", "grüße", "AAE"]);
}

#[tokio::test]
async fn listen_leaves_mail_it_cannot_check_and_prints_it_once_it_can() {
    let mut a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", a.server_name)).await;
    init(&bob, &format!("bob@{}", b.server_name)).await;
    let bob_address = format!("bob@{}", b.server_name);
    ok(homing(&alice, &["send", &bob_address, "--text", "listen later"]).await);
    wait_deliveries(&b, 1).await;
    a.stop().await;

    let child = tokio::process::Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(&bob)
        .args(["--insecure-http", "--json", "listen", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Connected to the gateway: the first pass is over. That pass asks b
    // for alice's identity while a is down, and under the whole suite's
    // load (a's old port may even be taken by another test's server by
    // then) the look-up can take a request time-out.
    let deadline = Instant::now() + Duration::from_secs(40);
    while b.state.hub.session_count() == 0 {
        assert!(Instant::now() < deadline, "listen never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.count("deliveries"), 1, "the delivery was acknowledged");
    a.restart().await;
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("listen printed the message once it could check it")
        .unwrap();
    let line: Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap_or(Value::Null);
    assert_eq!(
        line["content"],
        "listen later",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(b.count("deliveries"), 0);
}
