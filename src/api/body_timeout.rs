//! A deadline for request bodies. actix-http cuts off a client that is
//! slow to send a request's head (`server.client_timeout`), but once the
//! head is in, a body is awaited for as long as the connection lives: a
//! stranger announcing `Content-Length: 1000000` and sending nothing held
//! a connection and a worker's attention for minutes. This middleware
//! wraps every request's payload so that reading it fails once the body
//! is late, and answers such a request `408 request_timeout`.
//!
//! Late means: after `server.body_timeout`, plus the time the bytes that
//! did arrive need at `MIN_BODY_RATE`. A large body on a slow but honest
//! link keeps earning time; a trickle does not.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::PayloadError;
use actix_http::{ConnectionType, Payload};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::api::error::ApiError;

/// Bytes per second a body earns extra time at, beyond the grace period.
pub const MIN_BODY_RATE: u64 = 16 * 1024;

/// Routes whose payload is a long-lived stream, not a request body: the
/// gateway's WebSocket frames arrive through it for the session's life.
const STREAMING_ROUTES: [&str; 1] = ["/api/v1/gateway"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Reading,
    Finished,
    TimedOut,
}

/// Middleware: applies `grace` (from `server.body_timeout`) to the body of
/// every request that has one.
pub async fn body_deadline<B: MessageBody + 'static>(
    grace: Duration,
    mut request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let streaming = request
        .match_pattern()
        .is_some_and(|pattern| STREAMING_ROUTES.contains(&pattern.as_str()));
    let payload = request.parts_mut().1;
    if streaming || matches!(payload, Payload::None) {
        return next.call(request).await.map(|r| r.map_into_left_body());
    }
    let state = Rc::new(Cell::new(BodyState::Reading));
    let timed = TimedPayload {
        inner: payload.take(),
        sleep: None,
        started: Instant::now(),
        grace,
        received: 0,
        state: state.clone(),
    };
    *payload = Payload::from(Box::pin(timed) as actix_http::BoxedPayloadStream);
    let response = next.call(request).await?;
    match state.get() {
        BodyState::Finished => Ok(response.map_into_left_body()),
        BodyState::TimedOut => {
            let error = ApiError::RequestTimeout {
                message: "the request body did not arrive in time".into(),
                limit_secs: grace.as_secs().max(1),
            };
            let (request, _) = response.into_parts();
            let mut response = ServiceResponse::from_err(error, request);
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            Ok(response.map_into_right_body())
        }
        BodyState::Reading => {
            // Answered before the body was read to its end: the rest would
            // have to be received and thrown away before the next request,
            // at the sender's pace. Closing is cheaper and cannot be held.
            let mut response = response;
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            Ok(response.map_into_left_body())
        }
    }
}

/// A payload that fails once its deadline passes.
struct TimedPayload {
    inner: Payload,
    /// Created on the first read that has to wait, so requests whose body
    /// is already buffered never arm a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    started: Instant,
    grace: Duration,
    received: u64,
    state: Rc<Cell<BodyState>>,
}

impl TimedPayload {
    fn deadline(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / MIN_BODY_RATE as f64);
        self.started + self.grace + earned
    }
}

impl Stream for TimedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.state.get() == BodyState::TimedOut {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received = this.received.saturating_add(chunk.len() as u64);
                let deadline = this.deadline();
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.state.set(BodyState::Finished);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Pending => {
                let deadline = this.deadline();
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.state.set(BodyState::TimedOut);
                        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body did not arrive in time",
                        )))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
