//! The request side of a signature: the values of the components it covers
//! (RFC 9421 §2.1 and §2.2).

use super::{SignatureError, MAX_HEADER_LEN};

/// The parts of an HTTP request a signature can cover.
#[derive(Debug, Clone)]
pub struct RequestParts {
    method: String,
    target_uri: String,
    scheme: String,
    authority: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

impl RequestParts {
    /// A request for `method` on the absolute `target_uri`, with no headers yet.
    ///
    /// Every derived component is normalised as RFC 3986 §6.2.3 says: scheme
    /// and host lower-cased, the scheme's default port left out, an empty
    /// path made `/`. So `@target-uri` is the same string whether it was
    /// built from the sender's URL or from the receiver's `Host` header; a
    /// signer sends its request to [`RequestParts::target_uri`].
    pub fn new(method: &str, target_uri: &str) -> Result<Self, SignatureError> {
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(SignatureError::InvalidMethod);
        }
        let bad = || SignatureError::InvalidTargetUri;
        // No spaces, controls, non-ASCII or fragments: none belong in a target.
        if target_uri.len() > MAX_HEADER_LEN
            || !target_uri
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'#')
        {
            return Err(bad());
        }
        let (scheme, rest) = target_uri.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad()),
        };
        let (authority, path_and_query) =
            rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (path_and_query, None),
        };
        let authority = normalise_authority(authority, default_port).ok_or_else(bad)?;
        let path = if path.is_empty() { "/" } else { path }.to_owned();
        let target_uri = match &query {
            Some(query) => format!("{scheme}://{authority}{path}?{query}"),
            None => format!("{scheme}://{authority}{path}"),
        };
        Ok(Self {
            method: method.to_owned(),
            target_uri,
            scheme,
            authority,
            path,
            query,
            headers: Vec::new(),
        })
    }

    /// The normalised absolute URI: what `@target-uri` covers, and so the
    /// URI a signed request must be sent to.
    pub fn target_uri(&self) -> &str {
        &self.target_uri
    }

    /// The normalised `host[:port]`: what `@authority` covers, and so the
    /// `Host` header a signed request carries.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Adds one header field line; repeat the call for repeated fields.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The value of one component identifier, as it appears in the signature base.
    pub fn component_value(&self, component: &str) -> Result<String, SignatureError> {
        let query = self.query.as_deref();
        Ok(match component {
            "@method" => self.method.clone(),
            "@target-uri" => self.target_uri.clone(),
            "@authority" => self.authority.clone(),
            "@scheme" => self.scheme.clone(),
            "@path" => self.path.clone(),
            "@query" => format!("?{}", query.unwrap_or("")),
            "@request-target" => match query {
                Some(q) => format!("{}?{q}", self.path),
                None => self.path.clone(),
            },
            // Field names in identifiers are lower case (RFC 9421 §2.1).
            name if !name.is_empty()
                && name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase()) =>
            {
                let mut values = Vec::new();
                for (_, value) in self.headers.iter().filter(|(n, _)| n == name) {
                    // A line break would let a value forge further lines of the base.
                    if !value
                        .bytes()
                        .all(|b| b == b'\t' || (0x20..=0x7e).contains(&b))
                    {
                        return Err(SignatureError::InvalidComponentValue(name.to_owned()));
                    }
                    values.push(value.trim_matches([' ', '\t']));
                }
                if values.is_empty() {
                    return Err(SignatureError::MissingComponent(name.to_owned()));
                }
                values.join(", ")
            }
            other => return Err(SignatureError::UnsupportedComponent(other.to_owned())),
        })
    }
}

