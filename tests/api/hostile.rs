//! Hostile input at the edges and the security checks that go with it:
//! every authenticated endpoint refuses bad tokens, strangers cannot make
//! the server read or hold without bound, and logs carry no secrets.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp};

/// Every endpoint that needs a device token, with a body it would accept.
fn authenticated_endpoints(app: &TestApp) -> Vec<(reqwest::Method, String, Value)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/api/v1/account".into(), Value::Null),
        (Method::GET, "/api/v1/devices".into(), Value::Null),
        (Method::POST, "/api/v1/devices".into(), json!({})),
        (
            Method::POST,
            "/api/v1/devices/first/revoke".into(),
            json!({}),
        ),
        (
            Method::GET,
            format!("/api/v1/directory/alice@{}", app.server_name),
            Value::Null,
        ),
        (
            Method::PUT,
            "/api/v1/account/retention".into(),
            json!({"policy": "purge-on-ack"}),
        ),
        (Method::POST, "/api/v1/dms/send".into(), json!({})),
        (Method::POST, "/api/v1/dms/sync".into(), json!({})),
        (
            Method::POST,
            "/api/v1/dms/ack".into(),
            json!({"message_ids": []}),
        ),
        (
            Method::GET,
            "/api/v1/dms/status/AAAAAAAAAAAAAAAAAAAAAA".into(),
            Value::Null,
        ),
        (Method::GET, "/api/v1/gateway".into(), Value::Null),
        (Method::DELETE, "/api/v1/auth/token".into(), Value::Null),
        (
            Method::PUT,
            "/api/v1/links/AAAAAAAAAAAAAAAAAAAAAA/response".into(),
            json!({"blob": "AA"}),
        ),
    ]
}

async fn call(
    app: &TestApp,
    method: &reqwest::Method,
    path: &str,
    body: &Value,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = app.http.request(method.clone(), app.url(path));
    if !body.is_null() {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn every_authenticated_endpoint_refuses_bad_tokens() {
    let app = spawn_app().await;
    let other = spawn_app().await;
    let alice = app.register("alice").await;
    let foreign = other.register("alice").await;
    // Expired: a valid token whose expiry has passed.
    let expired = app.sign_in(&alice.account, &alice.device(0).keys).await;
    {
        use diesel::prelude::*;
        use homing::storage::schema::auth_tokens;
        let mut conn = app.state.db.get().unwrap();
        let hash = homing::auth::token_hash(&expired);
        homing::with_backend!(&mut *conn, c => diesel::update(auth_tokens::table.find(hash))
            .set(auth_tokens::expires_at.eq(0i64))
            .execute(c))
        .unwrap();
    }
    // Revoked: signed out.
    let revoked = app.sign_in(&alice.account, &alice.device(0).keys).await;
    assert_eq!(app.sign_out(&revoked).await, 204);

    let cases = [
        (None, "missing_token"),
        (Some(expired.as_str()), "invalid_token"),
        (Some(revoked.as_str()), "invalid_token"),
        (Some(foreign.device(0).token.as_str()), "invalid_token"),
        (Some("hmg_not-a-real-token"), "invalid_token"),
    ];
    for (method, path, body) in authenticated_endpoints(&app) {
        for (token, code) in &cases {
            let (status, error) = call(&app, &method, &path, &body, *token).await;
            assert_eq!(
                (status, error.as_str()),
                (401, *code),
                "{method} {path} with {token:?}"
            );
        }
    }
    // The good token still works everywhere it should.
    let (status, _) = call(
        &app,
        &reqwest::Method::GET,
        "/api/v1/account",
        &Value::Null,
        Some(&alice.device(0).token),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oversized_nested_and_malformed_bodies_get_4xx() {
    let app = spawn_app_with(vec![
        ("HOMING__LIMITS__MAX_REQUEST_BYTES", "65536"),
        ("HOMING__LIMITS__MAX_MESSAGE_BYTES", "32768"),
    ])
    .await;
    let alice = app.register("alice").await;
    let token = &alice.device(0).token;
    let post = |body: Vec<u8>| {
        app.http
            .post(app.url("/api/v1/dms/send"))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let huge = post(vec![b' '; 200_000]).await.unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.json::<Value>().await.unwrap()["limit"], 65536);
    let nested = post(format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes())
        .await
        .unwrap();
    assert_eq!(nested.status(), 400);
    let invalid_utf8 = post(b"{\"message_id\": \"\xff\xfe\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(invalid_utf8.status(), 400);
    let wrong_type = app
        .http
        .post(app.url("/api/v1/dms/send"))
        .bearer_auth(token)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 400);
    let too_many_recipients = json!({
        "message_id": "AAAAAAAAAAAAAAAAAAAAAA",
        "body": "AAAA",
        "recipients": (0..101).map(|i| json!({"address": format!("u{i}@x.example"), "devices": [{"device_id": "d", "key_wrap": "AAAA"}]})).collect::<Vec<_>>(),
    });
    let response = app
        .post_json("/api/v1/dms/send", &too_many_recipients, Some(token))
        .await;
    assert_eq!(response.status(), 400);
    // Federation endpoints refuse before reading a large unsigned body.
    let fed = app
        .http
        .put(app.url("/federation/v1/txn/x"))
        .body(vec![b'x'; 9 * 1024 * 1024])
        .send()
        .await;
    if let Ok(response) = fed {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // The server is still fine.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_client_trickling_its_request_is_cut_off() {
    let app = spawn_app_with(vec![("HOMING__SERVER__CLIENT_TIMEOUT", "300ms")]).await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /api/v1/auth/challenge HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..50 {
        // One header byte every 100 ms: never finishing the head.
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => {
                let text = String::from_utf8_lossy(&buffer[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "a trickling client was kept for {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// Collects everything the global subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn message_bodies_tokens_and_keys_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test installs the log subscriber (run it without TEST_LOG)");
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let message = message_to(
        &app,
        &[(&bob, &[0])],
        b"a very recognisable body 7c1f",
        "all",
    );
    app.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    app.sync(&bob.device(0).token).await;
    // A refused sign-in is logged; what it carried must not be.
    let nonce = app.challenge().await;
    let body = bob
        .device(0)
        .keys
        .token_request("wrong.example", &nonce, &bob.account.public())
        .unwrap();
    assert_eq!(
        app.post_json("/api/v1/auth/token", &body, None)
            .await
            .status(),
        401
    );
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("sign-in refused"),
        "trace logging captured nothing useful"
    );
    let secrets = [
        alice.device(0).token.clone(),
        bob.device(0).token.clone(),
        message["body"].as_str().unwrap().to_string(),
        message["recipients"][0]["devices"][0]["key_wrap"]
            .as_str()
            .unwrap()
            .to_string(),
        body["signature"].as_str().unwrap().to_string(),
        nonce,
        "a very recognisable body".to_string(),
    ];
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "the logs contain a secret: {secret}"
        );
    }
}
