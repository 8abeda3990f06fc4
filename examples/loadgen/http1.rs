//! A bare HTTP/1.1 keep-alive connection for the send loops.
//!
//! The load generator shares the machine's two cores with the daemons it
//! measures, so what it spends per request is taken from them. A general
//! client (connection pool, dispatch channels, header maps, URL parsing
//! per request) cost about twice what writing the request and reading the
//! status line does; this one writes each request in one call and reads
//! each answer whole (status, headers, `Content-Length` body) before the
//! next, as any keep-alive client would.

use std::io::{self, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

pub struct Connection {
    address: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    request: Vec<u8>,
}

impl Connection {
    /// A connection to `url` (`http://host:port`), opened on first use.
    pub fn new(url: &str) -> Self {
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        Self {
            address: address.to_string(),
            stream: None,
            buffer: Vec::with_capacity(4096),
            request: Vec::with_capacity(4096),
        }
    }

    /// POSTs `body` as JSON to `path` with `token`; returns the answer's
    /// status once its whole body has been read. On any error the
    /// connection is dropped and the next call opens a new one.
    pub async fn post_json(&mut self, path: &str, token: &str, body: &[u8]) -> io::Result<u16> {
        let answer = self.exchange(path, token, body).await;
        if answer.is_err() {
            self.stream = None;
        }
        answer
    }

    async fn exchange(&mut self, path: &str, token: &str, body: &[u8]) -> io::Result<u16> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect(&self.address).await?;
                stream.set_nodelay(true)?;
                self.stream.insert(stream)
            }
        };
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        stream.write_all(&self.request).await?;

        self.buffer.clear();
        let (status, head_len, body_len, close) = loop {
            if self.buffer.len() > MAX_HEAD {
                return Err(invalid("answer head too long"));
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
        };
        let mut remaining = (head_len + body_len).saturating_sub(self.buffer.len());
        while remaining > 0 {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk[..remaining.min(4096)]).await?;
            if read == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            remaining -= read;
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// (status, head length, body length, whether the server closes) once the
/// head is complete; `None` while more is needed.
fn parse_head(buffer: &[u8]) -> io::Result<Option<(u16, usize, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid("malformed answer head")),
    };
    let status = response.code.ok_or_else(|| invalid("no status"))?;
    let mut body_len = None;
    let mut close = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).map_err(|_| invalid("length"))?;
            body_len = Some(value.trim().parse().map_err(|_| invalid("length"))?);
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked answers are not read here"));
        }
    }
    let body_len = body_len.ok_or_else(|| invalid("answer without Content-Length"))?;
    Ok(Some((status, head_len, body_len, close)))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn a_head_is_read_once_complete() {
        let head = b"HTTP/1.1 202 Accepted\r\ncontent-length: 17\r\n\r\n{\"status\":\"ok\"}";
        assert_eq!(parse_head(&head[..20]).unwrap(), None);
        assert_eq!(parse_head(head).unwrap(), Some((202, 45, 17, false)));
        let closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_head(closing).unwrap(), Some((503, 59, 0, true)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }
}
