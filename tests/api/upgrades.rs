//! Upgrade requests at the byte level: the gateway's WebSocket is served
//! outside actix-http's HTTP/1 dispatcher, so what a raw client sends and
//! reads around the upgrade is pinned here.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::gateway::{connect, next_json};
use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp};

const WITHIN: Duration = Duration::from_secs(5);

/// An upgrade request for `path`, with `token` as bearer if given.
fn upgrade_request(app: &TestApp, path: &str, token: Option<&str>) -> Vec<u8> {
    let host = app.address.trim_start_matches("http://");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
    )
    .into_bytes()
}

async fn open(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads up to the end of the response head; returns it and what followed.
async fn read_head(socket: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            return (String::from_utf8(bytes).expect("ASCII head"), rest);
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WITHIN, socket.read(&mut chunk))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "connection closed before the response head");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Sends an upgrade request for `path` without a token; the socket, the
/// answer's head and what followed it.
async fn answer_to_upgrade(app: &TestApp, path: &str) -> (TcpStream, String, Vec<u8>) {
    let mut socket = open(app).await;
    socket
        .write_all(&upgrade_request(app, path, None))
        .await
        .unwrap();
    let (head, rest) = read_head(&mut socket).await;
    (socket, head, rest)
}

/// Reads until the server closes the connection.
async fn read_to_close(socket: &mut TcpStream, mut bytes: Vec<u8>) -> Vec<u8> {
    tokio::time::timeout(WITHIN, socket.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read");
    bytes
}

/// A client frame (masked, as RFC 6455 requires) with a short payload.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Server frames (unmasked) read until one has `opcode`; its payload.
/// Frames before it are skipped; bytes after it stay in `buffered` for
/// the next call (the server may write several frames at once).
async fn frame_with_opcode(socket: &mut TcpStream, buffered: &mut Vec<u8>, opcode: u8) -> Vec<u8> {
    loop {
        while buffered.len() >= 2 {
            let (code, short) = (buffered[0] & 0x0f, (buffered[1] & 0x7f) as usize);
            let (start, len) = match short {
                126 if buffered.len() >= 4 => {
                    (4, u16::from_be_bytes([buffered[2], buffered[3]]) as usize)
                }
                126 => break,
                127 => panic!("no frame here is that large"),
                len => (2, len),
            };
            if buffered.len() < start + len {
                break;
            }
            let payload = buffered[start..start + len].to_vec();
            buffered.drain(..start + len);
            if code == opcode {
                return payload;
            }
        }
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(WITHIN, socket.read(&mut chunk))
            .await
            .expect("a frame in time")
            .expect("read");
        assert!(n > 0, "connection closed before the frame");
        buffered.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn frames_sent_right_behind_the_upgrade_request_are_not_lost() {
    let app = spawn_app().await;
    let bob = app.register("bob").await;
    let mut socket = open(&app).await;
    // The request and a ping in one write: the ping arrives with the
    // request's bytes, before the server has answered.
    let mut bytes = upgrade_request(&app, "/api/v1/gateway", Some(&bob.device(0).token));
    bytes.extend(client_frame(0x9, b"are you there"));
    socket.write_all(&bytes).await.unwrap();
    let (head, rest) = read_head(&mut socket).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut buffered = rest;
    let hello = frame_with_opcode(&mut socket, &mut buffered, 0x1).await;
    assert!(String::from_utf8_lossy(&hello).contains("HELLO"));
    let pong = frame_with_opcode(&mut socket, &mut buffered, 0xA).await;
    assert_eq!(pong, b"are you there");
}

#[tokio::test]
async fn a_refused_upgrade_gets_the_json_error_and_the_connection_closes() {
    let app = spawn_app().await;
    let (mut socket, head, rest) = answer_to_upgrade(&app, "/api/v1/gateway").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.to_lowercase().contains("connection: close"), "{head}");
    let body = read_to_close(&mut socket, rest).await;
    let error: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
    assert_eq!(error["error"], "missing_token");
}

#[tokio::test]
async fn an_upgrade_request_for_another_path_is_answered_as_http() {
    let app = spawn_app().await;
    let (mut socket, head, rest) = answer_to_upgrade(&app, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let body = read_to_close(&mut socket, rest).await;
    assert_eq!(body.len(), length);
}

async fn next_frame(
    frames: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(WITHIN, frames.recv())
        .await
        .expect("a frame in time")
        .expect("the session is open")
}

#[tokio::test]
async fn a_session_whose_device_stops_reading_is_cut_off_while_its_other_session_hears_all() {
    // Large messages ride inline, so a few fill any socket buffer. A write
    // that makes no progress for the heartbeat timeout ends the session.
    let app = spawn_app_with(vec![
        ("HOMING__GATEWAY__HEARTBEAT_INTERVAL", "1s"),
        ("HOMING__GATEWAY__HEARTBEAT_TIMEOUT", "2s"),
        ("HOMING__GATEWAY__INLINE_MAX_BYTES", "200000"),
        ("HOMING__RATE_LIMITS__SEND_PER_DEVICE", "100000/m"),
        ("HOMING__GATEWAY__MAX_SESSIONS_PER_DEVICE", "2"),
    ])
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let token = &bob.device(0).token;

    // The stalled session: a small receive buffer, and nothing read past
    // the answer's head.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let mut stalled = socket.connect(address).await.expect("connect");
    stalled
        .write_all(&upgrade_request(&app, "/api/v1/gateway", Some(token)))
        .await
        .unwrap();
    let (head, _) = read_head(&mut stalled).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // It still sends a pong every 300 ms, so the heartbeat alone would
    // never end it: only a write that makes no progress can.
    let (mut stalled_reader, mut stalled_writer) = stalled.into_split();
    let pongs = tokio::spawn(async move {
        while stalled_writer
            .write_all(&client_frame(0xA, b""))
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // The honest session reads all the time (and so answers pings).
    let mut socket = connect(&app, token, "").await.unwrap();
    let (frames, mut honest) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let frame = next_json(&mut socket, Duration::from_secs(60)).await;
            if frames.send(frame).is_err() {
                break;
            }
        }
    });
    assert_eq!(next_frame(&mut honest).await["type"], "HELLO");
    // Both of the device's sessions are taken.
    match connect(&app, token, "").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected 429, got {other:?}"),
    }

    // 80 messages of 150 KiB: about 16 MB of frames for each session,
    // more than the kernel's socket buffers take.
    let body = vec![7u8; 150 * 1024];
    let mut sent = Vec::new();
    for _ in 0..80 {
        let message = message_to(&app, &[(&bob, &[0])], &body, "all");
        let response = app
            .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await;
        assert_eq!(response.status(), 202);
        sent.push(message["message_id"].as_str().unwrap().to_string());
        let notify = next_frame(&mut honest).await;
        assert_eq!(notify["type"], "DM_NOTIFY");
        assert_eq!(notify["message"]["message_id"], sent[sent.len() - 1]);
    }

    // The server gives up on the stalled session (a write has made no
    // progress for the heartbeat timeout) and frees its place, while its
    // device still reads nothing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let third = loop {
        match connect(&app, token, "").await {
            Ok(socket) => break socket,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(error) => panic!("the stalled session still holds its place: {error}"),
        }
    };
    drop(third);
    pongs.abort();
    // Its connection is gone too: what the server had written, then the
    // end (or a reset, for the pongs it never read).
    let mut drained = Vec::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        stalled_reader.read_to_end(&mut drained),
    )
    .await;
    assert!(
        ended.is_ok(),
        "the stalled connection was still open after {} bytes",
        drained.len()
    );

    // And the honest session still hears new mail.
    let message = message_to(&app, &[(&bob, &[0])], b"after", "all");
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let notify = next_frame(&mut honest).await;
    assert_eq!(notify["message"]["message_id"], message["message_id"]);
}

