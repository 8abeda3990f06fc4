//! The `homing` binary against real daemons: people's end-to-end path.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

fn homing(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(home)
        .arg("--insecure-http")
        .args(args)
        .env_remove("HOMING_PASSPHRASE")
        .output()
        .expect("homing runs")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "homing failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn init(home: &Path, address: &str) {
    ok(homing(home, &["init", address]));
}

fn inbox(home: &Path) -> Vec<Value> {
    let out = ok(homing(home, &["--json", "inbox"]));
    serde_json::from_str(out.trim()).expect("inbox JSON")
}

/// Waits until `home`'s inbox holds `count` messages.
async fn wait_inbox(home: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let messages = inbox(home);
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
    init(&alice, &format!("alice@{}", app.server_name));
    init(&bob, &format!("bob@{}", app.server_name));
    let id = ok(homing(&alice, &["send", &format!("bob@{}", app.server_name), "--text", "hello bob, the secret is swordfish"]));
    assert!(!id.trim().is_empty());
    let messages = inbox(&bob);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["from"], format!("alice@{}", app.server_name));
    assert_eq!(messages[0]["content"], "hello bob, the secret is swordfish");
    ok(homing(&bob, &["send", &format!("alice@{}", app.server_name), "--text", "hi alice"]));
    assert_eq!(inbox(&alice)[0]["content"], "hi alice");
    let status = ok(homing(&alice, &["--json", "status", id.trim()]));
    assert!(status.contains("delivered"), "{status}");
    assert_no_plaintext(&app, b"swordfish").await;
}

#[tokio::test]
async fn users_on_two_federated_servers_talk_both_ways() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", a.server_name));
    init(&bob, &format!("bob@{}", b.server_name));
    ok(homing(&alice, &["send", &format!("bob@{}", b.server_name), "--text", "across servers: marmalade"]));
    let got = wait_inbox(&bob, 1).await;
    assert_eq!(got[0]["content"], "across servers: marmalade");
    ok(homing(&bob, &["send", &format!("alice@{}", a.server_name), "--text", "and back: quince"]));
    let got = wait_inbox(&alice, 1).await;
    assert_eq!(got[0]["content"], "and back: quince");
    for app in [&a, &b] {
        assert_no_plaintext(app, b"marmalade").await;
        assert_no_plaintext(app, b"quince").await;
    }
}

#[tokio::test]
async fn listen_prints_a_message_within_a_second() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", app.server_name));
    init(&bob, &format!("bob@{}", app.server_name));
    let child = Command::new(env!("CARGO_BIN_EXE_homing"))
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
    let sent = Instant::now();
    ok(homing(&alice, &["send", &format!("bob@{}", app.server_name), "--text", "live"]));
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let elapsed = sent.elapsed();
    let line: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    assert_eq!(line["content"], "live");
    // The send command itself (a process start and a few requests) is part
    // of this time, so the bound is generous but still "within a second".
    assert!(elapsed < Duration::from_secs(2), "listen printed after {elapsed:?}");
}

