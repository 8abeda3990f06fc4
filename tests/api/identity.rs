//! Registration, devices, sign-in and public identity documents.

use diesel::prelude::*;
use homing::crypto::identity::SignedDeviceList;
use homing::crypto::PublicKey;
use homing::storage::schema::{accounts, auth_tokens, devices};
use homing::with_backend;
use homing_client::keys::{AccountKeys, DeviceKeys};
use serde_json::{json, Value};

use crate::helpers::{device_id, spawn_app, spawn_app_with, TestApp};

pub(crate) async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

fn count_rows(app: &TestApp) -> (i64, i64) {
    let mut conn = app.state.db.get().unwrap();
    with_backend!(&mut *conn, c => {
        let a: i64 = accounts::table.count().get_result(c).unwrap();
        let d: i64 = devices::table.count().get_result(c).unwrap();
        (a, d)
    })
}

pub(crate) async fn signed_list(app: &TestApp, account: &PublicKey) -> SignedDeviceList {
    let response = app.get(&format!("/api/v1/users/{account}/devices")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let list: SignedDeviceList =
        serde_json::from_value(body["signed_device_list"].clone()).unwrap();
    list.verify(account)
        .expect("the served device list verifies with the account key");
    list
}

#[tokio::test]
async fn register_add_device_revoke_and_sign_in_again() {
    let app = spawn_app().await;
    let mut alice = app.register("Alice").await;
    assert_eq!(alice.alias, "Alice");
    let me: Value = app
        .get_auth("/api/v1/account", &alice.device(0).token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["address"], format!("alice@{}", app.server_name));
    assert_eq!(me["device_id"], "first");

    app.add_device(&mut alice, "second").await;
    let list = signed_list(&app, &alice.account.public()).await;
    assert_eq!(list.device_list.version, 2);
    assert_eq!(list.device_list.devices.len(), 2);

    // The second device revokes the first.
    let remaining = vec![alice.device(1).certificate.clone()];
    let revoke_list = alice.account.device_list(3, remaining).unwrap();
    let response = app
        .post_json(
            "/api/v1/devices/first/revoke",
            &json!({ "device_list": revoke_list }),
            Some(&alice.device(1).token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let list = signed_list(&app, &alice.account.public()).await;
    assert_eq!(list.device_list.version, 3);
    assert_eq!(list.device_list.devices.len(), 1);

    // The revoked device's token died with it; it cannot sign in again.
    let (status, code) = error_code(
        app.get_auth("/api/v1/account", &alice.device(0).token)
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    let nonce = app.challenge().await;
    let body = alice
        .device(0)
        .keys
        .token_request(&app.server_name, &nonce, &alice.account.public())
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/auth/token", &body, None).await).await;
    assert_eq!((status, code.as_str()), (401, "unknown_device"));

    // The remaining device signs in afresh.
    let token = app.sign_in(&alice.account, &alice.device(1).keys).await;
    let devices: Value = app
        .get_auth("/api/v1/devices", &token)
        .await
        .json()
        .await
        .unwrap();
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert!(devices[0]["revoked_at"].is_i64());
    assert!(devices[1]["revoked_at"].is_null());
}

#[tokio::test]
async fn re_registering_the_same_key_and_alias_is_idempotent() {
    let app = spawn_app().await;
    let account = AccountKeys::generate();
    let device = DeviceKeys::generate(device_id("d"));
    let body = account
        .registration("bob", &app.server_name, &device, None)
        .unwrap();
    assert_eq!(
        app.post_json("/api/v1/accounts", &body, None)
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post_json("/api/v1/accounts", &body, None)
            .await
            .status(),
        200
    );
    assert_eq!(count_rows(&app), (1, 1));

    // Another key for the same alias, or another alias for the same key.
    let thief = AccountKeys::generate();
    let other_device = DeviceKeys::generate(device_id("d"));
    let body = thief
        .registration("bob", &app.server_name, &other_device, None)
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/accounts", &body, None).await).await;
    assert_eq!((status, code.as_str()), (409, "alias_taken"));
    let body = account
        .registration(
            "robert",
            &app.server_name,
            &DeviceKeys::generate(device_id("e")),
            None,
        )
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/accounts", &body, None).await).await;
    assert_eq!((status, code.as_str()), (409, "account_exists"));
    assert_eq!(count_rows(&app), (1, 1));
}

#[tokio::test]
async fn bad_registrations_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let account = AccountKeys::generate();
    let device = DeviceKeys::generate(device_id("d"));
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            account
                .registration("admin", &app.server_name, &device, None)
                .unwrap(),
            400,
            "alias_reserved",
        ),
        (
            account
                .registration("bad alias", &app.server_name, &device, None)
                .unwrap(),
            400,
            "invalid_alias",
        ),
        (
            {
                let mut body = account
                    .registration("carol", "other.example", &device, None)
                    .unwrap();
                body["alias"] = json!("carol");
                body
            },
            400,
            "bad_signature",
        ),
        (
            {
                // A device certificate signed by some other key.
                let mut body = account
                    .registration("carol", &app.server_name, &device, None)
                    .unwrap();
                let forger = AccountKeys::generate();
                let forged = forger.certify(&device, 1).unwrap();
                body["device_certificate"]["signature"] = json!(forged.signature);
                body
            },
            400,
            "bad_signature",
        ),
        (
            {
                let mut body = account
                    .registration("carol", &app.server_name, &device, None)
                    .unwrap();
                body["device_list"]["device_list"]["version"] = json!(7);
                body
            },
            400,
            "bad_signature",
        ),
    ];
    for (body, status, code) in cases {
        let got = error_code(app.post_json("/api/v1/accounts", &body, None).await).await;
        assert_eq!(got, (status, code.to_string()), "{body}");
    }
    let garbage = app
        .post_json("/api/v1/accounts", &json!({"alias": 5}), None)
        .await;
    assert_eq!(error_code(garbage).await, (400, "bad_json".to_string()));
    assert_eq!(count_rows(&app), (0, 0));
}

#[tokio::test]
async fn closed_servers_refuse_every_registration() {
    let app = spawn_app_with(vec![("HOMING__REGISTRATION__POLICY", "closed")]).await;
    let account = AccountKeys::generate();
    let body = account
        .registration(
            "dave",
            &app.server_name,
            &DeviceKeys::generate(device_id("d")),
            None,
        )
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/accounts", &body, None).await).await;
    assert_eq!((status, code.as_str()), (403, "registration_closed"));
    assert_eq!(count_rows(&app), (0, 0));
}

#[tokio::test]
async fn invite_policy_needs_a_valid_unused_invite() {
    let app = spawn_app_with(vec![("HOMING__REGISTRATION__POLICY", "invite")]).await;
    let code = {
        let mut conn = app.state.db.get().unwrap();
        homing::admin::invites::create(&mut conn, 1, None)
            .unwrap()
            .code
    };
    let register = |alias: &str, invite: Option<&str>| {
        AccountKeys::generate()
            .registration(
                alias,
                &app.server_name,
                &DeviceKeys::generate(device_id("d")),
                invite,
            )
            .unwrap()
    };
    let (status, err) = error_code(
        app.post_json("/api/v1/accounts", &register("erin", None), None)
            .await,
    )
    .await;
    assert_eq!((status, err.as_str()), (403, "invite_required"));
    let (status, err) = error_code(
        app.post_json("/api/v1/accounts", &register("erin", Some("nope")), None)
            .await,
    )
    .await;
    assert_eq!((status, err.as_str()), (403, "invite_invalid"));
    assert_eq!(count_rows(&app), (0, 0));
    let response = app
        .post_json("/api/v1/accounts", &register("erin", Some(&code)), None)
        .await;
    assert_eq!(response.status(), 201);
    // Used up.
    let (status, err) = error_code(
        app.post_json("/api/v1/accounts", &register("frank", Some(&code)), None)
            .await,
    )
    .await;
    assert_eq!((status, err.as_str()), (403, "invite_invalid"));
    assert_eq!(count_rows(&app), (1, 1));
}

#[tokio::test]
async fn challenges_are_single_use_and_bound_to_this_server() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let device = &alice.device(0).keys;
    let key = alice.account.public();

    // A signature made for another server name.
    let nonce = app.challenge().await;
    let body = device
        .token_request("elsewhere.example", &nonce, &key)
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/auth/token", &body, None).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
    // The failed attempt spent the challenge: the right signature is too late.
    let body = device
        .token_request(&app.server_name, &nonce, &key)
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/auth/token", &body, None).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_challenge"));

    // A good signature works once; replaying it fails.
    let nonce = app.challenge().await;
    let body = device
        .token_request(&app.server_name, &nonce, &key)
        .unwrap();
    assert_eq!(
        app.post_json("/api/v1/auth/token", &body, None)
            .await
            .status(),
        200
    );
    let (status, code) = error_code(app.post_json("/api/v1/auth/token", &body, None).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_challenge"));

    // Signed by a key that is not the device's.
    let nonce = app.challenge().await;
    let impostor = DeviceKeys::generate(device.device_id.clone());
    let body = impostor
        .token_request(&app.server_name, &nonce, &key)
        .unwrap();
    let (status, code) = error_code(app.post_json("/api/v1/auth/token", &body, None).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
}

#[tokio::test]
async fn expired_revoked_and_missing_tokens_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let token = alice.device(0).token.clone();
    assert_eq!(app.get_auth("/api/v1/account", &token).await.status(), 200);

    let (status, code) = error_code(app.get("/api/v1/account").await).await;
    assert_eq!((status, code.as_str()), (401, "missing_token"));
    let (status, code) = error_code(app.get_auth("/api/v1/account", "hmg_made-up").await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));

    // Sign-out revokes the token.
    assert_eq!(app.sign_out(&token).await, 204);
    let (status, code) = error_code(app.get_auth("/api/v1/account", &token).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));

    // An expired token.
    let token = app.sign_in(&alice.account, &alice.device(0).keys).await;
    {
        let mut conn = app.state.db.get().unwrap();
        let hash = homing::auth::token_hash(&token);
        with_backend!(&mut *conn, c => diesel::update(auth_tokens::table.find(hash))
            .set(auth_tokens::expires_at.eq(homing::time::now_ms() - 1))
            .execute(c))
        .unwrap();
    }
    let (status, code) = error_code(app.get_auth("/api/v1/account", &token).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
}

