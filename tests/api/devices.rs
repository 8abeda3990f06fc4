//! Managing an account's devices: list versions, ids and who may touch
//! which devices.

use homing_client::keys::DeviceKeys;
use serde_json::{json, Value};

use crate::helpers::{device_id, spawn_app};
use crate::identity::{error_code, signed_list};

#[tokio::test]
async fn device_list_rollbacks_and_mismatches_are_refused() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    app.add_device(&mut alice, "second").await;
    let token = alice.device(0).token.clone();

    // Same version again (a replayed or rolled-back list).
    let third = DeviceKeys::generate(device_id("third"));
    let signed = alice.account.certify(&third, 1).unwrap();
    let mut certs = alice.certificates();
    certs.push(signed.certificate.clone());
    let stale = alice.account.device_list(2, certs.clone()).unwrap();
    let (status, code) = error_code(
        app.post_json(
            "/api/v1/devices",
            &json!({"device_certificate": signed, "device_list": stale}),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "device_list_rollback"));

    // A list that silently drops a device.
    let sneaky = alice
        .account
        .device_list(3, vec![certs[0].clone(), certs[2].clone()])
        .unwrap();
    let (status, code) = error_code(
        app.post_json(
            "/api/v1/devices",
            &json!({"device_certificate": signed, "device_list": sneaky}),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "device_list_mismatch"));
    assert_eq!(
        signed_list(&app, &alice.account.public())
            .await
            .device_list
            .version,
        2
    );
}

#[tokio::test]
async fn one_account_cannot_touch_another_accounts_devices() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let token = &mallory.device(0).token;

    // Revoking alice's device through mallory's account finds nothing.
    let list = mallory
        .account
        .device_list(2, mallory.certificates())
        .unwrap();
    let (status, code) = error_code(
        app.post_json(
            "/api/v1/devices/first/revoke",
            &json!({"device_list": list}),
            Some(token),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{code}");
    // A certificate for alice's account, presented by mallory, is refused.
    let planted = DeviceKeys::generate(device_id("planted"));
    let cert = mallory.account.certify(&planted, 1).unwrap();
    let mut alice_cert = cert.clone();
    alice_cert.certificate.account_key = alice.account.public();
    let list = alice
        .account
        .device_list(
            2,
            vec![
                alice.device(0).certificate.clone(),
                alice_cert.certificate.clone(),
            ],
        )
        .unwrap();
    let (status, code) = error_code(
        app.post_json(
            "/api/v1/devices",
            &json!({"device_certificate": alice_cert, "device_list": list}),
            Some(token),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_document"));
    // Mallory's device listing shows only mallory's devices.
    let devices: Value = app
        .get_auth("/api/v1/devices", token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    let list = signed_list(&app, &alice.account.public()).await;
    assert_eq!(list.device_list.version, 1);
}

#[tokio::test]
async fn a_device_id_is_never_used_twice_even_after_its_revocation() {
    let app = spawn_app().await;
    let mut alice = app.register("alice").await;
    app.add_device(&mut alice, "second").await;
    let remaining = vec![alice.device(1).certificate.clone()];
    let list = alice.account.device_list(3, remaining.clone()).unwrap();
    let response = app
        .post_json(
            "/api/v1/devices/first/revoke",
            &json!({ "device_list": list }),
            Some(&alice.device(1).token),
        )
        .await;
    assert_eq!(response.status(), 200);

    // A new key under the revoked device's id is refused for the id.
    let keys = DeviceKeys::generate(device_id("first"));
    let signed = alice
        .account
        .certify(&keys, homing::time::now_ms())
        .unwrap();
    let mut certificates = remaining;
    certificates.push(signed.certificate.clone());
    let list = alice.account.device_list(4, certificates).unwrap();
    let (status, code) = error_code(
        app.post_json(
            "/api/v1/devices",
            &json!({ "device_certificate": signed, "device_list": list }),
            Some(&alice.device(1).token),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "device_id_used"));
}
