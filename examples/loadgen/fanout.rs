//! `fanout`: many idle gateway sessions, then one message that every one
//! of them is told about.
//!
//! The sessions are bare WebSockets on tokio's sockets (the handshake
//! written by hand, frames read as bytes) rather than the client
//! library's: the load generator shares the two cores with the daemon,
//! and a full WebSocket client per session spent several times the
//! daemon's CPU reading 10,000 frames, which delayed the daemon too.
//!
//! Two times are taken per session: when the frame reached the socket
//! (the kernel's receive timestamp, `SO_TIMESTAMPNS`, which is the
//! daemon's notification latency whatever the load generator is doing)
//! and when the load generator read it (which adds its own scheduling on
//! the shared cores).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::daemon::{cpu_ms, rss_kib, start, user};
use crate::scenarios::{percentile, post_send, Outgoing};

/// Longest answer head (the 101 and its headers) accepted.
const MAX_HEAD: usize = 4096;

pub async fn fanout(postgres: Option<&str>, connections: usize) -> anyhow::Result<Value> {
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let bob = user(&daemon, "bob", 1).await?;
    let pid = daemon.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid).unwrap_or(0);
    let address = daemon.url.trim_start_matches("http://");
    let sessions = open_sessions(address, &bob.tokens[0], connections).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid).unwrap_or(0);
    let readers = spawn_readers(sessions, Duration::from_secs(30));
    let (_, request) = Outgoing::to(&bob).message();
    let http = reqwest::Client::new();
    let send_url = format!("{}/api/v1/dms/send", daemon.url);
    let (daemon_cpu, own_cpu) = (cpu_ms(pid), cpu_ms(0));
    let sent_at = SystemTime::now();
    post_send(&http, &send_url, &alice.tokens[0], request)
        .send()
        .await?;
    let (arrived, read, open) = gather(readers, sent_at).await;
    let spent = |now: Option<f64>, then: Option<f64>| now.zip(then).map(|(now, then)| now - then);
    let daemon_cpu_ms = spent(cpu_ms(pid), daemon_cpu);
    let loadgen_cpu_ms = spent(cpu_ms(0), own_cpu);
    drop(open);
    let mut result = figures(connections, (before, after), arrived, read)?;
    // Where the cycles of the notification went (10 ms ticks).
    result["daemon_cpu_ms"] = json!(daemon_cpu_ms);
    result["loadgen_cpu_ms"] = json!(loadgen_cpu_ms);
    Ok(result)
}

/// `count` sessions on `address`, opened one after another.
pub async fn open_sessions(
    address: &str,
    token: &str,
    count: usize,
) -> anyhow::Result<Vec<(TcpStream, Vec<u8>)>> {
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        match open_session(address, token).await {
            Ok(session) => sessions.push(session),
            Err(error) => anyhow::bail!(
                "connection {} failed: {error} (raise `ulimit -n`)",
                sessions.len()
            ),
        }
    }
    Ok(sessions)
}

/// What a session's reader hands back: when its notification reached the
/// socket and when it was read here, and the socket itself.
type Heard = (Option<(SystemTime, SystemTime)>, TcpStream);

/// One task per session, parked before the send, waiting up to `within`
/// for its notification. Each hands its socket back rather than closing
/// it: sessions hanging up while the rest are still being notified would
/// measure the daemon's teardown too.
pub fn spawn_readers(
    sessions: Vec<(TcpStream, Vec<u8>)>,
    within: Duration,
) -> Vec<JoinHandle<Heard>> {
    sessions
        .into_iter()
        .map(|(socket, after_hello)| {
            tokio::spawn(async move {
                let times =
                    tokio::time::timeout(within, read_notification(&socket, after_hello)).await;
                (times.ok().and_then(Result::ok), socket)
            })
        })
        .collect()
}

/// The readers' times in milliseconds since `sent_at` (at the socket, and
/// read here), and their sockets, still open.
pub async fn gather(
    readers: Vec<JoinHandle<Heard>>,
    sent_at: SystemTime,
) -> (Vec<f64>, Vec<f64>, Vec<TcpStream>) {
    let since_send =
        |at: SystemTime| at.duration_since(sent_at).unwrap_or_default().as_secs_f64() * 1000.0;
    let mut arrived = Vec::with_capacity(readers.len());
    let mut read = Vec::with_capacity(readers.len());
    let mut open = Vec::with_capacity(readers.len());
    for reader in readers {
        if let Ok((times, socket)) = reader.await {
            if let Some((in_kernel, by_reader)) = times {
                arrived.push(since_send(in_kernel));
                read.push(since_send(by_reader));
            }
            open.push(socket);
        }
    }
    (arrived, read, open)
}

/// The figures every `fanout` prints, from the daemons' RSS before and
/// after the sessions opened and the notification times.
pub fn figures(
    connections: usize,
    (before, after): (u64, u64),
    mut arrived: Vec<f64>,
    mut read: Vec<f64>,
) -> anyhow::Result<Value> {
    // A session that heard nothing is a lost notification, not a figure.
    anyhow::ensure!(
        arrived.len() == connections,
        "{} of {connections} sessions were notified",
        arrived.len()
    );
    let per_connection = after.saturating_sub(before) as f64 / connections.max(1) as f64;
    Ok(json!({
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_per_connection_kib": (per_connection * 100.0).round() / 100.0,
        "notified": arrived.len(),
        // When the frame reached each session's socket.
        "notify_p50_ms": percentile(&mut arrived, 0.50),
        "notify_p99_ms": percentile(&mut arrived, 0.99),
        "notify_max_ms": percentile(&mut arrived, 1.0),
        // When the load generator got round to reading it.
        "read_p50_ms": percentile(&mut read, 0.50),
        "read_p99_ms": percentile(&mut read, 0.99),
    }))
}

