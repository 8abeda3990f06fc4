//! Linking a device (federation-spec/linking.md): only the account the
//! request names may answer it, and the new device checks the account key
//! it is handed against the one published for its address.

use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use homing::crypto::identity::{DeviceCertificate, DeviceId};
use homing::crypto::{b64, BoxPublicKey, PublicKey};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::cli::init;
use crate::helpers::{spawn_app, TestApp, TestUser};
use crate::hostile_server::{Answer, HostileServer};

/// Leaves a link request for `address` as a new device would.
async fn link_request(app: &TestApp, address: &str) -> String {
    let request = json!({
        "type": "homing.link_request.v1",
        "address": address,
        "device_id": "tablet",
        "sign_key": b64(&[7u8; 32]),
        "box_key": b64(&[9u8; 32]),
    });
    let blob = b64(&serde_json::to_vec(&request).unwrap());
    let response = app
        .post_json("/api/v1/links", &json!({ "blob": blob }), None)
        .await;
    assert_eq!(response.status(), 201);
    let link: Value = response.json().await.unwrap();
    link["link_id"].as_str().unwrap().to_string()
}

async fn answer(app: &TestApp, link_id: &str, token: &str) -> u16 {
    app.http
        .put(app.url(&format!("/api/v1/links/{link_id}/response")))
        .bearer_auth(token)
        .json(&json!({ "blob": b64(b"sealed answer") }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn only_a_device_of_the_named_account_answers_a_link() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let link_id = link_request(&app, &format!("alice@{}", app.server_name)).await;
    assert_eq!(answer(&app, &link_id, &mallory.device(0).token).await, 403);
    let link: Value = app
        .get(&format!("/api/v1/links/{link_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(link["response"].is_null(), "{link}");
    assert_eq!(answer(&app, &link_id, &alice.device(0).token).await, 204);
    // A request for an address on another server has no account here.
    let elsewhere = link_request(&app, "alice@elsewhere.example").await;
    assert_eq!(answer(&app, &elsewhere, &alice.device(0).token).await, 403);
}

/// Mallory certifies the new device's keys under her own account.
async fn certify_for(app: &TestApp, mallory: &TestUser, request: &Value) {
    let certificate = DeviceCertificate::new(
        mallory.account.public(),
        DeviceId::parse(request["device_id"].as_str().unwrap()).unwrap(),
        PublicKey::parse(request["sign_key"].as_str().unwrap()).unwrap(),
        BoxPublicKey::parse(request["box_key"].as_str().unwrap()).unwrap(),
        homing::time::now_ms(),
    )
    .sign(&mallory.account.signing)
    .unwrap();
    let mut certificates = mallory.certificates();
    certificates.push(certificate.certificate.clone());
    let list = mallory.account.device_list(2, certificates).unwrap();
    let response = app
        .post_json(
            "/api/v1/devices",
            &json!({ "device_certificate": certificate, "device_list": list }),
            Some(&mallory.device(0).token),
        )
        .await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_new_device_refuses_an_account_key_that_is_not_its_addresses() {
    let app = spawn_app().await;
    let hostile = HostileServer::before(&app);
    let dir = tempfile::tempdir().unwrap();
    let (alice, tablet) = (dir.path().join("alice"), dir.path().join("tablet"));
    let alice_address = format!("alice@{}", app.server_name);
    init(&alice, &alice_address).await;
    let mut new_device = tokio::process::Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(&tablet)
        .args(["--insecure-http", "--json", "--server-url", &hostile.url])
        .args(["link", "new", &alice_address, "--device", "tablet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(new_device.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().expect("a link code");
    let code: Value = serde_json::from_str(line.trim()).unwrap();
    let link_id = code["code"].as_str().unwrap().split('.').next().unwrap();
    let link: Value = app
        .get(&format!("/api/v1/links/{link_id}"))
        .await
        .json()
        .await
        .unwrap();
    let request = URL_SAFE_NO_PAD
        .decode(link["request"].as_str().unwrap())
        .unwrap();
    let request: Value = serde_json::from_slice(&request).unwrap();

    // Mallory makes the device hers and hands over her own account key,
    // through a server that lets her.
    let mallory = app.register("mallory").await;
    certify_for(&app, &mallory, &request).await;
    let box_key = BoxPublicKey::parse(request["box_key"].as_str().unwrap()).unwrap();
    let seed = json!({ "account_seed": b64(&mallory.account.signing.to_bytes()) });
    let sealed = crypto_box::PublicKey::from(box_key.0)
        .seal(&mut rand::rngs::OsRng, &serde_json::to_vec(&seed).unwrap())
        .unwrap();
    let mut answered = link.clone();
    answered["response"] = json!(b64(&sealed));
    hostile.answer(
        &format!("/api/v1/links/{link_id}"),
        Answer::Fixed(200, answered),
    );

    let finished = tokio::time::timeout(Duration::from_secs(20), new_device.wait_with_output())
        .await
        .expect("the new device finished")
        .unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(!finished.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("not the account key of {alice_address}")),
        "{stderr}"
    );
    assert!(!tablet.join("identity.json").exists());
}

#[tokio::test]
async fn an_accounts_own_key_is_pinned_from_the_start() {
    let app = spawn_app().await;
    let hostile = HostileServer::before(&app);
    let dir = tempfile::tempdir().unwrap();
    let (alice, mallory) = (dir.path().join("alice"), dir.path().join("mallory"));
    let alice_address = format!("alice@{}", app.server_name);
    let mallory_address = format!("mallory@{}", app.server_name);
    init(&alice, &alice_address).await;
    init(&mallory, &mallory_address).await;
    // On alice's first send, her server passes mallory's keys off as her
    // own, to be sent copies of what she writes.
    let token = homing_client::store::Store::locate(Some(alice.clone()))
        .session()
        .unwrap()
        .unwrap()
        .token;
    let mut swapped = crate::hostile_server::directory_answer(&app, &token, &mallory_address).await;
    swapped["address"] = json!(alice_address);
    hostile.answer(
        &format!("/api/v1/directory/{alice_address}"),
        Answer::Fixed(200, swapped),
    );
    let refused = crate::cli::homing(
        &alice,
        &[
            "--server-url",
            &hostile.url,
            "send",
            &mallory_address,
            "--text",
            "hi",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("changed"), "{stderr}");
}
