//! The WebSocket gateway: notifications without polling, resume, heartbeats
//! and limits.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{message_to, spawn_app_with, TestApp};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(
    app: &TestApp,
    token: &str,
    query: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!(
        "ws://{}/api/v1/gateway{query}",
        app.address.trim_start_matches("http://")
    );
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The next JSON frame, skipping pings; fails after `within`.
pub async fn next_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(remaining, socket.next())
            .await
            .expect("no frame in time")
            .expect("socket ended")
            .expect("socket error");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

async fn fast_heartbeat_app() -> TestApp {
    spawn_app_with(vec![
        ("HOMING__GATEWAY__HEARTBEAT_INTERVAL", "100ms"),
        ("HOMING__GATEWAY__HEARTBEAT_TIMEOUT", "300ms"),
        ("HOMING__GATEWAY__MAX_SESSIONS_PER_DEVICE", "2"),
    ])
    .await
}

#[tokio::test]
async fn a_connected_device_is_notified_without_polling() {
    let app = fast_heartbeat_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut socket = connect(&app, &bob.device(0).token, "").await.unwrap();
    let hello = next_json(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(hello["type"], "HELLO");

    let message = message_to(&app, &[(&bob, &[0])], b"small body", "all");
    let sent = Instant::now();
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let notify = next_json(&mut socket, Duration::from_secs(5)).await;
    let latency = sent.elapsed();
    assert_eq!(notify["type"], "DM_NOTIFY");
    // Small messages ride inline, with this device's own wrap.
    assert_eq!(notify["message"]["message_id"], message["message_id"]);
    assert_eq!(
        notify["message"]["key_wrap"],
        message["recipients"][0]["devices"][0]["key_wrap"]
    );
    assert!(
        latency < Duration::from_secs(2),
        "notified after {latency:?}"
    );

    // Alice's connected device hears that bob acknowledged it.
    let mut alice_socket = connect(&app, &alice.device(0).token, "").await.unwrap();
    next_json(&mut alice_socket, Duration::from_secs(5)).await;
    app.ack(
        &bob.device(0).token,
        &[message["message_id"].as_str().unwrap()],
    )
    .await;
    let status = next_json(&mut alice_socket, Duration::from_secs(5)).await;
    assert_eq!(status["type"], "DELIVERY_STATUS");
    assert_eq!(status["state"], "delivered");
    assert_eq!(status["recipient"], format!("bob@{}", app.server_name));
}

#[tokio::test]
async fn a_reconnect_with_a_resume_point_learns_what_it_missed() {
    let app = fast_heartbeat_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let token = &bob.device(0).token;
    let first = message_to(&app, &[(&bob, &[0])], b"one", "all");
    app.post_json("/api/v1/dms/send", &first, Some(&alice.device(0).token))
        .await;
    let page = app.sync(token).await;
    let cursor = page["cursor"].as_i64().unwrap();

    // While bob is away, another message arrives.
    let second = message_to(&app, &[(&bob, &[0])], b"two", "all");
    app.post_json("/api/v1/dms/send", &second, Some(&alice.device(0).token))
        .await;

    let mut socket = connect(&app, token, &format!("?resume={cursor}"))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    let missed = next_json(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(missed["type"], "DM_NOTIFY");
    assert!(missed["cursor"].as_i64().unwrap() > cursor);

    // Resuming from the newest cursor announces nothing.
    let latest = missed["cursor"].as_i64().unwrap();
    let mut quiet = connect(&app, token, &format!("?resume={latest}"))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut quiet, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    let more = tokio::time::timeout(Duration::from_millis(300), quiet.next()).await;
    assert!(
        more.is_err() || !matches!(more, Ok(Some(Ok(Message::Text(_))))),
        "{more:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_disconnected() {
    let app = fast_heartbeat_app().await;
    let bob = app.register("bob").await;
    let socket = connect(&app, &bob.device(0).token, "").await.unwrap();
    // Split so that nothing reads (and so nothing answers pings) for a while.
    let (_sink, mut stream) = socket.split();
    let started = Instant::now();
    // tungstenite answers pings only while the stream is polled; poll only
    // after the timeout has surely passed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        match frame {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.reason.as_str(), "heartbeat timeout");
                closed = true;
                break;
            }
            // The queued pong may hit the closed socket before the close
            // frame is read: a broken pipe is the server hanging up too.
            Ok(Message::Close(None)) | Err(_) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
        }
    }
    assert!(
        closed,
        "no heartbeat-timeout close after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let app = fast_heartbeat_app().await;
    let bob = app.register("bob").await;
    let mut socket = connect(&app, &bob.device(0).token, "").await.unwrap();
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(None) => panic!("socket ended"),
            _ => {}
        }
    }
    socket
        .send(Message::Text(r#"{"type":"HEARTBEAT"}"#.into()))
        .await
        .unwrap();
    let ack = next_json(&mut socket, Duration::from_secs(5)).await;
    assert!(ack["type"] == "HEARTBEAT_ACK" || ack["type"] == "HELLO");
}

#[tokio::test]
async fn gateway_refuses_strangers_floods_and_extra_sessions() {
    let app = fast_heartbeat_app().await;
    let bob = app.register("bob").await;
    let token = &bob.device(0).token;
    assert!(connect(&app, "hmg_nope", "").await.is_err());

    let _one = connect(&app, token, "").await.unwrap();
    let _two = connect(&app, token, "").await.unwrap();
    match connect(&app, token, "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected 429, got {other:?}"),
    }
    drop(_one);
    drop(_two);

    // An oversized frame closes the connection.
    let app = fast_heartbeat_app().await;
    let bob = app.register("bob").await;
    let mut socket = connect(&app, &bob.device(0).token, "").await.unwrap();
    socket
        .send(Message::Text("x".repeat(64 * 1024).into()))
        .await
        .unwrap();
    let mut closed = false;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        if matches!(frame, Ok(Message::Close(_)) | Err(_)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "an oversized frame must close the session");
}

