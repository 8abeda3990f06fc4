//! `GET /.well-known/homing/server`: a domain delegating its Homing service
//! to another host, as `{"homing.server": "host[:port]"}`.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL};
use reqwest::StatusCode;

use crate::address::ServerName;

/// The path of the delegation document.
pub const PATH: &str = "/.well-known/homing/server";
/// Largest document accepted; a delegation is a few dozen bytes.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// How long a delegation is trusted without `Cache-Control: max-age`.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds on the trust given to `max-age`: at least a few minutes so a
/// `no-cache` document is not fetched for every request, at most two days.
const MIN_TTL: Duration = Duration::from_secs(5 * 60);
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);

/// What the well-known fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WellKnown {
    /// A valid delegation, trusted for `ttl`.
    Delegated { server: ServerName, ttl: Duration },
    /// No document: the request failed or the answer was not 200.
    Absent(String),
    /// A 200 answer that is not a valid delegation.
    Invalid(String),
}

/// Fetches and checks the delegation document of `domain`. The client is
/// expected to carry the time-out and redirect limits.
pub(crate) async fn fetch(client: &reqwest::Client, scheme: &str, domain: &str) -> WellKnown {
    let url = format!("{scheme}://{domain}{PATH}");
    let mut response = match client
        .get(&url)
        .header(ACCEPT, "application/json")
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return WellKnown::Absent(error_chain(&error)),
    };
    if response.status() != StatusCode::OK {
        return WellKnown::Absent(format!("{url} answered {}", response.status()));
    }
    let ttl = ttl(response.headers());
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return WellKnown::Invalid(format!("the document is over {MAX_BODY_BYTES} bytes"));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_BODY_BYTES => {
                return WellKnown::Invalid(format!("the document is over {MAX_BODY_BYTES} bytes"))
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => return WellKnown::Absent(error_chain(&error)),
        }
    }
    match parse(&body) {
        Ok(server) => WellKnown::Delegated { server, ttl },
        Err(reason) => WellKnown::Invalid(reason),
    }
}

/// An error and its causes on one line: reqwest's own message alone rarely
/// says whether DNS, TCP or TLS failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The delegated server name in a document.
pub(crate) fn parse(body: &[u8]) -> Result<ServerName, String> {
    // A map rather than a derived struct: serde would also accept a JSON
    // array in place of the object. Other fields are ignored.
    let document: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON object: {e}"))?;
    let server = document
        .get("homing.server")
        .and_then(serde_json::Value::as_str)
        .ok_or("\"homing.server\" is missing or not a string")?;
    ServerName::parse(server).map_err(|e| format!("\"homing.server\" is not a server name: {e}"))
}

/// How long the document may be trusted, from `Cache-Control`.
pub(crate) fn ttl(headers: &HeaderMap) -> Duration {
    let mut max_age = None;
    let directives = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for directive in directives {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return MIN_TTL;
        }
        if name.eq_ignore_ascii_case("max-age") && max_age.is_none() {
            // A malformed value counts as absent rather than as zero.
            max_age = value.trim().trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TTL)
        .clamp(MIN_TTL, MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn max_age_sets_the_ttl_within_bounds() {
        assert_eq!(ttl(&headers(&[])), DEFAULT_TTL);
        assert_eq!(
            ttl(&headers(&["public, max-age=3600"])),
            Duration::from_secs(3600)
        );
        assert_eq!(
            ttl(&headers(&["public", "MAX-AGE = \"7200\""])),
            Duration::from_secs(7200)
        );
        assert_eq!(ttl(&headers(&["max-age=999999999"])), MAX_TTL);
        assert_eq!(ttl(&headers(&["max-age=0"])), MIN_TTL);
        assert_eq!(ttl(&headers(&["max-age=60, no-store"])), MIN_TTL);
        assert_eq!(ttl(&headers(&["max-age=soon"])), DEFAULT_TTL);
    }

    #[test]
    fn documents_name_a_valid_server() {
        assert_eq!(
            parse(br#"{"homing.server": "HS.Example.org:8448", "other": 1}"#)
                .unwrap()
                .as_str(),
            "hs.example.org:8448"
        );
        assert_eq!(
            parse(br#"{"homing.server": "[::1]"}"#).unwrap().as_str(),
            "[::1]"
        );
        for bad in [
            &b"not json"[..],
            br#"{"m.server": "hs.example.org"}"#,
            br#"{"homing.server": 8448}"#,
            br#"{"homing.server": "hs.example.org:0"}"#,
            br#"{"homing.server": "https://hs.example.org"}"#,
            br#"["homing.server"]"#,
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