/// `host[:port]` with the host lower-cased and the scheme's default port
/// dropped (RFC 9421 §2.2.3). Userinfo and anything but DNS names and IP
/// literals are refused: federation peers are addressed by server name.
fn normalise_authority(authority: &str, default_port: u16) -> Option<String> {
    let (host, port) = if authority.starts_with('[') {
        let (host, rest) = authority.split_at(authority.find(']')? + 1);
        let literal = host.get(1..host.len() - 1)?;
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (
            host,
            if rest.is_empty() {
                None
            } else {
                Some(rest.strip_prefix(':')?)
            },
        )
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return None;
        }
        (host, port)
    };
    let mut out = host.to_ascii_lowercase();
    // An empty port means the default one (RFC 3986 §3.2.3).
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        if port != default_port {
            out.push_str(&format!(":{port}"));
        }
    }
    Some(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SignatureError::*;

    #[test]
    fn derived_and_field_components() {
        let uri = "https://WWW.Example.com:443/path?param=value&foo=bar";
        let r = RequestParts::new("POST", uri)
            .unwrap()
            .with_header("X-Multi", " a ")
            .with_header("x-multi", "b\t")
            .with_header("X-Empty", "");
        let v = |c| r.component_value(c).unwrap();
        assert_eq!(v("@method"), "POST");
        assert_eq!(
            v("@target-uri"),
            "https://www.example.com/path?param=value&foo=bar"
        );
        assert_eq!(v("@authority"), "www.example.com");
        assert_eq!(v("@scheme"), "https");
        assert_eq!(v("@path"), "/path");
        assert_eq!(v("@query"), "?param=value&foo=bar");
        assert_eq!(v("@request-target"), "/path?param=value&foo=bar");
        assert_eq!(v("x-multi"), "a, b");
        assert_eq!(v("x-empty"), "");

        let bare = RequestParts::new("GET", "HTTP://Example.com:8080").unwrap();
        let v = |c| bare.component_value(c).unwrap();
        assert_eq!(v("@target-uri"), "http://example.com:8080/");
        assert_eq!(v("@authority"), "example.com:8080");
        assert_eq!(v("@scheme"), "http");
        assert_eq!(v("@path"), "/");
        assert_eq!(v("@query"), "?");
        assert_eq!(v("@request-target"), "/");
        let v6 = RequestParts::new("GET", "http://[::1]:80/x").unwrap();
        assert_eq!(v6.component_value("@authority").unwrap(), "[::1]");
        let empty_port = RequestParts::new("GET", "https://example.com:/").unwrap();
        assert_eq!(
            empty_port.component_value("@authority").unwrap(),
            "example.com"
        );
    }

    /// What a sender builds from its base URL and what a receiver builds
    /// from `Host` must be one string, or every signature fails.
    #[test]
    fn sender_and_receiver_spellings_give_one_target_uri() {
        let same = [
            (
                "https://b.example:443/federation/v1/txn/1",
                "https://b.example/federation/v1/txn/1",
            ),
            (
                "HTTPS://B.Example:443/federation/v1/txn/1",
                "https://b.example/federation/v1/txn/1",
            ),
            ("https://b.example:/x?y=1", "https://b.example/x?y=1"),
            ("http://127.0.0.2:80/x", "http://127.0.0.2/x"),
            ("http://127.0.0.2:443/x", "http://127.0.0.2:443/x"),
            ("https://[::1]:443/x", "https://[::1]/x"),
            ("https://b.example:8448", "https://b.example:8448/"),
        ];
        for (sent, canonical) in same {
            let parts = RequestParts::new("PUT", sent).unwrap();
            assert_eq!(parts.target_uri(), canonical, "{sent}");
            assert_eq!(
                parts.component_value("@target-uri").unwrap(),
                canonical,
                "{sent}"
            );
            // The receiver's rebuilt URI normalises to the same string.
            let again = RequestParts::new("PUT", canonical).unwrap();
            assert_eq!(again.target_uri(), canonical);
            assert_eq!(again.authority(), parts.authority());
        }
        // A port that is not the scheme's default stays: it names another server.
        let other = RequestParts::new("PUT", "https://b.example:8443/x").unwrap();
        assert_eq!(other.target_uri(), "https://b.example:8443/x");
        assert_eq!(other.authority(), "b.example:8443");
        // The path is not rewritten: percent-encoding stays as sent.
        let encoded = RequestParts::new("GET", "https://b.example/a%2Fb").unwrap();
        assert_eq!(encoded.target_uri(), "https://b.example/a%2Fb");
    }

    #[test]
    fn refuses_what_it_cannot_sign() {
        let r = RequestParts::new("GET", "https://example.com/").unwrap();
        assert_eq!(
            r.component_value("date"),
            Err(MissingComponent("date".into()))
        );
        for name in [
            "@status",
            "@signature-params",
            "@query-param",
            "Date",
            "",
            "a b",
        ] {
            assert_eq!(
                r.component_value(name),
                Err(UnsupportedComponent(name.into()))
            );
        }
        let injected = r.with_header("x-evil", "a\n\"@method\": GET");
        let refused = Err(InvalidComponentValue("x-evil".into()));
        assert_eq!(injected.component_value("x-evil"), refused);

        let bad_uris = "ftp://example.com/ //example.com/ /relative https:// https:///path \
            https://user@example.com/ https://example.com/a#frag https://example.com:99999/ \
            https://example.com:x/ https://[::1/ https://[::1]x/ https://[]/ https://a:1:2/ \
            https://exämple.com/ https://exa%20mple.com/";
        for uri in bad_uris.split(' ').chain(["https://exa mple.com/"]) {
            assert_eq!(
                RequestParts::new("GET", uri).err(),
                Some(InvalidTargetUri),
                "{uri}"
            );
        }
        for method in ["", "GE T", "GET\r\n"] {
            assert_eq!(
                RequestParts::new(method, "https://example.com/").err(),
                Some(InvalidMethod)
            );
        }
    }
}
