//! Web Push wake-ups (RFC 8030/8291/8292) to a push service on loopback
//! that checks them with independent implementations: PyPI's `py_vapid`
//! verifies the VAPID JWT and `http_ece` decrypts the body
//! (`tests/interop/push_service.py`). Over TLS from a test CA, with
//! plain HTTP refused, as a real push service is reached. Needs a Python
//! with both packages (`HOMING_INTEROP_PYTHON`, as for the interop tests);
//! without them the tests say so and skip, unless `HOMING_REQUIRE_INTEROP`
//! is set, as CI sets it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::gateway::{connect, next_json};
use crate::helpers::{message_to, spawn_app_with, TestApp, TestUser};
use crate::interop::{can_import, python};
use crate::test_servers::{a_record, test_ca_pem, DnsServer};
use homing::metrics::CauseLabels;

fn available() -> bool {
    can_import("http_ece, py_vapid", "http-ece py-vapid")
}

/// The Python push service, its subscription keys, and what it reports.
struct PushService {
    _child: Child,
    _files: tempfile::TempDir,
    port: u16,
    p256dh: String,
    auth: String,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PushService {
    /// The service, and a Homing server that trusts its CA and reaches it
    /// over HTTPS only, with `extra` settings.
    async fn start(extra: Vec<(&str, &str)>) -> (Self, TestApp) {
        Self::start_named(extra, &["127.0.0.1"]).await
    }

    /// The same, its certificate naming `names`.
    async fn start_named(extra: Vec<(&str, &str)>, names: &[&str]) -> (Self, TestApp) {
        Self::start_bound(extra, names, ("127.0.0.1", 0)).await
    }

    /// The same, listening on `bind` (host, port; 0 for any).
    async fn start_bound(
        extra: Vec<(&str, &str)>,
        names: &[&str],
        (host, port): (&str, u16),
    ) -> (Self, TestApp) {
        let files = tempfile::tempdir().unwrap();
        let (ca, cert, key) = test_ca_pem(names);
        let path = |name: &str| files.path().join(name).display().to_string();
        std::fs::write(path("ca.pem"), ca).unwrap();
        std::fs::write(path("cert.pem"), cert).unwrap();
        std::fs::write(path("key.pem"), key).unwrap();
        let ca_file = path("ca.pem");
        let mut env = vec![
            ("HOMING__FEDERATION__EXTRA_CA_FILE", ca_file.as_str()),
            ("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "false"),
        ];
        env.extend(extra);
        let app = spawn_app_with(env).await;
        let info: Value = app
            .get("/.well-known/homing/server-info")
            .await
            .json()
            .await
            .unwrap();
        let vapid_key = info["push"]["vapid_public_key"].as_str().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/push_service.py");
        let mut child = Command::new(python())
            .args([
                script,
                host,
                &port.to_string(),
                &path("cert.pem"),
                &path("key.pem"),
            ])
            .arg(vapid_key)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = next_line(&mut lines, Duration::from_secs(20))
            .await
            .expect("the push service started");
        let service = Self {
            _child: child,
            _files: files,
            port: first["port"].as_u64().unwrap() as u16,
            p256dh: first["p256dh"].as_str().unwrap().into(),
            auth: first["auth"].as_str().unwrap().into(),
            lines,
        };
        (service, app)
    }

    fn subscription(&self, path: &str) -> Value {
        self.subscription_at("127.0.0.1", path)
    }

    /// On port 443 the endpoint names no port, as push services' do.
    fn subscription_at(&self, host: &str, path: &str) -> Value {
        let authority = match self.port {
            443 => host.to_string(),
            port => format!("{host}:{port}"),
        };
        json!({
            "endpoint": format!("https://{authority}{path}"),
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        })
    }

    /// The next request the service received, or `None` after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        next_line(&mut self.lines, within).await
    }
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, within: Duration) -> Option<Value> {
    let line = tokio::time::timeout(within, lines.next_line()).await.ok()?;
    let line = line.expect("read").expect("the push service is running");
    Some(serde_json::from_str(&line).expect("a JSON line"))
}

pub async fn set_push(
    app: &TestApp,
    user: &TestUser,
    device: usize,
    body: &Value,
) -> reqwest::Response {
    let device_id = user.device(device).keys.device_id.to_string();
    app.http
        .put(app.url(&format!("/api/v1/devices/{device_id}/push")))
        .bearer_auth(&user.device(device).token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn send(app: &TestApp, from: &TestUser, to: &TestUser) -> Value {
    let message = message_to(app, &[(to, &[0])], b"secret body", "all");
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&from.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    message
}

/// Sends a message from `from` to `to` and waits for the wake-up at
/// `path`, which must come within `within` of the send.
async fn woken_within(
    service: &mut PushService,
    (app, from, to): (&TestApp, &TestUser, &TestUser),
    path: &str,
    within: Duration,
) {
    let sent = Instant::now();
    send(app, from, to).await;
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&request, path);
    assert!(sent.elapsed() < within, "woken after {:?}", sent.elapsed());
}

/// A subscription with valid keys for `endpoint` (nobody can read what
/// is sent to it).
pub fn valid_subscription(endpoint: &str) -> Value {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let p256dh = homing::crypto::b64(secret.public_key().to_encoded_point(false).as_bytes());
    json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": homing::crypto::b64(&[9u8; 16])}})
}

/// A verified, decrypted wake-up: checks what every one must say.
fn assert_wake_up(request: &Value, path: &str) -> i64 {
    assert_eq!(request["ok"], true, "{request}");
    assert_eq!(request["path"], path);
    assert_eq!(request["urgency"], "high");
    assert_eq!(request["ttl"], "86400");
    assert_eq!(request["topic"], "homing-mail");
    let payload = request["payload"].as_object().unwrap();
    // That there is mail and its cursor; no sender, size or body.
    let mut keys: Vec<&str> = payload.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["cursor", "type"], "{request}");
    assert_eq!(payload["type"], "dm_notify");
    payload["cursor"].as_i64().unwrap()
}

#[tokio::test]
async fn a_wake_up_verifies_and_decrypts_with_independent_implementations() {
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let response = set_push(&app, &bob, 0, &service.subscription("/ok/bob")).await;
    assert_eq!(response.status(), 204);

    send(&app, &alice, &bob).await;
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    let cursor = assert_wake_up(&request, "/ok/bob");
    assert_eq!(request["status"], 201);
    // The cursor is that of bob's pending mail.
    let page = app.sync(&bob.device(0).token).await;
    assert_eq!(page["cursor"].as_i64(), Some(cursor));
    // The body is one padded record, not the message.
    assert!(request["length"].as_u64().unwrap() < 200, "{request}");

    // What the server holds, without the keys; the push service's answer
    // is recorded once the request has ended, a moment after it was seen.
    let device_id = bob.device(0).keys.device_id.to_string();
    let path = format!("/api/v1/devices/{device_id}/push");
    let deadline = Instant::now() + Duration::from_secs(5);
    let held = loop {
        let held: Value = app
            .get_auth(&path, &bob.device(0).token)
            .await
            .json()
            .await
            .unwrap();
        if held["last_push_at"].as_i64().is_some() {
            break held;
        }
        assert!(Instant::now() < deadline, "{held}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        held["endpoint"],
        service.subscription("/ok/bob")["endpoint"]
    );
    assert!(held.get("keys").is_none());
}

#[tokio::test]
async fn a_connected_device_gets_no_wake_up_and_an_offline_one_does() {
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    set_push(&app, &bob, 0, &service.subscription("/ok/bob")).await;

    let mut socket = connect(&app, &bob.device(0).token, "").await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    send(&app, &alice, &bob).await;
    let notify = next_json(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(notify["type"], "DM_NOTIFY");
    assert_eq!(service.next(Duration::from_millis(1500)).await, None);

    drop(socket);
    // The hub notices the closed session when the server ends it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&app, &alice, &bob).await;
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&request, "/ok/bob");
    assert_eq!(service.next(Duration::from_millis(500)).await, None);
}

#[tokio::test]
async fn wake_ups_coalesce_while_unread_and_come_at_once_after_reading() {
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![("HOMING__PUSH__MIN_INTERVAL", "3s")]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    set_push(&app, &bob, 0, &service.subscription("/ok/bob")).await;

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            send(&app, &alice, &bob).await["message_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&first, "/ok/bob");
    // Five messages, unread: at most one more wake-up, and not before
    // the interval.
    if let Some(second) = service.next(Duration::from_secs(5)).await {
        assert_wake_up(&second, "/ok/bob");
        let gap = second["at"].as_f64().unwrap() - first["at"].as_f64().unwrap();
        assert!(gap >= 2.9, "two wake-ups {gap} s apart");
        assert_eq!(service.next(Duration::from_secs(4)).await, None);
    }

    // Bob reads everything; the next message wakes him at once.
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    app.ack(&bob.device(0).token, &ids).await;
    woken_within(
        &mut service,
        (&app, &alice, &bob),
        "/ok/bob",
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn mail_stored_while_a_wake_up_is_out_gets_one_of_its_own() {
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![("HOMING__PUSH__MIN_INTERVAL", "1s")]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    set_push(&app, &bob, 0, &service.subscription("/delay/bob")).await;
    send(&app, &alice, &bob).await;
    let first = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    let first_cursor = assert_wake_up(&first, "/delay/bob");
    // The push service holds that request for a second; mail arriving
    // now finds a wake-up already owed.
    send(&app, &alice, &bob).await;
    let second = service
        .next(Duration::from_secs(10))
        .await
        .expect("a second wake-up");
    let second_cursor = assert_wake_up(&second, "/delay/bob");
    assert!(second_cursor > first_cursor, "{first} then {second}");
    let gap = second["at"].as_f64().unwrap() - first["at"].as_f64().unwrap();
    assert!(
        gap >= 1.9,
        "{gap} s: the interval starts when the first is taken"
    );
}

#[tokio::test]
async fn gone_subscriptions_are_removed_and_slow_downs_are_honoured() {
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    set_push(&app, &bob, 0, &service.subscription("/gone/bob")).await;
    set_push(&app, &carol, 0, &service.subscription("/slow/carol")).await;

    send(&app, &alice, &bob).await;
    send(&app, &alice, &carol).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let request = service
            .next(Duration::from_secs(10))
            .await
            .expect("a request");
        assert_eq!(request["ok"], true, "{request}");
        seen.push(request);
    }
    let gone: Vec<&Value> = seen.iter().filter(|r| r["path"] == "/gone/bob").collect();
    let slow: Vec<&Value> = seen.iter().filter(|r| r["path"] == "/slow/carol").collect();
    assert_eq!(gone.len(), 1, "{seen:?}");
    assert_eq!(slow.len(), 2, "{seen:?}");
    assert_eq!(slow[0]["status"], 429);
    assert_eq!(slow[1]["status"], 201);
    let waited = slow[1]["at"].as_f64().unwrap() - slow[0]["at"].as_f64().unwrap();
    assert!(
        waited >= 0.95,
        "retried after {waited} s despite Retry-After: 1"
    );

    // 410: bob's subscription is gone, so his next mail wakes nobody.
    let device_id = bob.device(0).keys.device_id.to_string();
    let held = app
        .get_auth(
            &format!("/api/v1/devices/{device_id}/push"),
            &bob.device(0).token,
        )
        .await;
    assert_eq!(held.status(), 404);
    send(&app, &alice, &bob).await;
    assert_eq!(service.next(Duration::from_secs(1)).await, None);
}

#[tokio::test]
async fn an_owed_wake_up_survives_a_restart() {
    if !available() {
        return;
    }
    let (mut service, mut app) = PushService::start(vec![]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    set_push(&app, &bob, 0, &service.subscription("/fail/bob")).await;
    send(&app, &alice, &bob).await;
    let failed = service.next(Duration::from_secs(10)).await.expect("a try");
    assert_eq!(failed["status"], 500);

    // Once the failure is recorded, stopped before the retry (two seconds
    // on); started again, it tries again from what the database holds.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.count("push_subscriptions WHERE attempts = 1 AND lease_until IS NULL") == 0 {
        assert!(Instant::now() < deadline, "the failure was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.restart().await;
    let retried = service
        .next(Duration::from_secs(15))
        .await
        .expect("a retry");
    assert_wake_up(&retried, "/fail/bob");
    assert_eq!(retried["status"], 201);
}

#[tokio::test]
async fn a_push_service_that_never_answers_delays_nobody_else() {
    if !available() {
        return;
    }
    let (mut service, app) =
        PushService::start(vec![("HOMING__PUSH__REQUEST_TIMEOUT", "20s")]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut mallory = app.register("mallory").await;
    for name in ["m1", "m2", "m3"] {
        app.add_device(&mut mallory, name).await;
    }
    for device in 0..4 {
        let path = format!("/hang/mallory{device}");
        set_push(&app, &mallory, device, &service.subscription(&path)).await;
    }
    set_push(&app, &bob, 0, &service.subscription("/ok/bob")).await;

    let to_mallory = message_to(&app, &[(&mallory, &[0, 1, 2, 3])], b"x", "all");
    let response = app
        .post_json(
            "/api/v1/dms/send",
            &to_mallory,
            Some(&alice.device(0).token),
        )
        .await;
    assert_eq!(response.status(), 202);
    let mut hanging = 0;
    while hanging < 4 {
        let request = service
            .next(Duration::from_secs(10))
            .await
            .expect("a request");
        assert!(request["path"].as_str().unwrap().starts_with("/hang/"));
        hanging += 1;
    }
    woken_within(
        &mut service,
        (&app, &alice, &bob),
        "/ok/bob",
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn a_push_host_name_gets_the_federation_address_rules() {
    if !available() {
        return;
    }
    let dns = DnsServer::start(vec![a_record("push.homing.test")]).await;
    let nameserver = dns.addr.to_string();
    let names = ["push.homing.test"];
    let retried = |app: &TestApp| {
        app.state
            .metrics
            .push_outcomes
            .get_or_create(&CauseLabels { cause: "retry" })
            .get()
    };

    // Where loopback is refused, a name that resolves there is never
    // reached: the wake-up fails and waits for a retry.
    let strict = vec![
        ("HOMING__FEDERATION__NAMESERVERS", nameserver.as_str()),
        ("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "false"),
    ];
    let (mut service, app) = PushService::start_named(strict, &names).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let subscription = service.subscription_at("push.homing.test", "/ok/bob");
    assert_eq!(set_push(&app, &bob, 0, &subscription).await.status(), 204);
    send(&app, &alice, &bob).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while retried(&app) == 0 {
        assert!(Instant::now() < deadline, "the wake-up was never tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(service.next(Duration::from_millis(500)).await, None);

    // Where it is allowed, the same name is reached over TLS, its
    // certificate checked for the name, the audience naming it.
    let open = vec![("HOMING__FEDERATION__NAMESERVERS", nameserver.as_str())];
    let (mut service, app) = PushService::start_named(open, &names).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let subscription = service.subscription_at("push.homing.test", "/ok/bob");
    assert_eq!(set_push(&app, &bob, 0, &subscription).await.status(), 204);
    send(&app, &alice, &bob).await;
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&request, "/ok/bob");
    assert_eq!(retried(&app), 0);
}

#[tokio::test]
async fn a_push_service_on_the_default_port_is_reached_by_its_name_alone() {
    if !available() {
        return;
    }
    // As push services are deployed: a name without a port, TLS on 443,
    // found through DNS, plain HTTP refused.
    let bind = "127.0.0.9:443";
    if let Err(error) = std::net::TcpListener::bind(bind) {
        eprintln!("skipped: cannot bind {bind} ({error}); this test needs root");
        return;
    }
    let name = hickory_proto::rr::Name::from_ascii("push.homing.test.").unwrap();
    let record = hickory_proto::rr::Record::from_rdata(
        name,
        300,
        hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A::new(127, 0, 0, 9)),
    );
    let dns = DnsServer::start(vec![record]).await;
    let nameserver = dns.addr.to_string();
    let env = vec![("HOMING__FEDERATION__NAMESERVERS", nameserver.as_str())];
    let (mut service, app) =
        PushService::start_bound(env, &["push.homing.test"], ("127.0.0.9", 443)).await;
    assert_eq!(service.port, 443);
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let subscription = service.subscription_at("push.homing.test", "/ok/bob");
    assert_eq!(subscription["endpoint"], "https://push.homing.test/ok/bob");
    assert_eq!(set_push(&app, &bob, 0, &subscription).await.status(), 204);
    send(&app, &alice, &bob).await;
    // The push service checks the JWT's audience against the origin it
    // was reached at: `https://push.homing.test`, no port.
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&request, "/ok/bob");
}

#[tokio::test]
async fn only_a_device_itself_sets_a_valid_subscription() {
    let app = spawn_app_with(vec![
        ("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "false"),
        ("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "false"),
    ])
    .await;
    let alice = app.register("alice").await;
    let mut bob = app.register("bob").await;
    app.add_device(&mut bob, "phone").await;
    let good = valid_subscription("https://push.example/x");
    let p256dh = good["keys"]["p256dh"].as_str().unwrap().to_string();
    let auth = good["keys"]["auth"].as_str().unwrap().to_string();
    let bob_phone = bob.device(1).keys.device_id.to_string();
    let path = format!("/api/v1/devices/{bob_phone}/push");

    // Strangers, other accounts and other devices of the same account.
    let anonymous = app
        .http
        .put(app.url(&path))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    for token in [&alice.device(0).token, &bob.device(0).token] {
        let response = app
            .http
            .put(app.url(&path))
            .bearer_auth(token)
            .json(&good)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_your_device");
    }
    assert_eq!(set_push(&app, &bob, 1, &good).await.status(), 204);

    let with = |endpoint: &str, p256dh: &str, auth: &str| json!({"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}});
    let long = format!("https://push.example/{}", "a".repeat(1100));
    for (body, code) in [
        (
            with("http://push.example/x", &p256dh, &auth),
            "invalid_push_endpoint",
        ),
        (
            with("https://u:p@push.example/x", &p256dh, &auth),
            "invalid_push_endpoint",
        ),
        (with(&long, &p256dh, &auth), "invalid_push_endpoint"),
        (
            with("https://127.0.0.1/x", &p256dh, &auth),
            "push_endpoint_refused",
        ),
        (
            with("https://[::1]:8443/x", &p256dh, &auth),
            "push_endpoint_refused",
        ),
        (
            with("https://169.254.169.254/x", &p256dh, &auth),
            "push_endpoint_refused",
        ),
        (
            with("https://push.example/x", "AAAA", &auth),
            "invalid_push_keys",
        ),
        (
            with("https://push.example/x", &p256dh, "AAAA"),
            "invalid_push_keys",
        ),
    ] {
        let response = set_push(&app, &bob, 1, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], code, "{body}");
    }
    let extra = json!({"endpoint": "https://push.example/x", "keys": {"p256dh": p256dh, "auth": auth}, "more": 1});
    assert_eq!(set_push(&app, &bob, 1, &extra).await.status(), 400);

    // A device changes its subscription rarely: the eleventh in an hour
    // is refused.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(set_push(&app, &bob, 1, &good).await.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");

    // Clearing, then clearing again.
    let token = &bob.device(1).token;
    let cleared = app
        .http
        .delete(app.url(&path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    let again = app
        .http
        .delete(app.url(&path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn homing_push_wires_a_device_to_a_push_service() {
    use crate::cli::{homing, init, ok};
    if !available() {
        return;
    }
    let (mut service, app) = PushService::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&bob, &format!("bob@{}", app.server_name)).await;
    let subscription = service.subscription("/ok/bob-cli");
    let endpoint = subscription["endpoint"].as_str().unwrap();
    let said = ok(homing(
        &bob,
        &[
            "push",
            "set",
            endpoint,
            "--p256dh",
            &service.p256dh,
            "--auth",
            &service.auth,
        ],
    )
    .await);
    assert!(said.contains(endpoint), "{said}");
    let shown: Value =
        serde_json::from_str(&ok(homing(&bob, &["--json", "push", "show"]).await)).unwrap();
    assert_eq!(shown["endpoint"], endpoint);

    let text = "the wake-up must not carry this";
    let to = format!("bob@{}", app.server_name);
    ok(homing(&alice, &["send", &to, "--text", text]).await);
    let request = service
        .next(Duration::from_secs(10))
        .await
        .expect("a wake-up");
    assert_wake_up(&request, "/ok/bob-cli");
    assert!(!request.to_string().contains(text));

    ok(homing(&bob, &["push", "clear"]).await);
    let gone = homing(&bob, &["push", "show"]).await;
    assert!(!gone.status.success());
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(said.contains("no push subscription"), "{said}");
}
