//! A remote recipient's devices changed after the sender's server cached
//! their list: the remote answers `stale_devices`, the sender's server
//! shows it (status and `DELIVERY_STATUS`, with `missing`/`extra`) and
//! drops its cached copy, and `homing send` encrypts the message again for
//! the current devices under a new id.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use homing::crypto::envelope;
use homing::crypto::identity::SignedDeviceList;
use serde_json::{json, Value};

use crate::cli::{homing, init, ok};
use crate::federation::{remote_message, wait_for_items};
use crate::gateway::{connect, next_json};
use crate::helpers::{spawn_app, TestApp, TestDevice};

/// How many devices `app`'s directory serves for `address`.
async fn directory_devices(app: &TestApp, token: &str, address: &str) -> usize {
    let response = app
        .get_auth(&format!("/api/v1/directory/{address}"), token)
        .await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    document["signed_device_list"]["device_list"]["devices"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test]
async fn a_remote_stale_devices_answer_reaches_status_and_gateway_and_ends_the_cache() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let mut bob = b.register("bob").await;
    let token = &alice.device(0).token;
    let bob_address = format!("bob@{}", b.server_name);
    // A caches bob's list of one device.
    assert_eq!(directory_devices(&a, token, &bob_address).await, 1);
    b.add_device(&mut bob, "phone").await;
    assert_eq!(directory_devices(&a, token, &bob_address).await, 1);

    let mut socket = connect(&a, token, "").await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    let message = remote_message(&a, &b, &bob, b"wrapped for the first device only");
    let response = a.post_json("/api/v1/dms/send", &message, Some(token)).await;
    assert_eq!(response.status(), 202);

    let event = loop {
        let frame = next_json(&mut socket, Duration::from_secs(10)).await;
        if frame["type"] == "DELIVERY_STATUS" {
            break frame;
        }
    };
    assert_eq!(event["message_id"], message["message_id"]);
    assert_eq!(event["recipient"], bob_address);
    assert_eq!(event["state"], "stale_devices");
    assert_eq!(event["missing"], json!(["phone"]));
    assert!(event.get("extra").is_none(), "{event}");

    let id = message["message_id"].as_str().unwrap();
    let status: Value = a
        .get_auth(&format!("/api/v1/dms/status/{id}"), token)
        .await
        .json()
        .await
        .unwrap();
    let recipient = &status["recipients"][0];
    assert_eq!(recipient["state"], "stale_devices");
    assert_eq!(recipient["missing"], json!(["phone"]));
    assert!(recipient.get("extra").is_none(), "{status}");
    // The answer ended A's cached copy: the next look-up sees the phone.
    assert_eq!(directory_devices(&a, token, &bob_address).await, 2);
    assert_eq!(b.count("deliveries"), 0);
}

/// The text of `device`'s delivery of `id`, opened and checked against
/// the sending device's key in `sender_list`.
fn open(item: &Value, device: &TestDevice, sender_list: &SignedDeviceList) -> String {
    let decode = |field: &str| {
        URL_SAFE_NO_PAD
            .decode(item[field].as_str().unwrap())
            .unwrap()
    };
    let key = envelope::unwrap_key(&decode("key_wrap"), &device.keys.box_secret).unwrap();
    let signed = envelope::open(&decode("body"), &key).unwrap();
    let (_, from_device) = signed.claimed_sender();
    let sender = sender_list
        .device_list
        .devices
        .iter()
        .find(|d| &d.device_id == from_device)
        .unwrap();
    let plaintext = signed.verify(&sender.sign_key).unwrap();
    String::from_utf8(plaintext.content).unwrap()
}