#[tokio::test]
async fn fragmented_frames_close_the_session_instead_of_piling_up() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut honest = connect(&app, &bob.device(0).token, "").await.unwrap();
    assert_eq!(next_json(&mut honest, WITHIN).await["type"], "HELLO");
    let mut socket = open(&app).await;
    socket
        .write_all(&upgrade_request(
            &app,
            "/api/v1/gateway",
            Some(&bob.device(0).token),
        ))
        .await
        .unwrap();
    let (head, rest) = read_head(&mut socket).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A text frame without FIN, then empty continuations: a device that
    // kept sending them would have them gathered for ever.
    let mut first = client_frame(0x1, b"{");
    first[0] &= 0x7f;
    let mut continuation = client_frame(0x0, b"");
    continuation[0] &= 0x7f;
    let mut bytes = first;
    for _ in 0..5 {
        bytes.extend_from_slice(&continuation);
    }
    socket.write_all(&bytes).await.unwrap();
    let mut buffered = rest;
    let close = frame_with_opcode(&mut socket, &mut buffered, 0x8).await;
    assert_eq!(
        u16::from_be_bytes([close[0], close[1]]),
        1003,
        "unsupported data"
    );
    assert!(String::from_utf8_lossy(&close[2..]).contains("fragmented"));

    // The device's other session still hears new mail.
    let message = message_to(&app, &[(&bob, &[0])], b"after", "all");
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);
    let notify = next_json(&mut honest, WITHIN).await;
    assert_eq!(notify["message"]["message_id"], message["message_id"]);
}
