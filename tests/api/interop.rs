//! Homing's request signatures checked by an independent implementation of
//! RFC 9421 (PyPI's `http-message-signatures`, run by
//! `tests/interop/verify_signatures.py`) acting as the receiving peer.
//! Needs a Python with that package and `requests`: `HOMING_INTEROP_PYTHON`
//! names it (default `python3`); without it the tests say so and skip,
//! unless `HOMING_REQUIRE_INTEROP` is set, as CI sets it.

use std::process::Stdio;
use std::time::Duration;

use homing::address::ServerName;
use homing::federation::client::{key_id_for, post_hello, RequestError, Signer};
use homing::federation::resolver::Destination;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{spawn_app, TestApp};

/// The Python that runs the independent implementations.
pub fn python() -> String {
    std::env::var("HOMING_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// True when that Python can import `modules` (comma-separated);
/// otherwise says which PyPI `packages` to install and the test skips,
/// unless `HOMING_REQUIRE_INTEROP` is set, as CI sets it.
pub fn can_import(modules: &str, packages: &str) -> bool {
    let found = std::process::Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("HOMING_REQUIRE_INTEROP").is_none(),
            "HOMING_REQUIRE_INTEROP is set but {} cannot import {modules}",
            python()
        );
        eprintln!(
            "skipped: {} cannot import {modules} (pip install {packages})",
            python()
        );
    }
    found
}

/// True when the RFC 9421 verifier can run.
fn available() -> bool {
    can_import(
        "http_message_signatures, requests",
        "http-message-signatures requests",
    )
}

/// The Python peer on `host:port` (0 for any), trusting `key_of`'s key;
/// the process and the port it listens on.
async fn python_peer(host: &str, port: u16, key_of: &TestApp) -> (Child, u16) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/verify_signatures.py"
    );
    let key = &key_of.state.server_key;
    let mut child = Command::new(python())
        .arg(script)
        .arg(host)
        .arg(port.to_string())
        .arg(key_id_for(&key_of.server_name, key))
        .arg(key.public_key_b64())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the Python peer started")
        .unwrap()
        .expect("the Python peer printed its port");
    (child, line.trim().parse().expect("a port"))
}

/// Says hello from `app` to the peer named `peer`, signed with `app`'s key.
async fn hello(app: &TestApp, peer: &str) -> Result<(), RequestError> {
    let name = ServerName::parse(peer).unwrap();
    let destination = app.state.federation.resolve(&name).await.unwrap();
    hello_at(app, &destination).await
}

async fn hello_at(app: &TestApp, destination: &Destination) -> Result<(), RequestError> {
    let signer = Signer {
        client: &app.state.federation,
        key: &app.state.server_key,
        origin: &app.server_name,
        timeout: Duration::from_secs(10),
    };
    post_hello(&signer, destination).await
}

#[tokio::test]
async fn an_independent_verifier_accepts_homings_signatures() {
    if !available() {
        return;
    }
    let a = spawn_app().await;
    let (_peer, port) = python_peer("127.0.0.1", 0, &a).await;
    hello(&a, &format!("127.0.0.1:{port}")).await.unwrap();

    // The verifier is no rubber stamp: another server's signature fails.
    let other = spawn_app().await;
    let refused = hello(&other, &format!("127.0.0.1:{port}")).await;
    assert!(
        matches!(refused, Err(RequestError::Status { status: 401, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_independent_verifier_agrees_on_the_default_port() {
    if !available() {
        return;
    }
    let a = spawn_app().await;
    // Port 80 is plain HTTP's default: HTTP leaves it out of `Host`, and
    // the signed target URI must leave it out too.
    let bind_ok = std::net::TcpListener::bind("127.0.0.6:80").is_ok();
    if !bind_ok {
        eprintln!("skipped: cannot bind 127.0.0.6:80 (needs root)");
        return;
    }
    let (_peer, port) = python_peer("127.0.0.6", 80, &a).await;
    assert_eq!(port, 80);
    hello(&a, "127.0.0.6:80").await.unwrap();
    // A base URL spelled with the default port (as a resolution cached by
    // an older build holds it) is signed and sent without it.
    let spelled = Destination {
        server_name: ServerName::parse("127.0.0.6:80").unwrap(),
        base_url: "HTTP://127.0.0.6:80".into(),
    };
    hello_at(&a, &spelled).await.unwrap();
}
