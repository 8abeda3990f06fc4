//! A home server under the test's control: it passes requests on to a real
//! daemon and answers the ones the test picks itself (swapped identities,
//! old device lists, documents for other addresses, failures). The `homing`
//! client must refuse or wait with a clear message, and acknowledge nothing
//! it did not store on the device first.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use homing_client::store::Store;
use serde_json::{json, Value};

use crate::cli::{homing, init, ok};
use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::inbox_safety::{bob_device, send_sealed, text_from};

/// How the hostile server answers requests whose path starts with a prefix.
#[derive(Clone)]
pub enum Answer {
    /// This status and JSON body, without asking the real server.
    Fixed(u16, Value),
}

#[derive(Default)]
struct Shared {
    upstream: String,
    rules: Mutex<Vec<(String, Answer)>>,
    acknowledged: Mutex<Vec<String>>,
}

/// A proxy in front of a real daemon that the test can make lie.
pub struct HostileServer {
    pub url: String,
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl HostileServer {
    /// Serves on `listener`, passing requests on to `upstream` (a URL).
    pub fn start(listener: TcpListener, upstream: &str) -> Self {
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            ..Shared::default()
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(8 * 1024 * 1024))
                .default_service(web::to(relay))
        })
        .workers(1)
        .listen(listener)
        .expect("hostile server listens")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url,
            shared,
            handle,
        }
    }

    /// In front of `app`, on a port of its own.
    pub fn before(app: &TestApp) -> Self {
        Self::start(
            TcpListener::bind("127.0.0.1:0").expect("bind"),
            &app.address,
        )
    }

    /// Answers requests whose path starts with `prefix` with `answer`
    /// from now on (the latest rule for a path wins).
    pub fn answer(&self, prefix: &str, answer: Answer) {
        self.shared
            .rules
            .lock()
            .expect("rules")
            .insert(0, (prefix.to_string(), answer));
    }

    /// Passes everything on again.
    pub fn behave(&self) {
        self.shared.rules.lock().expect("rules").clear();
    }

    /// Every message id a client asked to acknowledge through this server.
    pub fn acknowledged(&self) -> Vec<String> {
        self.shared.acknowledged.lock().expect("acks").clone()
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        // Stops accepting; the task ends with the test's runtime.
        drop(self.handle.stop(false));
    }
}

async fn relay(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = request.uri().path().to_string();
    if path == "/api/v1/dms/ack" {
        let ids: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let ids = ids["message_ids"].as_array().cloned().unwrap_or_default();
        shared
            .acknowledged
            .lock()
            .expect("acks")
            .extend(ids.iter().filter_map(|id| id.as_str().map(str::to_string)));
    }
    let rule = shared
        .rules
        .lock()
        .expect("rules")
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, answer)| answer.clone());
    if let Some(Answer::Fixed(status, value)) = rule {
        let status = actix_web::http::StatusCode::from_u16(status).expect("status");
        return HttpResponse::build(status).json(value);
    }
    let target = format!(
        "{}{}",
        shared.upstream,
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes()).expect("method");
    let mut forward = reqwest::Client::new().request(method, target).body(body);
    for name in ["authorization", "content-type"] {
        if let Some(value) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
            forward = forward.header(name, value);
        }
    }
    let Ok(answer) = forward.send().await else {
        return HttpResponse::BadGateway().json(json!({"error": "remote_failed"}));
    };
    let status = actix_web::http::StatusCode::from_u16(answer.status().as_u16()).expect("status");
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let bytes = answer.bytes().await.unwrap_or_default();
    HttpResponse::build(status)
        .content_type(content_type)
        .body(bytes)
}

/// The directory answer the real server gives for `address`.
pub async fn directory_answer(app: &TestApp, token: &str, address: &str) -> Value {
    let response = app
        .get_auth(&format!("/api/v1/directory/{address}"), token)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("directory JSON")
}

