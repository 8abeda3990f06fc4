//! With `federation.allow_private_addresses` off (the default), nothing a
//! user or a peer names makes the server connect to loopback or a private
//! network: not an IP literal, not a DNS answer, not a delegation or its
//! redirect. The rest of the suite runs with it on, and is the proof that
//! federation works as before then.

use hickory_proto::rr::RecordType;
use homing::federation::resolver::WELL_KNOWN_PATH;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::test_servers::{a_record, ConnectionCounter, DnsServer, HttpServer, Reply};

const PRIVATE_OFF: (&str, &str) = ("HOMING__FEDERATION__ALLOW_PRIVATE_ADDRESSES", "false");

/// `GET /api/v1/directory/{address}` as a registered user: status and code.
async fn look_up(app: &TestApp, token: &str, address: &str) -> (u16, String) {
    let response = app
        .get_auth(&format!("/api/v1/directory/{address}"), token)
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"].as_str().unwrap_or_default().to_string();
    (status, code)
}

#[tokio::test]
async fn a_directory_lookup_of_a_loopback_address_is_refused_and_connects_nowhere() {
    let target = ConnectionCounter::start().await;
    let port = target.addr.port();
    let app = spawn_app_with(vec![PRIVATE_OFF]).await;
    let alice = app.register("alice").await;
    let token = &alice.device(0).token;
    for server in [
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("[::1]:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let (status, code) = look_up(&app, token, &format!("x@{server}")).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "private_address"),
            "{server}"
        );
    }
    assert_eq!(target.connections().await, 0);

    // The counter does see a server that is allowed to connect.
    let open = spawn_app().await;
    let bob = open.register("bob").await;
    let (status, _) = look_up(&open, &bob.device(0).token, &format!("x@127.0.0.1:{port}")).await;
    assert_eq!(status, 502);
    assert!(target.connections().await >= 1);
}

#[tokio::test]
async fn a_dns_answer_pointing_at_loopback_is_refused() {
    let target = ConnectionCounter::start().await;
    let port = target.addr.port();
    let dns = DnsServer::start(vec![a_record("peer.homing.test")]).await;
    let nameserver = dns.addr.to_string();
    let app = spawn_app_with(vec![
        PRIVATE_OFF,
        ("HOMING__FEDERATION__NAMESERVERS", nameserver.as_str()),
    ])
    .await;
    let alice = app.register("alice").await;
    let address = format!("x@peer.homing.test:{port}");
    let (status, code) = look_up(&app, &alice.device(0).token, &address).await;
    assert_eq!((status, code.as_str()), (403, "private_address"));
    assert!(dns.asked("peer.homing.test", RecordType::A) >= 1);
    assert_eq!(target.connections().await, 0);
}

#[tokio::test]
async fn a_delegation_or_a_redirect_to_a_private_address_is_refused() {
    let target = ConnectionCounter::start().await;
    let port = target.addr.port();
    let listener = HttpServer::listen().await;
    let server = HttpServer::serve(listener, None, move |seen| {
        match (seen.host.as_str(), seen.path.as_str()) {
            ("literal.homing.test", WELL_KNOWN_PATH) => {
                Reply::ok(format!(r#"{{"homing.server": "127.0.0.1:{port}"}}"#))
            }
            ("named.homing.test", WELL_KNOWN_PATH) => {
                Reply::ok(format!(r#"{{"homing.server": "peer.homing.test:{port}"}}"#))
            }
            ("redirect.homing.test", WELL_KNOWN_PATH) => Reply {
                status: 302,
                headers: vec![(
                    "Location",
                    format!("http://127.0.0.1:{port}{WELL_KNOWN_PATH}"),
                )],
                body: String::new(),
            },
            _ => Reply::not_found(),
        }
    });
    let dns = DnsServer::start(vec![a_record("peer.homing.test")]).await;
    let nameserver = dns.addr.to_string();
    let app = spawn_app_with(vec![
        PRIVATE_OFF,
        ("HOMING__FEDERATION__NAMESERVERS", nameserver.as_str()),
    ])
    .await;
    // The delegating domains' web server is the test server on loopback:
    // pinned, as an operator's own override, so only what the documents
    // say is under test.
    for domain in [
        "literal.homing.test",
        "named.homing.test",
        "redirect.homing.test",
    ] {
        app.state.federation.pin_host(domain, server.addr);
    }
    let alice = app.register("alice").await;
    let token = &alice.device(0).token;
    for domain in ["literal.homing.test", "named.homing.test"] {
        let (status, code) = look_up(&app, token, &format!("x@{domain}")).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "private_address"),
            "{domain}"
        );
    }
    // A redirect to a private IP literal is not followed (the counter
    // below would see it): the document counts as absent, and the lookup
    // goes on to the domain's own port 443, where nothing answers.
    let (status, code) = look_up(&app, token, "x@redirect.homing.test").await;
    assert_eq!((status, code.as_str()), (502, "remote_failed"));
    assert_eq!(server.hits(WELL_KNOWN_PATH), 3);
    assert_eq!(target.connections().await, 0);
}

#[tokio::test]
async fn a_send_to_a_private_address_or_localhost_is_refused_and_stores_nothing() {
    let app = spawn_app_with(vec![PRIVATE_OFF]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    for server in ["127.0.0.1:9", "localhost:9", "[::1]:9", "10.0.0.1"] {
        let mut message = crate::helpers::message_to(&app, &[(&bob, &[0])], b"x", "all");
        message["recipients"][0]["address"] = serde_json::json!(format!("ghost@{server}"));
        let answer = app
            .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await;
        assert_eq!(answer.status(), 403, "{server}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "private_address", "{server}");
    }
    assert_eq!(app.count("messages"), 0);
    assert_eq!(app.count("destinations"), 0);
}
