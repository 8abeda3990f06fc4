//! Upgraded connections (the gateway's WebSocket) without actix-http's
//! HTTP/1 buffers.
//!
//! actix-http's dispatcher gives every connection an 8 KiB read and an
//! 8 KiB write buffer and keeps both for as long as the connection lives,
//! WebSocket included: two thirds of what an idle gateway session held.
//! So a request that asks to upgrade is handed here instead (actix-http's
//! upgrade hook) and still served by the same `App`: routing, middleware,
//! the token check, the handler and actix-ws all run as for any request.
//! Only the bytes move differently. The handler's payload reads the socket
//! through a buffer on the stack, and the response body is written to the
//! socket as it is produced, so an idle session holds no I/O buffer.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{Encoder, Framed};
use actix_http::error::PayloadError;
use actix_http::{h1, ConnectionType, Payload, Request, Response, StatusCode};
use actix_service::{fn_factory, fn_service, Service, ServiceFactory};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Most bytes one read takes off the socket. Devices send small control
/// frames (the session caps them at 4 KiB), so one read usually holds all
/// that is waiting.
const READ_CHUNK: usize = 4 * 1024;

/// The upgrade service for actix-http: each worker builds its own `App`
/// from `make_app` and serves upgrade requests with it. A write to the
/// peer that makes no progress for `write_stall` ends the connection, so
/// a client that stops reading cannot hold a session open.
pub fn service<F, A, S, B>(
    make_app: F,
    write_stall: Duration,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_web::Error,
    InitError = (),
>
where
    F: Fn() -> A + Clone + 'static,
    A: ServiceFactory<Request, Config = (), Service = S, InitError = ()> + 'static,
    S: Service<Request, Error = actix_web::Error> + 'static,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    fn_factory(move || {
        let factory = make_app();
        async move {
            let app = Rc::new(factory.new_service(()).await?);
            Ok(fn_service(
                move |(request, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                    let app = app.clone();
                    // The future below lives as long as the connection, so
                    // the answer's large, short-lived state (the request,
                    // the framed socket, the App's call) is boxed outside
                    // it: captured by it, they would keep their room in it
                    // after being moved on.
                    let upgrading =
                        Box::pin(async move { upgrade(&*app, request, framed, write_stall).await });
                    async move {
                        let upgraded = upgrading.await;
                        let ended = match upgraded {
                            Ok(Some((body, writer))) => relay(body, writer, write_stall).await,
                            Ok(None) => Ok(()),
                            Err(error) => Err(error),
                        };
                        if let Err(error) = ended {
                            tracing::debug!(%error, "upgraded connection ended");
                        }
                        Ok(())
                    }
                },
            ))
        }
    })
}

/// Has the App answer an upgrade request. A 101 is written and its body
/// (the WebSocket's frames) returned with the socket; anything else is
/// written whole and the connection closed.
async fn upgrade<S, B>(
    app: &S,
    request: Request,
    framed: Framed<TcpStream, h1::Codec>,
    write_stall: Duration,
) -> io::Result<Option<(BoxBody, OwnedWriteHalf)>>
where
    S: Service<Request, Error = actix_web::Error>,
    S::Response: Into<Response<B>>,
    B: MessageBody + 'static,
{
    let parts = framed.into_parts();
    let mut codec = parts.codec;
    // Bytes the client sent right behind its request (its first frames,
    // perhaps): the handler reads them first. Copied, so the dispatcher's
    // 8 KiB buffers are freed here rather than kept by a view into them.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop((parts.read_buf, parts.write_buf));
    let (reader, mut writer) = parts.io.into_split();
    let payload: actix_http::BoxedPayloadStream = Box::pin(SocketPayload { early, reader });
    let (request, _) = request.replace_payload(Payload::from(payload));
    let (head, body) = match app.call(request).await {
        Ok(response) => {
            let (head, body) = Into::<Response<B>>::into(response).into_parts();
            (head, body.boxed())
        }
        Err(error) => Response::from(error).into_parts(),
    };
    if head.status() != StatusCode::SWITCHING_PROTOCOLS {
        answer(&mut codec, &mut writer, head, body, write_stall).await?;
        return Ok(None);
    }
    let mut out = BytesMut::new();
    codec.encode(h1::Message::Item((head, body.size())), &mut out)?;
    write(&mut writer, &out, write_stall).await?;
    Ok(Some((body, writer)))
}

/// Carries an upgraded response's body to the socket until it ends.
async fn relay(mut body: BoxBody, mut writer: OwnedWriteHalf, stall: Duration) -> io::Result<()> {
    while let Some(chunk) = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
        let chunk = chunk.map_err(|error| io::Error::other(error.to_string()))?;
        write(&mut writer, &chunk, stall).await?;
    }
    writer.shutdown().await
}

/// Writes a response that did not upgrade, then closes the connection:
/// after an upgrade request, the rest of the stream is not HTTP.
async fn answer(
    codec: &mut h1::Codec,
    writer: &mut OwnedWriteHalf,
    mut head: Response<()>,
    mut body: BoxBody,
    write_stall: Duration,
) -> io::Result<()> {
    head.head_mut().set_connection_type(ConnectionType::Close);
    let mut out = BytesMut::new();
    codec.encode(h1::Message::Item((head, body.size())), &mut out)?;
    while let Some(chunk) = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
        let chunk = chunk.map_err(|error| io::Error::other(error.to_string()))?;
        codec.encode(h1::Message::Chunk(Some(chunk)), &mut out)?;
    }
    codec.encode(h1::Message::Chunk(None), &mut out)?;
    write(writer, &out, write_stall).await?;
    writer.shutdown().await
}

/// Writes all of `bytes`, failing once a write makes no progress for
/// `stall`: a slow reader may take long over a large chunk, one that
/// stopped reading may not.
async fn write(writer: &mut OwnedWriteHalf, mut bytes: &[u8], stall: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        let written = match tokio::time::timeout(stall, writer.write(bytes)).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer stopped reading",
                ))
            }
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[written..];
    }
    Ok(())
}

/// The request's payload: what arrived with the request, then the socket,
/// read through a buffer on the stack so nothing stays allocated while
/// the peer is quiet.
struct SocketPayload {
    early: Bytes,
    reader: OwnedReadHalf,
}

impl Stream for SocketPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.early.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut self.early))));
        }
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut storage);
        match Pin::new(&mut self.reader).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Poll::Ready(None),
            Poll::Ready(Ok(())) => Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(PayloadError::Io(error)))),
            Poll::Pending => Poll::Pending,
        }
    }
}
