//! The `homing` binary against real daemons: people's end-to-end path.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

/// Runs the CLI without blocking the runtime the test servers run on.
pub async fn homing_with(home: &Path, args: &[&str], passphrase: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(crate::helpers::homing_binary());
    command
        .arg("--home")
        .arg(home)
        .arg("--insecure-http")
        .args(args);
    match passphrase {
        Some(passphrase) => command.env("HOMING_PASSPHRASE", passphrase),
        None => command.env_remove("HOMING_PASSPHRASE"),
    };
    command.output().await.expect("homing runs")
}

pub async fn homing(home: &Path, args: &[&str]) -> Output {
    homing_with(home, args, None).await
}

pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "homing failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub async fn init(home: &Path, address: &str) {
    ok(homing(home, &["init", address]).await);
}

pub async fn inbox(home: &Path) -> Vec<Value> {
    let out = ok(homing(home, &["--json", "inbox"]).await);
    serde_json::from_str(out.trim()).expect("inbox JSON")
}

/// Waits until `home`'s inbox holds `count` messages.
pub async fn wait_inbox(home: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let messages = inbox(home).await;
        if messages.len() >= count {
            return messages;
        }
        assert!(Instant::now() < deadline, "inbox has {messages:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_users_on_one_server_talk_both_ways() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&bob, &format!("bob@{}", app.server_name)).await;
    let id = ok(homing(
        &alice,
        &[
            "send",
            &format!("bob@{}", app.server_name),
            "--text",
            "hello bob, the secret is swordfish",
        ],
    )
    .await);
    assert!(!id.trim().is_empty());
    let messages = inbox(&bob).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["from"], format!("alice@{}", app.server_name));
    assert_eq!(messages[0]["content"], "hello bob, the secret is swordfish");
    ok(homing(
        &bob,
        &[
            "send",
            &format!("alice@{}", app.server_name),
            "--text",
            "hi alice",
        ],
    )
    .await);
    assert_eq!(inbox(&alice).await[0]["content"], "hi alice");
    let status = ok(homing(&alice, &["--json", "status", id.trim()]).await);
    assert!(status.contains("delivered"), "{status}");
    assert_no_plaintext(&app, b"swordfish").await;
}

#[tokio::test]
async fn users_on_two_federated_servers_talk_both_ways() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", a.server_name)).await;
    init(&bob, &format!("bob@{}", b.server_name)).await;
    ok(homing(
        &alice,
        &[
            "send",
            &format!("bob@{}", b.server_name),
            "--text",
            "across servers: marmalade",
        ],
    )
    .await);
    let got = wait_inbox(&bob, 1).await;
    assert_eq!(got[0]["content"], "across servers: marmalade");
    ok(homing(
        &bob,
        &[
            "send",
            &format!("alice@{}", a.server_name),
            "--text",
            "and back: quince",
        ],
    )
    .await);
    let got = wait_inbox(&alice, 1).await;
    assert_eq!(got[0]["content"], "and back: quince");
    for app in [&a, &b] {
        assert_no_plaintext(app, b"marmalade").await;
        assert_no_plaintext(app, b"quince").await;
    }
}

#[tokio::test]
async fn a_closed_output_pipe_ends_the_cli_quietly_and_loses_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&bob, &format!("bob@{}", app.server_name)).await;
    let bob_address = format!("bob@{}", app.server_name);
    ok(homing(&alice, &["send", &bob_address, "--text", "read me later"]).await);

    // `homing inbox | head -0`: standard output is a pipe nobody reads.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = tokio::process::Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(&bob)
        .arg("--insecure-http")
        .arg("inbox")
        .env_remove("HOMING_PASSPHRASE")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        // Not `output()`: it would replace standard output with its own pipe.
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let messages = inbox(&bob).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "read me later");
}