/// A gateway session: the upgrade written by hand, its `101` and the
/// `HELLO` frame read, and the socket set to timestamp what it receives.
async fn open_session(address: &str, token: &str) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut socket = TcpStream::connect(address).await?;
    let request = format!(
        "GET /api/v1/gateway HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut received = Vec::with_capacity(512);
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        anyhow::ensure!(received.len() < MAX_HEAD, "the answer's head is too long");
        if socket.read_buf(&mut received).await? == 0 {
            anyhow::bail!("the daemon closed the connection during the upgrade");
        }
    };
    anyhow::ensure!(
        received.starts_with(b"HTTP/1.1 101"),
        "no upgrade: {}",
        String::from_utf8_lossy(&received[..head_end.min(80)])
    );
    let mut frames = received.split_off(head_end);
    let hello_end = loop {
        if let Some((_, hello, end)) = first_frame(&frames) {
            anyhow::ensure!(
                contains(hello, br#""type":"HELLO""#),
                "the first frame is not HELLO"
            );
            break end;
        }
        if socket.read_buf(&mut frames).await? == 0 {
            anyhow::bail!("the daemon closed the connection before HELLO");
        }
    };
    timestamp_receipts(&socket)?;
    // Whatever came behind HELLO is the start of the next frame.
    Ok((socket, frames.split_off(hello_end)))
}

fn timestamp_receipts(socket: &TcpStream) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and an option value of the size
    // given, which lives across the call.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits for the `DM_NOTIFY` frame; returns when the kernel received it
/// and when it was read here. Other frames (a heartbeat's ping) are
/// skipped.
async fn read_notification(
    socket: &TcpStream,
    mut frames: Vec<u8>,
) -> io::Result<(SystemTime, SystemTime)> {
    loop {
        socket.readable().await?;
        let received = socket.try_io(Interest::READABLE, || receive(socket, &mut frames));
        let in_kernel = match received {
            Ok(Some(at)) => at,
            Ok(None) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        };
        let read = SystemTime::now();
        if text_frames(&frames)
            .iter()
            .any(|text| contains(text, br#""type":"DM_NOTIFY""#))
        {
            return Ok((in_kernel, read));
        }
    }
}

/// One `recvmsg` onto the end of `frames`; the receive timestamp of the
/// data read, or `None` at the end of the stream.
fn receive(socket: &TcpStream, frames: &mut Vec<u8>) -> io::Result<Option<SystemTime>> {
    let mut data = [0u8; 4096];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to buffers
    // that outlive the call, with their lengths.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above; the descriptor is the socket's.
    let read = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_DONTWAIT) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    if read == 0 {
        return Ok(None);
    }
    frames.extend_from_slice(&data[..read as usize]);
    let mut at = None;
    // SAFETY: the control buffer was filled by the kernel and its length
    // set in the header; the CMSG macros walk it within that length.
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(&header);
        while !message.is_null() {
            if (*message).cmsg_level == libc::SOL_SOCKET
                && (*message).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let time: libc::timespec =
                    std::ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                at = Some(
                    SystemTime::UNIX_EPOCH + Duration::new(time.tv_sec as u64, time.tv_nsec as u32),
                );
            }
            message = libc::CMSG_NXTHDR(&header, message);
        }
    }
    at.map(Some)
        .ok_or_else(|| io::Error::other("no receive timestamp: SO_TIMESTAMPNS not honoured"))
}

fn contains(text: &[u8], needle: &[u8]) -> bool {
    text.windows(needle.len()).any(|window| window == needle)
}

/// The first whole unmasked frame at the start of `bytes`: its opcode,
/// its payload, and the length of the frame.
fn first_frame(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (length, header): (usize, usize) = match *bytes.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize,
            4,
        ),
        127 => {
            let length: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(length)).ok()?, 10)
        }
        short => (short as usize, 2),
    };
    let end = header.checked_add(length)?;
    Some((bytes[0] & 0x0f, bytes.get(header..end)?, end))
}

/// The payloads of the whole text frames at the start of `bytes`.
fn text_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let Some((opcode, payload, end)) = first_frame(rest) {
        if opcode == 0x1 {
            frames.push(payload);
        }
        rest = &rest[end..];
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::text_frames;

    #[test]
    fn whole_text_frames_are_found_and_others_skipped() {
        // A length that would overflow is not a frame.
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(text_frames(&huge).is_empty());

        let mut bytes = vec![0x89, 0x00]; // a ping
        bytes.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
        let long = vec![b'x'; 300];
        bytes.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        bytes.extend_from_slice(&long);
        bytes.extend_from_slice(&[0x81, 0x05, b'p']); // cut short
        assert_eq!(text_frames(&bytes), vec![&b"hi"[..], &long[..]]);
    }
}
