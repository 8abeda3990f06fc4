//! Server-name resolution against real sockets on 127.0.0.1: an in-process
//! DNS server (the only nameserver the client uses), HTTP and HTTPS servers,
//! and the `resolution_cache` table on the suite's database.

use diesel::prelude::*;
use hickory_proto::rr::{Record, RecordType};
use homing::address::ServerName;
use homing::config::Settings;
use homing::federation::resolver::{FederationClient, ResolveError, WELL_KNOWN_PATH};
use homing::storage::schema::resolution_cache;
use homing::storage::Database;

use crate::helpers::TestDatabase;
use crate::test_servers::{a_record, srv_record, test_ca, DnsServer, HttpServer, Reply};

const HOUR_MS: i64 = 3_600_000;

/// A client on its own database, with the test DNS server as nameserver.
struct Harness {
    client: FederationClient,
    settings: Settings,
    db: Database,
    dns: DnsServer,
    dir: tempfile::TempDir,
    _database: TestDatabase,
}

/// A row of `resolution_cache`: target, error, resolved_at, expires_at.
type Row = (Option<String>, Option<String>, i64, i64);

impl Harness {
    async fn start(records: Vec<Record>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let database = TestDatabase::create(dir.path()).await;
        let dns = DnsServer::start(records).await;
        let mut vars = vec![
            ("HOMING__DATABASE__URL".to_string(), database.url.clone()),
            ("HOMING__DATABASE__POOL_SIZE".into(), "2".into()),
            (
                "HOMING__FEDERATION__NAMESERVERS".into(),
                dns.addr.to_string(),
            ),
            // The test DNS server points every name at 127.0.0.1, which
            // federation refuses to reach by default.
            (
                "HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES".into(),
                "true".into(),
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::load_from(None, vars).expect("test settings");
        let database_settings = settings.database.clone();
        let db = tokio::task::spawn_blocking(move || {
            let db = Database::connect(&database_settings).expect("database");
            db.run_migrations().expect("migrations");
            db
        })
        .await
        .expect("database task");
        let client = FederationClient::new(&settings.federation, db.clone()).expect("client");
        Self {
            client,
            settings,
            db,
            dns,
            dir,
            _database: database,
        }
    }

    /// Another client on the same database, as a second replica or the
    /// same server after a restart would have: empty memory, shared table.
    fn replica(&self) -> FederationClient {
        FederationClient::new(&self.settings.federation, self.db.clone()).expect("client")
    }

    fn row(&self, server: &str) -> Option<Row> {
        use resolution_cache::dsl;
        let mut conn = self.db.get().expect("connection");
        homing::with_backend!(&mut *conn, c => dsl::resolution_cache
            .filter(dsl::server_name.eq(server))
            .select((dsl::target, dsl::error, dsl::resolved_at, dsl::expires_at))
            .first::<Row>(c)
            .optional())
        .expect("resolution_cache query")
    }

    fn rows(&self) -> i64 {
        use resolution_cache::dsl;
        let mut conn = self.db.get().expect("connection");
        homing::with_backend!(&mut *conn, c => dsl::resolution_cache.count().get_result(c))
            .expect("resolution_cache count")
    }
}

fn name(text: &str) -> ServerName {
    ServerName::parse(text).expect("server name")
}

async fn base_url(client: &FederationClient, server: &str) -> String {
    match client.resolve(&name(server)).await {
        Ok(destination) => destination.base_url,
        Err(error) => panic!("{server} did not resolve: {error}"),
    }
}

#[tokio::test]
async fn ip_literals_and_explicit_ports_need_no_lookup() {
    let h = Harness::start(Vec::new(), &[]).await;
    for (server, url) in [
        ("127.0.0.1:8448", "https://127.0.0.1:8448"),
        ("127.0.0.1", "https://127.0.0.1"),
        ("[::1]", "https://[::1]"),
        ("[::1]:8448", "https://[::1]:8448"),
        ("Example.ORG:8448", "https://example.org:8448"),
    ] {
        assert_eq!(base_url(&h.client, server).await, url);
    }
    let mut insecure = h.settings.federation.clone();
    insecure.allow_insecure_http = true;
    let insecure = FederationClient::new(&insecure, h.db.clone()).expect("client");
    assert_eq!(
        base_url(&insecure, "example.org:8448").await,
        "http://example.org:8448"
    );
    assert!(h.dns.questions().is_empty(), "{:?}", h.dns.questions());
    assert_eq!(h.rows(), 0, "nothing to cache when nothing was looked up");
}

#[tokio::test]
async fn well_known_delegation_over_tls_is_followed_and_cached() {
    let (ca_pem, acceptor) = test_ca(&["origin.homing.test", "hs.homing.test"]);
    let listener = HttpServer::listen().await;
    let port = listener.local_addr().expect("address").port();
    let server = HttpServer::serve(listener, Some(acceptor), move |seen| {
        match seen.path.as_str() {
            WELL_KNOWN_PATH if seen.host == "origin.homing.test" => {
                Reply::ok(format!(r#"{{"homing.server": "hs.homing.test:{port}"}}"#))
                    .header("Cache-Control", "public, max-age=600")
            }
            "/ping" => Reply::ok("pong"),
            _ => Reply::not_found(),
        }
    });
    let h = Harness::start(vec![a_record("hs.homing.test")], &[]).await;
    let ca_file = h.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let mut federation = h.settings.federation.clone();
    federation.extra_ca_file = Some(ca_file);
    let client = FederationClient::new(&federation, h.db.clone()).expect("client");
    // The well-known URL has no port: send it to the test server's.
    client.pin_host("origin.homing.test", server.addr);

    let expected = format!("https://hs.homing.test:{port}");
    assert_eq!(base_url(&client, "origin.homing.test").await, expected);
    // The delegated host is reached over TLS, its name checked against the
    // test CA and looked up through the test DNS server.
    let response = client
        .http()
        .get(format!("{expected}/ping"))
        .send()
        .await
        .expect("request to the delegated host");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "pong");
    let ping = server.seen().into_iter().find(|seen| seen.path == "/ping");
    assert_eq!(
        ping.expect("ping seen").host,
        format!("hs.homing.test:{port}")
    );
    assert_eq!(h.dns.asked("hs.homing.test", RecordType::A), 1);

    assert_eq!(base_url(&client, "origin.homing.test").await, expected);
    assert_eq!(server.hits(WELL_KNOWN_PATH), 1, "served from memory");
    let (target, error, resolved_at, expires_at) = h.row("origin.homing.test").expect("cached row");
    assert!(target.expect("target").contains(&expected));
    assert_eq!(error, None);
    assert_eq!(expires_at - resolved_at, 600_000, "max-age is honoured");

    // A replica without the pin could not fetch the document itself: it
    // gets the same answer only through the shared table.
    assert_eq!(base_url(&h.replica(), "origin.homing.test").await, expected);
    assert_eq!(server.hits(WELL_KNOWN_PATH), 1, "served from the table");
}

#[tokio::test]
async fn a_well_known_behind_an_untrusted_certificate_is_ignored() {
    let (_, acceptor) = test_ca(&["origin.homing.test"]);
    let listener = HttpServer::listen().await;
    let server = HttpServer::serve(listener, Some(acceptor), |_| {
        Reply::ok(r#"{"homing.server": "elsewhere.homing.test:1"}"#)
    });
    let h = Harness::start(Vec::new(), &[]).await;
    h.client.pin_host("origin.homing.test", server.addr);
    assert_eq!(
        base_url(&h.client, "origin.homing.test").await,
        "https://origin.homing.test"
    );
    assert!(server.seen().is_empty(), "no request got past TLS");
    let (_, _, resolved_at, expires_at) = h.row("origin.homing.test").expect("row");
    assert_eq!(expires_at - resolved_at, HOUR_MS);
}

#[tokio::test]
async fn srv_records_send_requests_to_the_target_port() {
    let listener = HttpServer::listen().await;
    let port = listener.local_addr().expect("address").port();
    let server = HttpServer::serve(listener, None, |seen| match seen.path.as_str() {
        WELL_KNOWN_PATH if seen.host == "deleg.homing.test" => {
            Reply::ok(r#"{"homing.server": "hs2.homing.test"}"#)
        }
        "/ping" => Reply::ok("pong"),
        _ => Reply::not_found(),
    });
    let records = vec![
        // The preferred target has no address: connections fall back to
        // the next target on the same port.
        srv_record("srv.homing.test", 0, port, "dead.homing.test"),
        srv_record("srv.homing.test", 10, port, "target.homing.test"),
        srv_record("hs2.homing.test", 0, port, "target.homing.test"),
        a_record("target.homing.test"),
    ];
    let h = Harness::start(
        records,
        &[("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "true")],
    )
    .await;
    h.client.pin_host("deleg.homing.test", server.addr);

    for (server_name, host) in [
        ("srv.homing.test", "srv.homing.test"),
        ("deleg.homing.test", "hs2.homing.test"),
    ] {
        let url = format!("http://{host}:{port}");
        assert_eq!(base_url(&h.client, server_name).await, url);
        let response = h
            .client
            .http()
            .get(format!("{url}/ping"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url}: {e}"));
        assert_eq!(response.status(), 200);
        let last = server.seen().pop().expect("request seen");
        assert_eq!(last.path, "/ping");
        // The Host header keeps the name; only the address came from SRV.
        assert_eq!(last.host, format!("{host}:{port}"));
    }
    let (target, _, resolved_at, expires_at) = h.row("srv.homing.test").expect("row");
    let target: serde_json::Value = serde_json::from_str(&target.expect("target")).expect("json");
    assert_eq!(
        target["srv"],
        serde_json::json!(["dead.homing.test", "target.homing.test"])
    );
    // No well-known document bounds trust to an hour; the SRV TTL (10
    // minutes) is shorter and wins.
    assert_eq!(expires_at - resolved_at, 600_000);
    assert!(h.dns.asked("dead.homing.test", RecordType::A) >= 1);
}

#[tokio::test]
async fn without_well_known_or_srv_port_443_is_used() {
    let h = Harness::start(Vec::new(), &[]).await;
    assert_eq!(
        base_url(&h.client, "plain.homing.test").await,
        "https://plain.homing.test"
    );
    assert_eq!(
        h.dns
            .asked("_homing._tcp.plain.homing.test", RecordType::SRV),
        1
    );
    let (target, error, resolved_at, expires_at) = h.row("plain.homing.test").expect("row");
    assert!(target
        .expect("target")
        .contains("https://plain.homing.test"));
    assert_eq!(error, None);
    assert_eq!(expires_at - resolved_at, HOUR_MS);

    // A replica configured for plain HTTP does not reuse the https row.
    let mut insecure = h.settings.federation.clone();
    insecure.allow_insecure_http = true;
    let insecure = FederationClient::new(&insecure, h.db.clone()).expect("client");
    assert_eq!(
        base_url(&insecure, "plain.homing.test").await,
        "http://plain.homing.test:443"
    );
    assert_eq!(
        h.dns
            .asked("_homing._tcp.plain.homing.test", RecordType::SRV),
        2
    );
}

#[tokio::test]
async fn failures_are_remembered_for_an_hour() {
    let listener = HttpServer::listen().await;
    let server = HttpServer::serve(listener, None, |seen| match seen.path.as_str() {
        WELL_KNOWN_PATH => Reply::ok(r#"{"homing.server": "https://nope"}"#),
        _ => Reply::not_found(),
    });
    let records = vec![srv_record("closed.homing.test", 0, 0, ".")];
    let h = Harness::start(
        records,
        &[("HOMING__FEDERATION__ALLOW_INSECURE_HTTP", "true")],
    )
    .await;
    h.client.pin_host("broken.homing.test", server.addr);

    let first = h.client.resolve(&name("closed.homing.test")).await;
    assert!(matches!(first, Err(ResolveError::Srv { .. })), "{first:?}");
    let first = h.client.resolve(&name("broken.homing.test")).await;
    assert!(
        matches!(first, Err(ResolveError::InvalidWellKnown { .. })),
        "{first:?}"
    );

    for client in [h.client.clone(), h.replica()] {
        for server_name in ["closed.homing.test", "broken.homing.test"] {
            let again = client.resolve(&name(server_name)).await;
            assert!(
                matches!(again, Err(ResolveError::Cached { .. })),
                "{again:?}"
            );
        }
    }
    assert_eq!(
        h.dns
            .asked("_homing._tcp.closed.homing.test", RecordType::SRV),
        1
    );
    assert_eq!(server.hits(WELL_KNOWN_PATH), 1);
    for server_name in ["closed.homing.test", "broken.homing.test"] {
        let (target, error, resolved_at, expires_at) = h.row(server_name).expect("row");
        assert_eq!(target, None);
        assert!(error.expect("error").contains(server_name));
        assert_eq!(expires_at - resolved_at, HOUR_MS);
    }
}