#[tokio::test]
async fn listen_prints_a_message_within_a_second() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&bob, &format!("bob@{}", app.server_name)).await;
    let child = Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(&bob)
        .args(["--insecure-http", "--json", "listen", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.hub.session_count() == 0 {
        assert!(Instant::now() < deadline, "listen never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok(homing(
        &alice,
        &[
            "send",
            &format!("bob@{}", app.server_name),
            "--text",
            "live",
        ],
    )
    .await);
    // Timed from when the send command returned: the server had accepted it.
    let sent = Instant::now();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let elapsed = sent.elapsed();
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(line["content"], "live");
    assert!(
        elapsed < Duration::from_secs(1),
        "listen printed {elapsed:?} after the send"
    );
}

#[tokio::test]
async fn a_linked_device_receives_and_the_senders_other_devices_see_sent_mail() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice2, bob) = (
        dir.path().join("alice"),
        dir.path().join("alice2"),
        dir.path().join("bob"),
    );
    let alice_address = format!("alice@{}", app.server_name);
    init(&alice, &alice_address).await;
    init(&bob, &format!("bob@{}", app.server_name)).await;
    use tokio::io::AsyncBufReadExt;
    let mut new_device = tokio::process::Command::new(crate::helpers::homing_binary())
        .arg("--home")
        .arg(&alice2)
        .args([
            "--insecure-http",
            "--json",
            "link",
            "new",
            &alice_address,
            "--device",
            "tablet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(new_device.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("the new device prints its code");
    let code: Value = serde_json::from_str(line.trim()).unwrap();
    ok(homing(&alice, &["link", "accept", code["code"].as_str().unwrap()]).await);
    let rest = lines.next_line().await.unwrap().unwrap_or_default();
    let finished = new_device.wait_with_output().await.unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert!(rest.contains("tablet"), "{rest}");

    ok(homing(
        &bob,
        &[
            "send",
            &alice_address,
            "--text",
            "to both of alice's devices",
        ],
    )
    .await);
    assert_eq!(
        inbox(&alice2).await[0]["content"],
        "to both of alice's devices"
    );
    assert_eq!(
        inbox(&alice).await[0]["content"],
        "to both of alice's devices"
    );
    // What alice sends from the first device shows up on the tablet.
    ok(homing(
        &alice,
        &[
            "send",
            &format!("bob@{}", app.server_name),
            "--text",
            "sent from the laptop",
        ],
    )
    .await);
    let tablet = inbox(&alice2).await;
    assert!(
        tablet
            .iter()
            .any(|m| m["content"] == "sent from the laptop"),
        "{tablet:?}"
    );
    let devices = ok(homing(&alice2, &["--json", "devices", "list"]).await);
    assert!(devices.contains("tablet"));
}

#[tokio::test]
async fn a_changed_account_key_makes_send_refuse_until_trusted() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, bob_again) = (
        dir.path().join("alice"),
        dir.path().join("bob"),
        dir.path().join("bob2"),
    );
    let bob_address = format!("bob@{}", app.server_name);
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&bob, &bob_address).await;
    ok(homing(&alice, &["send", &bob_address, "--text", "first contact"]).await);
    // Bob's identity is replaced on the server (lost keys, or an attack).
    {
        use diesel::prelude::*;
        use homing::storage::schema::accounts;
        let mut conn = app.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::delete(accounts::table.filter(accounts::alias.eq("bob"))).execute(c)).unwrap();
    }
    init(&bob_again, &bob_address).await;
    let refused = homing(
        &alice,
        &["send", &bob_address, "--text", "are you still you?"],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains("changed"),
        "{stderr}"
    );
    ok(homing(&alice, &["trust", &bob_address]).await);
    ok(homing(&alice, &["send", &bob_address, "--text", "ok, trusted"]).await);
    assert_eq!(inbox(&bob_again).await[0]["content"], "ok, trusted");
}

#[tokio::test]
async fn keys_export_and_import_round_trip() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    init(&alice, &format!("alice@{}", app.server_name)).await;
    let export = homing_with(&alice, &["keys", "export"], Some("correct horse battery")).await;
    let backup = ok(export);
    assert!(backup.contains("homing.key_backup.v1"));
    let file = dir.path().join("backup.json");
    std::fs::write(&file, &backup).unwrap();
    let file = file.to_str().unwrap();
    let wrong = homing_with(&alice, &["keys", "import", file], Some("wrong passphrase")).await;
    assert!(!wrong.status.success());
    let right = homing_with(
        &alice,
        &["keys", "import", file],
        Some("correct horse battery"),
    )
    .await;
    ok(right);
}

#[tokio::test]
async fn clear_errors_for_people() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    let not_yet = homing(&alice, &["inbox"]).await;
    assert!(!not_yet.status.success());
    assert!(String::from_utf8_lossy(&not_yet.stderr).contains("homing init"));
    init(&alice, &format!("alice@{}", app.server_name)).await;
    let unknown = homing(
        &alice,
        &[
            "send",
            &format!("nobody@{}", app.server_name),
            "--text",
            "x",
        ],
    )
    .await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_identity"));
    let unreachable = homing(&alice, &["server-info", "127.0.0.1:9"]).await;
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
    let info = ok(homing(&alice, &["server-info", &app.server_name]).await);
    assert!(info.contains("registration"));
    // A base64url id may begin with '-': it is still the id, not an option.
    let dashed = homing(&alice, &["status", "-AAAAAAAAAAAAAAAAAAAAAAA"]).await;
    assert!(!dashed.status.success());
    let stderr = String::from_utf8_lossy(&dashed.stderr);
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert!(stderr.contains("homing: error:"), "{stderr}");
}

/// No stored byte of the server's database contains `needle`.
async fn assert_no_plaintext(app: &TestApp, needle: &[u8]) {
    if app.database.is_postgres() {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            row: String,
        }
        let mut conn = app.state.db.get().unwrap();
        let homing::storage::DbConnection::Postgres(pg) = &mut *conn else {
            unreachable!()
        };
        #[derive(QueryableByName)]
        struct Table {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let tables: Vec<Table> = diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .load(pg)
        .unwrap();
        let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
        for table in tables {
            let rows: Vec<Row> = diesel::sql_query(format!(
                "SELECT CAST(t AS TEXT) AS row FROM {} t",
                table.name
            ))
            .load(pg)
            .unwrap();
            for row in rows {
                let text = row.row.to_lowercase();
                assert!(!text.contains(&hex), "plaintext (hex) in {}", table.name);
                assert!(
                    !text.contains(&String::from_utf8_lossy(needle).to_lowercase()),
                    "plaintext in {}",
                    table.name
                );
            }
        }
    } else {
        let path = app.database.url.trim_start_matches("sqlite://").to_string();
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "plaintext found in {file}"
                );
            }
        }
    }
}
