//! One device's WebSocket session: heartbeats, events from the hub, and
//! limits on what the device may send.
//!
//! The session is the body of the `101 Switching Protocols` answer: the
//! connection's task polls it for the bytes to write, and each poll reads
//! what the device sent, takes the hub's frames and checks the timers. So
//! a session is one task, with no channel between it and its socket. (A
//! session task beside the connection's, talking to it through actix-ws's
//! channel, held about 3.5 KiB more per idle session and cost a second
//! wake-up per frame; see BENCHMARKS.md, `fanout`.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::Encoder;
use actix_http::ws::{Codec, Message};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use actix_ws::{CloseCode, CloseReason, MessageStream};
use futures_util::Stream;
use serde_json::json;
use tokio::time::{Instant, Sleep};

use super::hub::{frame, GatewayEvent, Hub, SessionTicket};

/// Largest frame a device may send: it only ever sends small control frames.
const MAX_CLIENT_FRAME: usize = 4 * 1024;
/// Frames per second a device may send before it counts as a flood.
const MAX_CLIENT_FRAMES_PER_SEC: u32 = 20;
/// Bytes of frames encoded before they are handed to the socket: the hub's
/// queue may hold many large frames, and they are copied out in pieces.
const WRITE_CHUNK: usize = 64 * 1024;

/// Heartbeat timing.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Until the session's token expires: the session ends then.
    pub token_expires_in: Duration,
}

/// Why a session ends: the close frame's reason, if any.
type Ending = Option<CloseReason>;

fn close(code: CloseCode, description: &str) -> Ending {
    Some(CloseReason {
        code,
        description: Some(description.to_string()),
    })
}

/// A session, as the stream of bytes the server writes to the device.
/// It ends after its close frame, when the device leaves, stops
/// answering, floods, or cannot keep up with its events; dropped early
/// (the socket failed), it leaves the hub all the same.
pub struct SessionBody {
    hub: Arc<Hub>,
    ticket: SessionTicket,
    incoming: MessageStream,
    codec: Codec,
    /// Encoded frames not yet handed to the socket.
    out: BytesMut,
    /// The next heartbeat tick or the token's expiry, whichever is first.
    timer: Pin<Box<Sleep>>,
    next_tick: Instant,
    token_expiry: Instant,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    last_heard: Instant,
    /// Frames the device sent in the current one-second window.
    window: (Instant, u32),
    /// The close frame is encoded and the hub left: only `out` remains.
    closed: bool,
}

