//! One device's WebSocket session: heartbeats, events from the hub, and
//! limits on what the device may send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use futures_util::StreamExt;
use serde_json::json;

use super::hub::{GatewayEvent, Hub, SessionTicket};

/// Largest frame a device may send: it only ever sends small control frames.
const MAX_CLIENT_FRAME: usize = 4 * 1024;
/// Frames per second a device may send before it counts as a flood.
const MAX_CLIENT_FRAMES_PER_SEC: u32 = 20;

/// Heartbeat timing.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Until the session's token expires: the session ends then.
    pub token_expires_in: Duration,
}

fn close(code: CloseCode, description: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code,
        description: Some(description.to_string()),
    })
}

async fn send_event(session: &mut Session, event: &GatewayEvent) -> bool {
    match serde_json::to_string(event) {
        Ok(text) => session.text(text).await.is_ok(),
        Err(_) => false,
    }
}

/// Runs a session until the device leaves, stops answering, floods, or
/// cannot keep up with its events.
pub async fn run_session(
    hub: Arc<Hub>,
    mut ticket: SessionTicket,
    mut session: Session,
    stream: actix_ws::MessageStream,
    config: SessionConfig,
    initial: Vec<GatewayEvent>,
) {
    let mut stream = stream
        .max_frame_size(MAX_CLIENT_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_CLIENT_FRAME);
    // The greeting and the closing run once each, in futures of their own
    // on the heap: inline, their state would stay in this future, which
    // lives as long as the session (a JSON map did, once).
    let mut alive = Box::pin(greet(&mut session, ticket.id, &config, initial)).await;
    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    ticker.tick().await;
    let token_expiry = tokio::time::sleep(config.token_expires_in);
    tokio::pin!(token_expiry);
    let mut last_heard = Instant::now();
    let mut window = (Instant::now(), 0u32);
    let reason = loop {
        if !alive {
            break None;
        }
        tokio::select! {
            frame = stream.next() => {
                let now = Instant::now();
                if now.duration_since(window.0) >= Duration::from_secs(1) {
                    window = (now, 0);
                }
                window.1 += 1;
                if window.1 > MAX_CLIENT_FRAMES_PER_SEC {
                    break close(CloseCode::Policy, "too many frames");
                }
                match frame {
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        last_heard = now;
                        alive = Box::pin(session.pong(&bytes)).await.is_ok();
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => last_heard = now,
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        last_heard = now;
                        if text.contains("\"HEARTBEAT\"") {
                            alive = Box::pin(session.text(r#"{"type":"HEARTBEAT_ACK"}"#)).await.is_ok();
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        break close(CloseCode::Unsupported, "binary frames are not used");
                    }
                    Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                    Some(Err(_)) => break close(CloseCode::Size, "invalid or oversized frame"),
                }
            }
            event = ticket.events.recv() => match event {
                Some(frame) => alive = Box::pin(session.text(frame)).await.is_ok(),
                None if ticket.revoked.load(std::sync::atomic::Ordering::Acquire) => {
                    break close(CloseCode::Policy, "the token was revoked");
                }
                None => break close(CloseCode::Again, "too slow: reconnect and resume"),
            },
            _ = &mut token_expiry => break close(CloseCode::Policy, "the token expired"),
            _ = ticker.tick() => {
                if last_heard.elapsed() > config.heartbeat_timeout {
                    break close(CloseCode::Away, "heartbeat timeout");
                }
                alive = Box::pin(session.ping(b"")).await.is_ok();
            }
        }
    };
    hub.unregister(ticket.device_row, ticket.id);
    let _ = Box::pin(session.close(reason)).await;
}

/// `HELLO`, then the events the device missed; false when the device is
/// gone.
async fn greet(
    session: &mut Session,
    session_id: u64,
    config: &SessionConfig,
    initial: Vec<GatewayEvent>,
) -> bool {
    let hello = json!({
        "type": "HELLO",
        "session_id": session_id,
        "heartbeat_interval_ms": config.heartbeat_interval.as_millis() as u64,
    })
    .to_string();
    let mut alive = session.text(hello).await.is_ok();
    for event in initial {
        alive = alive && send_event(session, &event).await;
    }
    alive
}