/// The reason of the close frame the server sends within `within`.
async fn close_reason(socket: &mut Socket, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return frame.reason.to_string(),
            Ok(Some(Ok(Message::Close(None)))) => return String::new(),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(error))) => panic!("socket error before a close frame: {error}"),
            Ok(None) => panic!("socket ended without a close frame"),
            Err(_) => panic!("no close frame within {within:?}"),
        }
    }
}

#[tokio::test]
async fn a_session_ends_when_its_token_is_signed_out_and_others_stay() {
    let app = spawn_app_with(vec![]).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let second_token = app.sign_in(&bob.account, &bob.device(0).keys).await;
    let mut signed_out = connect(&app, &bob.device(0).token, "").await.unwrap();
    let mut stays = connect(&app, &second_token, "").await.unwrap();
    assert_eq!(
        next_json(&mut signed_out, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    assert_eq!(
        next_json(&mut stays, Duration::from_secs(5)).await["type"],
        "HELLO"
    );

    assert_eq!(app.sign_out(&bob.device(0).token).await, 204);
    assert_eq!(
        close_reason(&mut signed_out, Duration::from_secs(3)).await,
        "the token was revoked"
    );

    // The session opened with the other token still hears of new mail.
    let message = message_to(&app, &[(&bob, &[0])], b"still here", "all");
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let notify = next_json(&mut stays, Duration::from_secs(5)).await;
    assert_eq!(notify["type"], "DM_NOTIFY");
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let app = spawn_app_with(vec![("HOMING__AUTH__TOKEN_TTL", "2s")]).await;
    let bob = app.register("bob").await;
    let token = app.sign_in(&bob.account, &bob.device(0).keys).await;
    let mut socket = connect(&app, &token, "").await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    assert_eq!(
        close_reason(&mut socket, Duration::from_secs(5)).await,
        "the token expired"
    );
}

/// A feed cursor as (transaction, id), to compare.
fn position(cursor: &Value) -> (i64, i64) {
    let text = cursor.as_str().expect("a cursor");
    let (xid, id) = text.split_once('-').expect("XID-ID");
    (xid.parse().unwrap(), id.parse().unwrap())
}

#[tokio::test]
async fn delivery_status_cursors_resume_the_feed_without_a_gap() {
    let app = spawn_app_with(vec![("HOMING__RATE_LIMITS__REGISTRATION_PER_IP", "100/m")]).await;
    let alice = app.register("alice").await;
    let mut readers = Vec::new();
    for index in 0..20 {
        readers.push(app.register(&format!("reader{index}")).await);
    }
    let targets: Vec<(&crate::helpers::TestUser, &[usize])> =
        readers.iter().map(|r| (r, &[0usize][..])).collect();
    let message = message_to(&app, &targets, b"to twenty", "all");
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let id = message["message_id"].as_str().unwrap().to_string();

    let mut socket = connect(&app, &alice.device(0).token, "").await.unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(5)).await["type"],
        "HELLO"
    );
    // Everyone reads at once, so receipts change in concurrent commits.
    let acks: Vec<_> = readers
        .iter()
        .map(|reader| {
            let (app_url, token, id) = (
                app.url("/api/v1/dms/ack"),
                reader.device(0).token.clone(),
                id.clone(),
            );
            let http = app.http.clone();
            tokio::spawn(async move {
                let response = http
                    .post(app_url)
                    .bearer_auth(token)
                    .json(&json!({"message_ids": [id]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            })
        })
        .collect();
    // Alice's device hears some of it live, in feed order, then drops off.
    let mut heard = std::collections::BTreeSet::new();
    let mut last = None;
    while heard.len() < 8 {
        let frame = next_json(&mut socket, Duration::from_secs(10)).await;
        assert_eq!(frame["type"], "DELIVERY_STATUS", "{frame}");
        assert_eq!(frame["state"], "delivered");
        let at = position(&frame["cursor"]);
        assert!(
            last.is_none_or(|before| before < at),
            "{last:?} then {at:?}"
        );
        last = Some(at);
        heard.insert(frame["recipient"].as_str().unwrap().to_string());
        if heard.len() == 8 {
            // Resumes after this frame.
            last = Some(at);
            let resume = frame["cursor"].as_str().unwrap().to_string();
            drop(socket);
            for ack in acks {
                ack.await.unwrap();
            }
            // What it missed, from the feed, after the last cursor it got.
            let mut since = resume;
            loop {
                let page: Value = app
                    .get_auth(
                        &format!("/api/v1/dms/status?since={since}"),
                        &alice.device(0).token,
                    )
                    .await
                    .json()
                    .await
                    .unwrap();
                for event in page["events"].as_array().unwrap() {
                    assert_eq!(event["state"], "delivered", "{event}");
                    let new = heard.insert(event["recipient"].as_str().unwrap().to_string());
                    assert!(new, "{event} was heard live already");
                }
                since = page["cursor"].as_str().unwrap().to_string();
                if page["more"] != true {
                    break;
                }
            }
            break;
        }
    }
    assert!(last.is_some());
    let everyone: std::collections::BTreeSet<String> = readers
        .iter()
        .map(|r| format!("{}@{}", r.alias.to_lowercase(), app.server_name))
        .collect();
    assert_eq!(heard, everyone, "live and resumed, every change once");
}