impl SessionBody {
    /// A session that greets the device with `HELLO`, then `initial` (the
    /// events it missed).
    pub fn new(
        hub: Arc<Hub>,
        ticket: SessionTicket,
        stream: actix_ws::MessageStream,
        config: SessionConfig,
        initial: Vec<GatewayEvent>,
    ) -> Self {
        // Frames are taken one by one, not aggregated: a device sends
        // small whole frames, and an aggregator would gather an endless
        // run of empty continuation frames without counting them.
        let incoming = stream.max_frame_size(MAX_CLIENT_FRAME);
        let now = Instant::now();
        let next_tick = now + config.heartbeat_interval;
        let token_expiry = now + config.token_expires_in;
        let mut session = SessionBody {
            hub,
            ticket,
            incoming,
            codec: Codec::new(),
            out: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep_until(next_tick.min(token_expiry))),
            next_tick,
            token_expiry,
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            last_heard: now,
            window: (now, 0),
            closed: false,
        };
        let hello = json!({
            "type": "HELLO",
            "session_id": session.ticket.id,
            "heartbeat_interval_ms": config.heartbeat_interval.as_millis() as u64,
        })
        .to_string();
        session.send(Message::Text(hello.into()));
        for frame in initial.iter().filter_map(frame) {
            session.send(Message::Text(frame));
        }
        session
    }

    fn send(&mut self, message: Message) {
        // The server's codec only fails on a frame larger than its limit,
        // which applies to frames it reads; what it writes is ours.
        if let Err(error) = self.codec.encode(message, &mut self.out) {
            tracing::error!(%error, "a gateway frame could not be encoded");
        }
    }

    /// Ends the session: leaves the hub and says why.
    fn end(&mut self, reason: Ending) {
        self.hub.unregister(self.ticket.device_row, self.ticket.id);
        self.send(Message::Close(reason));
        self.closed = true;
    }

    /// What the device sent, until it has nothing more; `Err` ends the
    /// session.
    fn read_device(&mut self, cx: &mut Context<'_>) -> Result<(), Ending> {
        while let Poll::Ready(frame) = Pin::new(&mut self.incoming).poll_next(cx) {
            let now = Instant::now();
            if now.duration_since(self.window.0) >= Duration::from_secs(1) {
                self.window = (now, 0);
            }
            self.window.1 += 1;
            if self.window.1 > MAX_CLIENT_FRAMES_PER_SEC {
                return Err(close(CloseCode::Policy, "too many frames"));
            }
            match frame {
                Some(Ok(Message::Ping(bytes))) => {
                    self.last_heard = now;
                    self.send(Message::Pong(bytes));
                }
                Some(Ok(Message::Pong(_))) => self.last_heard = now,
                Some(Ok(Message::Text(text))) => {
                    self.last_heard = now;
                    if text.contains("\"HEARTBEAT\"") {
                        self.send(Message::Text(r#"{"type":"HEARTBEAT_ACK"}"#.into()));
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    return Err(close(CloseCode::Unsupported, "binary frames are not used"));
                }
                Some(Ok(Message::Continuation(_))) => {
                    return Err(close(
                        CloseCode::Unsupported,
                        "fragmented frames are not used",
                    ));
                }
                Some(Ok(Message::Nop)) => {}
                Some(Ok(Message::Close(_))) | None => return Err(None),
                Some(Err(_)) => return Err(close(CloseCode::Size, "invalid or oversized frame")),
            }
        }
        Ok(())
    }

    /// The hub's frames, up to a chunk's worth; `Err` ends the session.
    fn take_events(&mut self, cx: &mut Context<'_>) -> Result<(), Ending> {
        while self.out.len() < WRITE_CHUNK {
            match self.ticket.events.poll_recv(cx) {
                Poll::Ready(Some(frame)) => self.send(Message::Text(frame)),
                Poll::Ready(None) if self.ticket.revoked.load(Ordering::Acquire) => {
                    return Err(close(CloseCode::Policy, "the token was revoked"));
                }
                Poll::Ready(None) => {
                    return Err(close(CloseCode::Again, "too slow: reconnect and resume"))
                }
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Heartbeats and the token's expiry; `Err` ends the session.
    fn check_timers(&mut self, cx: &mut Context<'_>) -> Result<(), Ending> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= self.token_expiry {
                return Err(close(CloseCode::Policy, "the token expired"));
            }
            if now >= self.next_tick {
                if now.duration_since(self.last_heard) > self.heartbeat_timeout {
                    return Err(close(CloseCode::Away, "heartbeat timeout"));
                }
                self.send(Message::Ping(Bytes::new()));
                self.next_tick = now + self.heartbeat_interval;
            }
            let deadline = self.next_tick.min(self.token_expiry);
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    fn poll_open(&mut self, cx: &mut Context<'_>) -> Result<(), Ending> {
        self.read_device(cx)?;
        self.take_events(cx)?;
        self.check_timers(cx)
    }
}

impl MessageBody for SessionBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if !this.closed {
            if let Err(reason) = this.poll_open(cx) {
                this.end(reason);
            }
        }
        if !this.out.is_empty() {
            // Taken whole, so an idle session keeps no buffer.
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.out).freeze())));
        }
        if this.closed {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

impl Drop for SessionBody {
    fn drop(&mut self) {
        if !self.closed {
            self.hub.unregister(self.ticket.device_row, self.ticket.id);
        }
    }
}
