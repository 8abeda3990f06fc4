//! `homingd admin federation check SERVER` run as the real binary with a
//! daemon's configuration, against real daemons on 127.0.0.1.

use std::process::Output;

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::test_servers::{a_record, srv_record, DnsServer};

/// `homingd admin [ARGS]` with `app`'s whole configuration. Awaited, not
/// waited for: the daemons it talks to run on this test's runtime.
async fn admin(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_homingd"))
        .envs(app.daemon_env.iter().map(|(k, v)| (k, v)))
        .arg("admin")
        .args(args)
        .output()
        .await
        .expect("homingd runs")
}

/// The check's JSON report and whether it exited successfully.
async fn check_json(app: &TestApp, server: &str) -> (Value, bool) {
    let output = admin(app, &["--json", "federation", "check", server]).await;
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output.status.success())
}

/// The step named `name`, which must be there.
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("a steps array")
        .iter()
        .find(|step| step["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {report}"))
}

#[tokio::test]
async fn check_says_mail_flows_to_a_running_peer() {
    let a = spawn_app().await;
    let b = spawn_app().await;

    let output = admin(&a, &["federation", "check", &b.server_name]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("mail will flow"), "{text}");
    assert!(text.contains("IP literal with a port"), "{text}");

    let (report, success) = check_json(&a, &b.server_name).await;
    assert!(success, "{report}");
    assert_eq!(report["origin"], a.server_name.as_str());
    assert_eq!(report["server"], b.server_name.as_str());
    assert_eq!(report["verdict"]["mail_flows"], true);
    assert!(report["verdict"]["problem"].is_null());
    for name in [
        "policy", "name", "target", "connect", "tls", "keys", "hello",
    ] {
        assert_eq!(step(&report, name)["ok"], true, "{report}");
    }
    assert!(step(&report, "connect")["detail"]
        .as_str()
        .unwrap()
        .contains(&b.server_name));
    assert!(step(&report, "hello")["detail"]
        .as_str()
        .unwrap()
        .contains("queued_for_you"));
}

#[tokio::test]
async fn check_says_why_a_peer_that_denies_us_gets_no_mail() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let denied = admin(&b, &["federation", "deny", &a.server_name]).await;
    assert!(denied.status.success());

    let output = admin(&a, &["federation", "check", &b.server_name]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("mail will not flow"), "{text}");
    assert!(last.contains("403 federation_denied"), "{text}");
    assert!(last.contains(&format!("allow {}", a.server_name)), "{text}");

    let (report, success) = check_json(&a, &b.server_name).await;
    assert!(!success);
    assert_eq!(report["verdict"]["mail_flows"], false);
    assert_eq!(report["verdict"]["problem"], "refused");
    assert_eq!(step(&report, "keys")["ok"], true, "{report}");
    assert_eq!(step(&report, "hello")["ok"], false, "{report}");
}

#[tokio::test]
async fn check_says_why_nothing_reaches_a_closed_port_or_a_denied_server() {
    let a = spawn_app().await;
    // Nothing listens on port 9 of 127.0.0.1.
    let (report, success) = check_json(&a, "127.0.0.1:9").await;
    assert!(!success);
    assert_eq!(report["verdict"]["problem"], "unreachable", "{report}");
    let summary = report["verdict"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("nothing answers at http://127.0.0.1:9"),
        "{summary}"
    );
    assert_eq!(step(&report, "connect")["ok"], false);
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|step| step["step"] != "hello"),
        "no signed request without a connection: {report}"
    );

    // This server's own rule is the first problem, and says how to lift it.
    let denied = admin(&a, &["federation", "deny", "127.0.0.1:9"]).await;
    assert!(denied.status.success());
    let (report, success) = check_json(&a, "127.0.0.1:9").await;
    assert!(!success);
    assert_eq!(report["verdict"]["problem"], "denied_here", "{report}");
    assert!(report["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("homingd admin federation allow 127.0.0.1:9"));
}

#[tokio::test]
async fn check_shows_each_resolution_step_and_a_peer_under_another_name() {
    let b = spawn_app().await;
    let port: u16 = b.server_name.rsplit(':').next().unwrap().parse().unwrap();
    let dns = DnsServer::start(vec![
        srv_record("b.homing.test", 0, port, "node.homing.test"),
        a_record("node.homing.test"),
    ])
    .await;
    let nameserver = dns.addr.to_string();
    let a = spawn_app_with(vec![("HOMING__FEDERATION__NAMESERVERS", &nameserver)]).await;

    // SRV sends requests for b.homing.test to B, which calls itself by
    // its IP and port: its keys name another server, and it does not take
    // requests addressed to b.homing.test.
    let (report, success) = check_json(&a, "b.homing.test").await;
    assert!(!success);
    assert_eq!(step(&report, "well_known")["ok"], true, "{report}");
    let srv = step(&report, "srv")["detail"].as_str().unwrap();
    assert!(
        srv.contains(&format!("port {port} on node.homing.test")),
        "{srv}"
    );
    assert_eq!(
        step(&report, "connect")["detail"],
        format!("connected to 127.0.0.1:{port} for http://b.homing.test:{port}"),
    );
    assert_eq!(step(&report, "keys")["ok"], false, "{report}");
    let hello = step(&report, "hello")["detail"].as_str().unwrap();
    assert!(hello.contains("403"), "{hello}");
    assert_eq!(report["verdict"]["problem"], "peer_keys");
    let summary = report["verdict"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("its server.name must be b.homing.test"),
        "{summary}"
    );
}

#[tokio::test]
async fn check_shows_a_resolution_failure_the_daemon_remembers() {
    let dns = DnsServer::start(vec![srv_record("gone.homing.test", 0, 0, ".")]).await;
    let nameserver = dns.addr.to_string();
    let a = spawn_app_with(vec![("HOMING__FEDERATION__NAMESERVERS", &nameserver)]).await;
    {
        use diesel::prelude::*;
        use homing::storage::schema::resolution_cache;
        let mut conn = a.state.db.get().unwrap();
        let now = homing::time::now_ms();
        homing::with_backend!(&mut *conn, c => diesel::insert_into(resolution_cache::table)
            .values((
                resolution_cache::server_name.eq("gone.homing.test"),
                resolution_cache::error.eq(Some("gone.homing.test: no Homing service here")),
                resolution_cache::resolved_at.eq(now),
                resolution_cache::expires_at.eq(now + 3_600_000),
            ))
            .execute(c))
        .unwrap();
    }
    // The daemon remembers a failure, and its SRV record still says there
    // is no service: the fresh resolution fails as well.
    let (report, success) = check_json(&a, "gone.homing.test").await;
    assert!(!success);
    assert_eq!(report["verdict"]["problem"], "unresolvable", "{report}");
    assert_eq!(step(&report, "well_known")["ok"], true, "{report}");
    assert_eq!(step(&report, "srv")["ok"], false, "{report}");
    let cache = step(&report, "cache")["detail"].as_str().unwrap();
    assert!(
        cache.contains("remembers a failure") && cache.contains("no Homing service here"),
        "{cache}"
    );
}
