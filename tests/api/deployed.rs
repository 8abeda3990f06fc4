//! Federation as people deploy it: two `homingd` (one on SQLite, one on
//! PostgreSQL) behind Debian's Caddy running `deploy/Caddyfile` with
//! `tls internal` on 127.0.0.1:443, named `a.homing.test` and
//! `b.homing.test` with no port. Names come from a DNS server the test
//! runs: a is found through its `/.well-known/homing/server` delegation, b
//! through its `_homing._tcp` SRV record. Nothing runs with an insecure
//! flag: servers and people trust Caddy's internal root through
//! `federation.extra_ca_file` and `homing --ca-file`.
//!
//! Needs `caddy`, PostgreSQL (`HOMING_TEST_DATABASE_URL`) and root (port
//! 443); without them it says so and skips, unless
//! `HOMING_REQUIRE_DEPLOYED` is set, as CI sets it.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;

use crate::deployment::{free_port, skip, Daemon, Person, Proxy};
use crate::helpers::TestDatabase;
use crate::test_servers::{a_record, srv_record, DnsServer};

/// What stops the test from running here, if anything.
fn missing_prerequisite() -> Option<String> {
    let caddy = std::process::Command::new("caddy").arg("version").output();
    if !caddy.is_ok_and(|output| output.status.success()) {
        return Some("caddy is not installed (apt-get install caddy)".into());
    }
    if std::env::var(crate::helpers::TEST_DATABASE_ENV).map_or(true, |url| url.is_empty()) {
        return Some(format!(
            "one server runs on PostgreSQL: set {}",
            crate::helpers::TEST_DATABASE_ENV
        ));
    }
    for port in [443, 80] {
        if let Err(error) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Some(format!(
                "cannot bind 127.0.0.1:{port} ({error}): needs root"
            ));
        }
    }
    None
}