/// `homing --json status ID` until the state of its first recipient is
/// no longer `queued`.
async fn settled_status(home: &Path, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ok(homing(home, &["--json", "status", id]).await);
        let status: Value = serde_json::from_str(out.trim()).unwrap();
        if status["recipients"][0]["state"] != "queued" {
            return status;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_recipient_who_added_a_device_gets_the_message_sent_again() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    init(&alice, &format!("alice@{}", a.server_name)).await;
    let mut bob = b.register("bob").await;
    let bob_address = format!("bob@{}", b.server_name);
    // Alice looks bob up, so A caches his list of one device; then he
    // adds a phone.
    ok(homing(&alice, &["whois", &bob_address]).await);
    b.add_device(&mut bob, "phone").await;

    let out = ok(homing(
        &alice,
        &[
            "--json",
            "send",
            &bob_address,
            "--text",
            "every device: quince",
        ],
    )
    .await);
    let sent: Value = serde_json::from_str(out.trim()).unwrap();
    let first = sent["message_id"].as_str().unwrap().to_string();
    assert_eq!(sent["recipients"][0]["status"], "queued");

    // B refused the first id for the phone's missing key wrap.
    let status = settled_status(&alice, &first).await;
    let refused = &status["recipients"][0];
    assert_eq!(refused["recipient"], bob_address);
    assert_eq!(refused["state"], "stale_devices");
    assert_eq!(refused["missing"], json!(["phone"]));

    // `send` sent it again within its wait, for both devices.
    let resent = &sent["resent"][0];
    assert_eq!(resent["address"], bob_address, "{sent}");
    assert_eq!(resent["replaces"], first);
    assert_eq!(resent["missing"], json!(["phone"]));
    let second = resent["message_id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let status = settled_status(&alice, &second).await;
    let state = status["recipients"][0]["state"].as_str().unwrap();
    assert!(matches!(state, "relayed" | "delivered"), "{status}");

    // Bob's new phone, and his first device, have it.
    let identity: Value = a
        .get("/.well-known/homing/identity/alice")
        .await
        .json()
        .await
        .unwrap();
    let alice_list: SignedDeviceList =
        serde_json::from_value(identity["signed_device_list"].clone()).unwrap();
    for device in &bob.devices {
        let page = wait_for_items(&b, &device.token, 1, Duration::from_secs(10)).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{page}");
        assert_eq!(items[0]["message_id"], second.as_str());
        assert_eq!(open(&items[0], device, &alice_list), "every device: quince");
    }
    // Nothing is left waiting on alice's device.
    let kept: Value =
        serde_json::from_slice(&std::fs::read(alice.join("outgoing.json")).unwrap()).unwrap();
    assert_eq!(kept, json!([]));
}

#[tokio::test]
async fn an_answer_that_comes_after_send_stopped_waiting_is_followed_up_by_inbox() {
    let a = spawn_app().await;
    let mut b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    init(&alice, &format!("alice@{}", a.server_name)).await;
    let mut bob = b.register("bob").await;
    let bob_address = format!("bob@{}", b.server_name);
    ok(homing(&alice, &["whois", &bob_address]).await);
    b.add_device(&mut bob, "phone").await;

    // B is away for the whole of `send`'s wait: nothing is answered yet.
    b.stop().await;
    let out = ok(homing(
        &alice,
        &["--json", "send", &bob_address, "--text", "later: medlar"],
    )
    .await);
    let sent: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(sent.get("resent").is_none(), "{sent}");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(alice.join("outgoing.json")).unwrap()).unwrap();
    assert_eq!(kept[0]["message_id"], sent["message_id"]);
    assert_eq!(kept[0]["waiting"][&bob_address], json!(["first"]));

    // B is back; A's relay retries on its own. `homing inbox` notices the
    // refusal and sends again, and bob's phone gets it.
    b.restart().await;
    let phone = &bob.devices[1];
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        ok(homing(&alice, &["inbox"]).await);
        let page = b.sync(&phone.token).await;
        if let Some(item) = page["items"].as_array().and_then(|items| items.first()) {
            assert_ne!(item["message_id"], sent["message_id"]);
            break;
        }
        assert!(Instant::now() < deadline, "the phone never got it");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = sent["message_id"].as_str().unwrap();
    let status = settled_status(&alice, first).await;
    assert_eq!(status["recipients"][0]["state"], "stale_devices");
}