#[tokio::test]
async fn identity_and_webfinger_documents_verify() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let doc: Value = app
        .get("/.well-known/homing/identity/alice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["address"], format!("alice@{}", app.server_name));
    let key = PublicKey::parse(doc["account_key"].as_str().unwrap()).unwrap();
    assert_eq!(key, alice.account.public());
    let list: SignedDeviceList = serde_json::from_value(doc["signed_device_list"].clone()).unwrap();
    list.verify(&key).unwrap();

    let resource = format!("acct:alice@{}", app.server_name);
    let response = app
        .http
        .get(app.url("/.well-known/webfinger"))
        .query(&[("resource", &resource)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/jrd+json");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let jrd: Value = response.json().await.unwrap();
    assert_eq!(jrd["subject"], resource);
    assert_eq!(jrd["properties"]["urn:homing:account_key"], key.to_string());
    assert!(jrd["links"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with("/.well-known/homing/identity/alice"));

    let directory: Value = app
        .get_auth(
            &format!("/api/v1/directory/alice@{}", app.server_name),
            &alice.device(0).token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(directory["account_key"], key.to_string());

    assert_eq!(
        app.get("/.well-known/homing/identity/nobody")
            .await
            .status(),
        404
    );
    let unknown = format!("acct:nobody@{}", app.server_name);
    let response = app
        .http
        .get(app.url("/.well-known/webfinger"))
        .query(&[("resource", &unknown)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    for bad in ["alice", "mailto:alice@x", "acct:not an address"] {
        let response = app
            .http
            .get(app.url("/.well-known/webfinger"))
            .query(&[("resource", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn registration_and_sign_in_are_rate_limited_per_address() {
    let app = spawn_app_with(vec![
        ("HOMING__SERVER__TRUST_FORWARDED_FOR", "true"),
        ("HOMING__RATE_LIMITS__REGISTRATION_PER_IP", "2/h"),
        ("HOMING__RATE_LIMITS__AUTH_PER_IP", "3/h"),
    ])
    .await;
    let attempt = |ip: &'static str| {
        let body = AccountKeys::generate()
            .registration(
                &format!("u{}", rand::random::<u32>()),
                &app.server_name,
                &DeviceKeys::generate(device_id("d")),
                None,
            )
            .unwrap();
        app.http
            .post(app.url("/api/v1/accounts"))
            .header("X-Forwarded-For", ip)
            .json(&body)
            .send()
    };
    assert_eq!(attempt("10.0.0.1").await.unwrap().status(), 201);
    assert_eq!(attempt("10.0.0.1").await.unwrap().status(), 201);
    let limited = attempt("10.0.0.1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_code(limited).await.1, "rate_limited");
    assert_eq!(attempt("10.0.0.2").await.unwrap().status(), 201);

    let challenge = || {
        app.http
            .post(app.url("/api/v1/auth/challenge"))
            .header("X-Forwarded-For", "10.0.0.3")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(challenge().await.unwrap().status(), 200);
    }
    assert_eq!(challenge().await.unwrap().status(), 429);
}

#[tokio::test]
async fn admin_invite_commands_work_against_the_database() {
    let app = spawn_app_with(vec![("HOMING__REGISTRATION__POLICY", "invite")]).await;
    let homingd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_homingd"))
            .env("HOMING__DATABASE__URL", &app.database.url)
            .args(args)
            .output()
            .expect("homingd runs")
    };
    let created = homingd(&[
        "admin",
        "--json",
        "invite",
        "create",
        "--uses",
        "2",
        "--expires",
        "7d",
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let invite: Value = serde_json::from_slice(&created.stdout).unwrap();
    let code = invite["code"].as_str().unwrap();
    let id = invite["invite_id"].as_str().unwrap();

    let listed = homingd(&["admin", "--json", "invite", "list"]);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["invite_id"], id);
    assert_eq!(list[0]["max_uses"], 2);
    assert!(list[0].get("code").is_none(), "codes are never listed");
    let human = homingd(&["admin", "invite", "list"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(id));

    let body = AccountKeys::generate()
        .registration(
            "gina",
            &app.server_name,
            &DeviceKeys::generate(device_id("d")),
            Some(code),
        )
        .unwrap();
    assert_eq!(
        app.post_json("/api/v1/accounts", &body, None)
            .await
            .status(),
        201
    );

    let revoked = homingd(&["admin", "invite", "revoke", id]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let body = AccountKeys::generate()
        .registration(
            "hank",
            &app.server_name,
            &DeviceKeys::generate(device_id("d")),
            Some(code),
        )
        .unwrap();
    assert_eq!(
        error_code(app.post_json("/api/v1/accounts", &body, None).await)
            .await
            .1,
        "invite_invalid"
    );
    let again = homingd(&["admin", "invite", "revoke", id]);
    assert!(!again.status.success());
}