/// The settings of one server behind the proxy.
fn server_env(
    name: &str,
    port: u16,
    data_dir: &std::path::Path,
    database_url: &str,
    dns: &str,
    root_ca: &std::path::Path,
) -> Vec<(String, String)> {
    [
        ("HOMING__SERVER__NAME", name.to_string()),
        ("HOMING__SERVER__BIND", format!("127.0.0.1:{port}")),
        ("HOMING__SERVER__DATA_DIR", data_dir.display().to_string()),
        ("HOMING__SERVER__TRUST_FORWARDED_FOR", "true".into()),
        ("HOMING__SERVER__SHUTDOWN_TIMEOUT", "2s".into()),
        ("HOMING__DATABASE__URL", database_url.to_string()),
        ("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "false".into()),
        // Both names resolve to the proxy on 127.0.0.1, which federation
        // refuses to reach by default.
        ("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "true".into()),
        ("HOMING__FEDERATION__NAMESERVERS", dns.to_string()),
        (
            "HOMING__FEDERATION__EXTRA_CA_FILE",
            root_ca.display().to_string(),
        ),
        ("HOMING__LOG__FILTER", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Messages in `person`'s inbox whose content is `text`, once they number
/// `count` (fails after 20 s).
async fn wait_for_text(person: &Person, text: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Vec<Value> =
            serde_json::from_str(person.run(&["--json", "inbox"]).await.trim()).expect("inbox");
        let matching: Vec<Value> = listed
            .into_iter()
            .filter(|m| m["content"] == text)
            .collect();
        if matching.len() >= count {
            return matching;
        }
        assert!(
            Instant::now() < deadline,
            "{} got {} of {count} copies of {text:?}",
            person.address,
            matching.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `homingd admin destinations list --json` of `daemon`, for `server`.
async fn destination(daemon: &Daemon, server: &str) -> Value {
    let output = daemon
        .run(&["admin", "--json", "destinations", "list"])
        .await;
    assert!(output.status.success(), "{output:?}");
    let list: Vec<Value> = serde_json::from_slice(&output.stdout).expect("destinations JSON");
    list.into_iter()
        .find(|d| d["server_name"] == server)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_behind_caddy_federate_by_name_on_443() {
    if let Some(reason) = missing_prerequisite() {
        skip(&reason);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start(vec![
        a_record("a.homing.test"),
        a_record("b.homing.test"),
        a_record("node.b.homing.test"),
        srv_record("b.homing.test", 0, 443, "node.b.homing.test"),
    ])
    .await;
    let nameserver = dns.addr.to_string();
    let (port_a, port_b) = (free_port(), free_port());
    let proxy = Proxy::start(dir.path(), (port_a, port_b)).await;

    let postgres = TestDatabase::postgres().await.expect("PostgreSQL");
    let sqlite = format!("sqlite://{}", dir.path().join("a.db").display());
    let (data_a, data_b) = (dir.path().join("data-a"), dir.path().join("data-b"));
    let env_a = server_env(
        "a.homing.test",
        port_a,
        &data_a,
        &sqlite,
        &nameserver,
        &proxy.root_ca,
    );
    let env_b = server_env(
        "b.homing.test",
        port_b,
        &data_b,
        &postgres.url,
        &nameserver,
        &proxy.root_ca,
    );
    let a = Daemon::start(env_a, port_a, dir.path().join("a.log")).await;
    let mut b = Daemon::start(env_b, port_b, dir.path().join("b.log")).await;

    // What an admin runs after setting up: each side checks the other.
    for (daemon, peer) in [(&a, "b.homing.test"), (&b, "a.homing.test")] {
        let checked = daemon
            .run(&["admin", "--json", "federation", "check", peer])
            .await;
        let report: Value = serde_json::from_slice(&checked.stdout).unwrap_or_else(|_| {
            panic!(
                "federation check {peer}: {}",
                String::from_utf8_lossy(&checked.stderr)
            )
        });
        assert!(
            checked.status.success(),
            "federation check {peer}: {report}"
        );
        assert_eq!(report["verdict"]["mail_flows"], true, "{report}");
        let steps: Vec<&str> = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|step| step["step"].as_str())
            .collect();
        for step in ["tls", "keys", "hello"] {
            assert!(steps.contains(&step), "{peer}: no {step} step in {report}");
        }
    }

    // Both people register and sign in through the proxy.
    let alice = Person::new(
        dir.path(),
        "alice@a.homing.test",
        &proxy.root_ca,
        &nameserver,
    );
    let bob = Person::new(dir.path(), "bob@b.homing.test", &proxy.root_ca, &nameserver);
    alice.run(&["init", &alice.address]).await;
    bob.run(&["init", &bob.address]).await;

    // Mail both ways.
    alice
        .run(&["send", &bob.address, "--text", "hello bob, over 443"])
        .await;
    let got = wait_for_text(&bob, "hello bob, over 443", 1).await;
    assert_eq!(got[0]["from"], "alice@a.homing.test");
    bob.run(&["send", &alice.address, "--text", "hello alice"])
        .await;
    wait_for_text(&alice, "hello alice", 1).await;
    // a was found through delegation, b through SRV, both on port 443.
    assert!(dns.asked("_homing._tcp.b.homing.test", RecordType::SRV) > 0);
    assert!(dns.asked("node.b.homing.test", RecordType::A) > 0);
    assert_eq!(dns.asked("_homing._tcp.a.homing.test", RecordType::SRV), 0);

    // A live message over wss through the proxy.
    let mut listen = bob
        .command(&["--json", "listen", "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.metric("homing_gateway_sessions").await < 1.0 {
        assert!(Instant::now() < deadline, "bob's gateway never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice
        .run(&["send", &bob.address, "--text", "live over wss"])
        .await;
    let heard = tokio::time::timeout(Duration::from_secs(20), async {
        let mut out = String::new();
        use tokio::io::AsyncReadExt;
        listen
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        out
    })
    .await
    .expect("homing listen printed the live message");
    let heard: Value = serde_json::from_str(heard.trim()).expect("listen JSON");
    assert_eq!(heard["content"], "live over wss");

    // b goes away: a holds the message, then delivers it exactly once.
    b.stop().await;
    alice
        .run(&["send", &bob.address, "--text", "while b was down"])
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = destination(&a, "b.homing.test").await;
        if held["queued"] == 1 && held["failures"].as_i64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "a never tried b: {held}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.restart().await;
    wait_for_text(&bob, "while b was down", 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while destination(&a, "b.homing.test").await["queued"] != 0 {
        assert!(Instant::now() < deadline, "a kept the message queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wait_for_text(&bob, "while b was down", 1).await.len(), 1);

    // a rotates its signing key while mail flows: nothing is refused.
    let log_before = a.log_text().len();
    for round in 0..6 {
        if round == 3 {
            let rotated = a.run(&["admin", "rotate-key"]).await;
            assert!(rotated.status.success(), "{rotated:?}");
        }
        alice
            .run(&["send", &bob.address, "--text", &format!("rotation {round}")])
            .await;
    }
    for round in 0..6 {
        wait_for_text(&bob, &format!("rotation {round}"), 1).await;
    }
    let after = &a.log_text()[log_before..];
    assert!(
        !after.contains("relay attempt failed"),
        "a relay attempt failed during the key rotation:\n{after}"
    );

    // Alice takes back a message Bob has not read: a asks b for it, signed,
    // through the proxy, and Bob never sees it.
    let sent = alice
        .run(&["send", &bob.address, "--text", "take this back"])
        .await;
    let id = sent.trim().to_string();
    let state_of = |out: String| -> String {
        let status: Value = serde_json::from_str(out.trim()).expect("status JSON");
        status["recipients"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for wanted in ["relayed", "recalled"] {
        if wanted == "recalled" {
            alice.run(&["recall", &id]).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = state_of(alice.run(&["--json", "status", &id]).await);
            if state == wanted {
                break;
            }
            assert!(Instant::now() < deadline, "still {state}, never {wanted}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let listed = bob.run(&["--json", "inbox"]).await;
    assert!(!listed.contains("take this back"), "{listed}");

    // Alice leaves, through the proxy. Once b's cached copy of her
    // identity expires, b fetches her departure from a over TLS, checks it
    // against the key it pinned, and bob's client, checking it again
    // against its own pin, tells him she left instead of sending.
    let left = alice.run(&["--json", "account", "delete", "--yes"]).await;
    assert!(left.contains("alice@a.homing.test"), "{left}");
    {
        use diesel::{Connection, RunQueryDsl};
        let mut pg = diesel::PgConnection::establish(&postgres.url).unwrap();
        diesel::sql_query("UPDATE remote_identities SET expires_at = 0")
            .execute(&mut pg)
            .unwrap();
    }
    let refused = bob
        .command(&["send", &alice.address, "--text", "are you there?"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("left its home server"), "{said}");

    listen.kill().await.ok();
    b.stop().await;
    let mut a = a;
    a.stop().await;
    proxy.stop().await;
}