/// Runs the CLI of `home` through the hostile server.
async fn via(server: &HostileServer, home: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--server-url", server.url.as_str()];
    all.extend_from_slice(args);
    homing(home, &all).await
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every message id `home` stored: accepted, held or quarantined (read
/// from the files, as another program on the device would).
fn kept_ids(home: &Path) -> Vec<String> {
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap_or_default();
    let mut ids = Vec::new();
    for line in read("messages.jsonl").lines() {
        let message: Value = serde_json::from_str(line).unwrap();
        ids.push(message["message_id"].as_str().unwrap().to_string());
    }
    for line in read("quarantine.jsonl").lines() {
        let kept: Value = serde_json::from_str(line).unwrap();
        ids.push(kept["item"]["message_id"].as_str().unwrap().to_string());
    }
    let held: Value = serde_json::from_str(&read("held.json")).unwrap_or(json!([]));
    for kept in held.as_array().unwrap() {
        ids.push(kept["item"]["message_id"].as_str().unwrap().to_string());
    }
    ids
}

/// The contacts `home` pinned, as stored.
fn contacts(home: &Path) -> Value {
    let text = std::fs::read_to_string(home.join("contacts.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(json!({}))
}

fn assert_acknowledged_only_what_is_kept(server: &HostileServer, home: &Path) {
    let kept = kept_ids(home);
    for id in server.acknowledged() {
        assert!(kept.contains(&id), "{id} was acknowledged but not kept");
    }
}

/// One server, three people; bob's client talks through a hostile server.
struct World {
    app: TestApp,
    hostile: HostileServer,
    _dir: tempfile::TempDir,
    alice: std::path::PathBuf,
    bob: std::path::PathBuf,
    mallory: std::path::PathBuf,
}

impl World {
    async fn new() -> Self {
        let app = spawn_app().await;
        let hostile = HostileServer::before(&app);
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob, mallory) = (
            dir.path().join("alice"),
            dir.path().join("bob"),
            dir.path().join("mallory"),
        );
        for (home, alias) in [(&alice, "alice"), (&bob, "bob"), (&mallory, "mallory")] {
            init(home, &format!("{alias}@{}", app.server_name)).await;
        }
        Self {
            app,
            hostile,
            _dir: dir,
            alice,
            bob,
            mallory,
        }
    }

    fn address(&self, alias: &str) -> String {
        format!("{alias}@{}", self.app.server_name)
    }

    fn token(&self, home: &Path) -> String {
        Store::locate(Some(home.to_path_buf()))
            .session()
            .unwrap()
            .expect("a session")
            .token
    }

    async fn directory(&self, alias: &str) -> Value {
        directory_answer(&self.app, &self.token(&self.bob), &self.address(alias)).await
    }
}

#[tokio::test]
async fn a_document_for_another_address_is_refused_and_nothing_is_pinned_for_it() {
    let world = World::new().await;
    let (alice, mallory) = (world.address("alice"), world.address("mallory"));
    // Asked for alice, the server answers with mallory's (valid) identity.
    let forged = world.directory("mallory").await;
    world.hostile.answer(
        &format!("/api/v1/directory/{alice}"),
        Answer::Fixed(200, forged),
    );
    let refused = via(
        &world.hostile,
        &world.bob,
        &["send", &alice, "--text", "for alice"],
    )
    .await;
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(
        text.contains(&format!(
            "look-up of {alice} with the identity of {mallory}"
        )),
        "{text}"
    );
    let pinned = contacts(&world.bob);
    assert!(pinned.get(&mallory).is_none(), "{pinned}");
    assert!(pinned.get(&alice).is_none(), "{pinned}");
    let stolen: Vec<Value> =
        serde_json::from_str(ok(homing(&world.mallory, &["--json", "inbox"]).await).trim())
            .unwrap();
    assert!(stolen.is_empty(), "{stolen:?}");
}

#[tokio::test]
async fn a_swapped_identity_holds_mail_unread_until_the_real_one_is_back() {
    let world = World::new().await;
    let (alice, bob) = (world.address("alice"), world.address("bob"));
    ok(homing(&world.bob, &["send", &alice, "--text", "hi alice"]).await);
    ok(homing(&world.alice, &["send", &bob, "--text", "the real alice"]).await);
    // Alice's address, mallory's key and devices.
    let mut swapped = world.directory("mallory").await;
    swapped["address"] = json!(alice);
    world.hostile.answer(
        &format!("/api/v1/directory/{alice}"),
        Answer::Fixed(200, swapped),
    );
    let first = via(&world.hostile, &world.bob, &["--json", "inbox"]).await;
    let text = stderr(&first);
    assert!(text.contains("changed"), "{text}");
    assert!(text.contains("homing trust"), "{text}");
    let shown: Vec<Value> = serde_json::from_str(ok(first).trim()).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
    assert_acknowledged_only_what_is_kept(&world.hostile, &world.bob);
    let listed = ok(via(&world.hostile, &world.bob, &["inbox", "--quarantine"]).await);
    assert!(
        listed.contains("held") && listed.contains("changed"),
        "{listed}"
    );

    world.hostile.behave();
    let shown = ok(via(&world.hostile, &world.bob, &["--json", "inbox"]).await);
    let shown: Vec<Value> = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(text_from(&shown, &alice), vec!["the real alice"]);
    let held = std::fs::read_to_string(world.bob.join("held.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&held).unwrap(), json!([]));
}

#[tokio::test]
async fn a_transient_failure_mid_inbox_leaves_that_delivery_on_the_server() {
    let world = World::new().await;
    let (alice, bob, mallory) = (
        world.address("alice"),
        world.address("bob"),
        world.address("mallory"),
    );
    ok(homing(&world.alice, &["send", &bob, "--text", "from alice"]).await);
    ok(homing(&world.mallory, &["send", &bob, "--text", "from mallory"]).await);
    world.hostile.answer(
        &format!("/api/v1/directory/{mallory}"),
        Answer::Fixed(503, json!({"error": "unavailable", "message": "try later"})),
    );
    let first = via(&world.hostile, &world.bob, &["--json", "inbox"]).await;
    let text = stderr(&first);
    assert!(text.contains("stays on the server"), "{text}");
    let shown: Vec<Value> = serde_json::from_str(ok(first).trim()).unwrap();
    assert_eq!(text_from(&shown, &alice), vec!["from alice"]);
    assert!(text_from(&shown, &mallory).is_empty());
    assert_eq!(world.hostile.acknowledged().len(), 1);
    assert_acknowledged_only_what_is_kept(&world.hostile, &world.bob);
    assert_eq!(world.app.count("deliveries"), 1);

    // The acknowledgement fails: what was stored is shown once, not twice.
    world.hostile.behave();
    world.hostile.answer(
        "/api/v1/dms/ack",
        Answer::Fixed(500, json!({"error": "internal", "message": "oops"})),
    );
    let failed = via(&world.hostile, &world.bob, &["inbox"]).await;
    assert!(!failed.status.success());
    world.hostile.behave();
    let shown = ok(via(&world.hostile, &world.bob, &["--json", "inbox"]).await);
    let shown: Vec<Value> = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(text_from(&shown, &mallory), vec!["from mallory"]);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(world.app.count("deliveries"), 0);
}

#[tokio::test]
async fn an_older_device_list_is_refused_by_the_client() {
    let world = World::new().await;
    let app = &world.app;
    let mut user = app.register("carol").await;
    let carol = world.address("carol");
    let carol_1 = world.directory("carol").await;
    app.add_device(&mut user, "phone").await;
    ok(via(
        &world.hostile,
        &world.bob,
        &["send", &carol, "--text", "hi carol"],
    )
    .await);
    assert_eq!(contacts(&world.bob)[&carol]["device_list_version"], 2);

    world.hostile.answer(
        &format!("/api/v1/directory/{carol}"),
        Answer::Fixed(200, carol_1),
    );
    let refused = via(
        &world.hostile,
        &world.bob,
        &["send", &carol, "--text", "again"],
    )
    .await;
    assert!(!refused.status.success());
    let text = stderr(&refused);
    assert!(text.contains("older than version 2"), "{text}");
    let whois = ok(via(&world.hostile, &world.bob, &["whois", &carol]).await);
    assert!(whois.contains("WARNING"), "{whois}");
    // The list moving on again is fine.
    world.hostile.behave();
    app.add_device(&mut user, "tablet").await;
    ok(via(
        &world.hostile,
        &world.bob,
        &["send", &carol, "--text", "again"],
    )
    .await);
}

#[tokio::test]
async fn a_forwarded_message_is_quarantined_not_shown() {
    let world = World::new().await;
    let app = &world.app;
    let carol = app.register("carol").await;
    let (bob, dave) = (world.address("bob"), world.address("dave"));
    // Carol signed it for dave; someone sealed it again to bob's device.
    let device = bob_device(app, "bob").await;
    let id = send_sealed(
        app,
        &carol,
        &[dave.as_str()],
        "text/plain",
        b"for dave only",
        &bob,
        &device,
    )
    .await;
    let shown = ok(via(&world.hostile, &world.bob, &["--json", "inbox"]).await);
    let shown: Vec<Value> = serde_json::from_str(shown.trim()).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
    let listed = ok(homing(&world.bob, &["--json", "inbox", "--quarantine"]).await);
    let listed: Vec<Value> = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["message_id"], id);
    assert_eq!(listed[0]["state"], "quarantined");
    let reason = listed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("forwarded") && reason.contains(&dave),
        "{reason}"
    );
    assert_acknowledged_only_what_is_kept(&world.hostile, &world.bob);
}

#[tokio::test]
async fn the_directory_refuses_an_older_device_list_than_it_cached() {
    // Server A sits behind the hostile server, which carries A's name.
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let name = front.local_addr().unwrap().to_string();
    let a = spawn_app_with(vec![("HOMING__SERVER__NAME", name.as_str())]).await;
    let hostile_a = HostileServer::start(front, &a.address);
    let b = spawn_app().await;
    let mut carol = a.register("carol").await;
    let carol_address = format!("carol@{name}");
    let old = a.get("/.well-known/homing/identity/carol").await;
    let old: Value = old.json().await.unwrap();
    a.add_device(&mut carol, "phone").await;
    let reader = b.register("reader").await;
    let token = &reader.device(0).token;
    let seen = directory_answer(&b, token, &carol_address).await;
    assert_eq!(seen["signed_device_list"]["device_list"]["version"], 2);

    // The cache expires; A now serves the list from before.
    hostile_a.answer(
        "/.well-known/homing/identity/carol",
        Answer::Fixed(200, old),
    );
    expire_remote_identities(&b);
    let refused = b
        .get_auth(&format!("/api/v1/directory/{carol_address}"), token)
        .await;
    assert_eq!(refused.status(), 502);
    let body: Value = refused.json().await.unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("version 1") && message.contains("version 2"),
        "{body}"
    );
    hostile_a.behave();
    let again = directory_answer(&b, token, &carol_address).await;
    assert_eq!(again["signed_device_list"]["device_list"]["version"], 2);
}

fn expire_remote_identities(app: &TestApp) {
    use diesel::prelude::*;
    use homing::storage::schema::remote_identities;
    let mut conn = app.state.db.get().unwrap();
    homing::with_backend!(&mut *conn, c => diesel::update(remote_identities::table)
        .set(remote_identities::expires_at.eq(0i64))
        .execute(c))
    .unwrap();
}