#[tokio::test]
async fn a_linked_device_receives_and_the_senders_other_devices_see_sent_mail() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice2, bob) = (dir.path().join("alice"), dir.path().join("alice2"), dir.path().join("bob"));
    let alice_address = format!("alice@{}", app.server_name);
    init(&alice, &alice_address);
    init(&bob, &format!("bob@{}", app.server_name));
    let mut new_device = Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(&alice2)
        .args(["--insecure-http", "--json", "link", "new", &alice_address, "--device", "tablet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(new_device.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let code: Value = serde_json::from_str(line.trim()).unwrap();
    ok(homing(&alice, &["link", "accept", code["code"].as_str().unwrap()]));
    let status = tokio::task::spawn_blocking(move || new_device.wait()).await.unwrap().unwrap();
    assert!(status.success());

    ok(homing(&bob, &["send", &alice_address, "--text", "to both of alice's devices"]));
    assert_eq!(inbox(&alice2)[0]["content"], "to both of alice's devices");
    assert_eq!(inbox(&alice)[0]["content"], "to both of alice's devices");
    // What alice sends from the first device shows up on the tablet.
    ok(homing(&alice, &["send", &format!("bob@{}", app.server_name), "--text", "sent from the laptop"]));
    let tablet = inbox(&alice2);
    assert!(tablet.iter().any(|m| m["content"] == "sent from the laptop"), "{tablet:?}");
    let devices = ok(homing(&alice2, &["--json", "devices", "list"]));
    assert!(devices.contains("tablet"));
}

#[tokio::test]
async fn a_changed_account_key_makes_send_refuse_until_trusted() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, bob_again) = (dir.path().join("alice"), dir.path().join("bob"), dir.path().join("bob2"));
    let bob_address = format!("bob@{}", app.server_name);
    init(&alice, &format!("alice@{}", app.server_name));
    init(&bob, &bob_address);
    ok(homing(&alice, &["send", &bob_address, "--text", "first contact"]));
    // Bob's identity is replaced on the server (lost keys, or an attack).
    {
        use diesel::prelude::*;
        use homing::storage::schema::accounts;
        let mut conn = app.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::delete(accounts::table.filter(accounts::alias.eq("bob"))).execute(c)).unwrap();
    }
    init(&bob_again, &bob_address);
    let refused = homing(&alice, &["send", &bob_address, "--text", "are you still you?"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("WARNING") && stderr.contains("changed"), "{stderr}");
    ok(homing(&alice, &["trust", &bob_address]));
    ok(homing(&alice, &["send", &bob_address, "--text", "ok, trusted"]));
    assert_eq!(inbox(&bob_again)[0]["content"], "ok, trusted");
}

#[tokio::test]
async fn keys_export_and_import_round_trip() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    init(&alice, &format!("alice@{}", app.server_name));
    let export = Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(&alice)
        .args(["keys", "export"])
        .env("HOMING_PASSPHRASE", "correct horse battery")
        .output()
        .unwrap();
    let backup = ok(export);
    assert!(backup.contains("homing.key_backup.v1"));
    let file = dir.path().join("backup.json");
    std::fs::write(&file, &backup).unwrap();
    let wrong = Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(&alice)
        .args(["keys", "import", file.to_str().unwrap()])
        .env("HOMING_PASSPHRASE", "wrong passphrase")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let right = Command::new(env!("CARGO_BIN_EXE_homing"))
        .arg("--home")
        .arg(&alice)
        .args(["keys", "import", file.to_str().unwrap()])
        .env("HOMING_PASSPHRASE", "correct horse battery")
        .output()
        .unwrap();
    ok(right);
}

#[tokio::test]
async fn clear_errors_for_people() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    let not_yet = homing(&alice, &["inbox"]);
    assert!(!not_yet.status.success());
    assert!(String::from_utf8_lossy(&not_yet.stderr).contains("homing init"));
    init(&alice, &format!("alice@{}", app.server_name));
    let unknown = homing(&alice, &["send", &format!("nobody@{}", app.server_name), "--text", "x"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_identity"));
    let unreachable = homing(&alice, &["server-info", "127.0.0.1:9"]);
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
    let info = ok(homing(&alice, &["server-info", &app.server_name]));
    assert!(info.contains("registration"));
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
        let homing::storage::DbConnection::Postgres(pg) = &mut *conn else { unreachable!() };
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
            let rows: Vec<Row> = diesel::sql_query(format!("SELECT CAST(t AS TEXT) AS row FROM {} t", table.name))
                .load(pg)
                .unwrap();
            for row in rows {
                let text = row.row.to_lowercase();
                assert!(!text.contains(&hex), "plaintext (hex) in {}", table.name);
                assert!(!text.contains(&String::from_utf8_lossy(needle).to_lowercase()), "plaintext in {}", table.name);
            }
        }
    } else {
        let path = app.database.url.trim_start_matches("sqlite://").to_string();
        for file in [path.clone(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext found in {file}");
            }
        }
    }
}
