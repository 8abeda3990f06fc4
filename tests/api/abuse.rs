//! A stranger cannot lock anyone out, fill a disk or a mailbox, or hold
//! the server's resources: each attack runs against a real daemon while an
//! honest user's requests still succeed.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use homing_client::keys::{AccountKeys, DeviceKeys};

use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp};

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8
/// address reaches a server on 127.0.0.1), so one test can be several
/// clients to the per-address limits.
fn client_from(ip: &str) -> reqwest::Client {
    let ip: IpAddr = ip.parse().unwrap();
    reqwest::Client::builder()
        .local_address(ip)
        .build()
        .unwrap()
}

async fn post(client: &reqwest::Client, app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = client.post(app.url(path)).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn junk_sign_ins_naming_an_account_do_not_lock_its_owner_out() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let attacker = client_from("127.0.0.2");
    let honest = client_from("127.0.0.3");
    let junk = |n: u8| {
        let mut body = alice
            .device(0)
            .keys
            .token_request(&app.server_name, "AAAA", &alice.account.public())
            .unwrap();
        body["nonce"] = json!(homing::crypto::b64(&[n; 32]));
        body
    };
    // More junk than the account's limit (60/m) and than the address's
    // (120/m): the attacker's own address is what runs out.
    let mut refused = 0;
    for n in 0..130u8 {
        let (status, body) = post(&attacker, &app, "/api/v1/auth/token", &junk(n)).await;
        match status {
            401 => {}
            429 => {
                assert_eq!(body["error"], "rate_limited");
                refused += 1;
            }
            other => panic!("junk sign-in answered {other}: {body}"),
        }
    }
    assert!(refused >= 10, "the attacker's address was never limited");

    // Alice, from elsewhere, signs in as usual.
    let (status, challenge) = post(&honest, &app, "/api/v1/auth/challenge", &json!({})).await;
    assert_eq!(status, 200);
    let body = alice
        .device(0)
        .keys
        .token_request(
            &app.server_name,
            challenge["nonce"].as_str().unwrap(),
            &alice.account.public(),
        )
        .unwrap();
    let (status, grant) = post(&honest, &app, "/api/v1/auth/token", &body).await;
    assert_eq!(status, 200, "{grant}");
}

#[tokio::test]
async fn verified_sign_ins_still_count_against_the_account() {
    let app = spawn_app_with(vec![("HOMING__RATE_LIMITS__AUTH_PER_ACCOUNT", "3/h")]).await;
    // Registration signs in once.
    let alice = app.register("alice").await;
    for _ in 0..2 {
        app.sign_in(&alice.account, &alice.device(0).keys).await;
    }
    let nonce = app.challenge().await;
    let body = alice
        .device(0)
        .keys
        .token_request(&app.server_name, &nonce, &alice.account.public())
        .unwrap();
    let response = app.post_json("/api/v1/auth/token", &body, None).await;
    assert_eq!(response.status(), 429);
}

#[tokio::test]
async fn the_database_and_its_directory_are_private_under_umask_022() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = crate::daemon::free_port();
    // The daemon as a service manager with the common umask starts it.
    let child = std::process::Command::new("sh")
        .args([
            "-c",
            "umask 022 && exec \"$0\"",
            env!("CARGO_BIN_EXE_homingd"),
        ])
        .env_clear()
        .env("HOMING__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("HOMING__SERVER__DATA_DIR", state.display().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let daemon = crate::daemon::Daemon {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    crate::daemon::wait_ready(&daemon).await;
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(state.clone()), 0o700, "data directory");
    for file in ["homing.db", "homing.db-wal", "homing.db-shm"] {
        assert_eq!(mode(state.join(file)), 0o600, "{file}");
    }
    drop(daemon);
}

#[tokio::test]
async fn aliases_that_are_not_one_path_segment_are_refused() {
    let app = spawn_app_with(vec![("HOMING__RATE_LIMITS__REGISTRATION_PER_IP", "100/m")]).await;
    for alias in [".", "..", "-", "_", "a..b", ".bob", "bob-"] {
        let account = AccountKeys::generate();
        let keys = DeviceKeys::generate(crate::helpers::device_id("first"));
        let body = account
            .registration(alias, &app.server_name, &keys, None)
            .unwrap();
        let response = app.post_json("/api/v1/accounts", &body, None).await;
        assert_eq!(response.status(), 400, "alias {alias:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_alias");
    }
    // Every alias that registers can be fetched.
    let user = app.register("b.o-b_9").await;
    let response = app
        .get(&format!("/.well-known/homing/identity/{}", user.alias))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn mail_to_this_servers_other_names_is_delivered_here() {
    let app = spawn_app_with(vec![("HOMING__SERVER__PUBLIC_HOSTS", "chat.example.org")]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let (host, port) = app.server_name.rsplit_once(':').unwrap();
    for server in [format!("{host}.:{port}"), "chat.example.org".to_string()] {
        let mut message = message_to(&app, &[(&bob, &[0])], b"hello", "all");
        message["recipients"][0]["address"] = json!(format!("bob@{server}"));
        let response = app
            .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await;
        assert_eq!(response.status(), 202, "bob@{server}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["recipients"][0]["status"], "stored",
            "bob@{server}: {answer}"
        );
    }
    assert_eq!(
        app.sync(&bob.device(0).token).await["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(app.count("outbox"), 0);
}

/// Sends `head` on a fresh connection, then `trickle` one byte at a time
/// every 100 ms; returns what the server answered and how long the
/// connection lasted, or `None` if it was still open after 8 s.
async fn hold_body(app: &TestApp, head: &str, trickle: usize) -> Option<(String, Duration)> {
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(8) {
        if sent < trickle && stream.write_all(b" ").await.is_ok() {
            sent += 1;
        }
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((
                    String::from_utf8_lossy(&answer).into_owned(),
                    started.elapsed(),
                ))
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn a_client_that_never_sends_its_body_is_cut_off() {
    let app = spawn_app_with(vec![("HOMING__SERVER__BODY_TIMEOUT", "1s")]).await;
    let heads = [
        // Announces a large body, then sends nothing.
        ("silent", "POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", 0),
        // Sends it one byte at a time.
        ("trickle", "POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", 1000),
        // The same through the upgrade path, which reads the socket itself.
        ("upgrade", "POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", 0),
        // Answered without reading the body: the rest is not waited for.
        ("unread", "POST /api/v1/auth/challenge HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 0),
    ];
    let attacks = heads.map(|(name, head, trickle)| {
        let app = &app;
        async move { (name, hold_body(app, head, trickle).await) }
    });
    let attacks = futures_util::future::join_all(attacks);
    // An honest user registers while the connections are held.
    let (results, bob) = tokio::join!(attacks, app.register("bob"));
    assert_eq!(bob.alias, "bob");
    for (name, result) in results {
        let (answer, lasted) =
            result.unwrap_or_else(|| panic!("{name}: the connection was held for 8 s"));
        assert!(
            lasted < Duration::from_secs(4),
            "{name}: held for {lasted:?}"
        );
        if name == "unread" {
            assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer}");
            continue;
        }
        assert!(answer.starts_with("HTTP/1.1 408"), "{name}: {answer}");
        assert!(answer.contains("request_timeout"), "{name}: {answer}");
    }
}
