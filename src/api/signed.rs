//! The extractor that verifies a server-to-server request (RFC 9421 with
//! Homing's profile), so a federation handler only ever sees a verified
//! origin and a body that matches its digest.

use actix_web::dev::Payload;
use actix_web::web::Bytes;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use crate::address::ServerName;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::federation::nonces;
use crate::federation::signing::{self, RequestParts};
use crate::federation::{policy, wire::MAX_TXN_REQUEST_BYTES};

/// A request whose signature, origin and body were verified.
pub struct SignedRequest {
    pub origin: ServerName,
    pub body: Bytes,
}

fn refuse(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Unauthorized {
        code,
        message: message.into(),
    }
}

fn header(request: &HttpRequest, name: &str) -> Option<String> {
    let values: Vec<&str> = request
        .headers()
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

impl FromRequest for SignedRequest {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let request = request.clone();
        let body = web::Bytes::from_request(&request, payload);
        Box::pin(async move {
            let state = request
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            let body = body.await.map_err(|_| ApiError::PayloadTooLarge {
                message: format!("a federation request is at most {MAX_TXN_REQUEST_BYTES} bytes"),
                limit: MAX_TXN_REQUEST_BYTES as u64,
            })?;
            verify(&state, &request, body).await
        })
    }
}

async fn verify(
    state: &AppState,
    request: &HttpRequest,
    body: Bytes,
) -> Result<SignedRequest, ApiError> {
    let settings = &state.settings;
    // The authority the sender signed must be one of ours.
    let host = header(request, "host").ok_or_else(|| refuse("misaddressed", "no Host header"))?;
    let addressed =
        ServerName::parse(&host).map_err(|_| refuse("misaddressed", "invalid Host header"))?;
    let scheme = if settings.federation.allow_insecure_http {
        "http"
    } else {
        "https"
    };
    let ours = |name: &ServerName| addresses_us(name, &addressed, scheme);
    if !ours(&settings.server_name) && !settings.public_hosts.iter().any(ours) {
        return Err(ApiError::forbidden(
            "misaddressed",
            "this request was addressed to another server",
        ));
    }
    // Rebuilt from `Host` as received; `RequestParts` normalises it the
    // way the sender normalised the URI it signed and sent to.
    let target = format!(
        "{scheme}://{host}{}",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let signature_input = header(request, "signature-input")
        .ok_or_else(|| refuse("unsigned", "missing Signature-Input"))?;
    let signature =
        header(request, "signature").ok_or_else(|| refuse("unsigned", "missing Signature"))?;
    let digest = header(request, "content-digest")
        .ok_or_else(|| refuse("unsigned", "missing Content-Digest"))?;
    let received = signing::parse_signatures(&signature_input, &signature)
        .map_err(|e| refuse("bad_signature", e.to_string()))?;
    let first = received
        .first()
        .ok_or_else(|| refuse("unsigned", "no signature"))?;
    let now_secs = crate::time::now_ms() / 1000;
    let keyid = signing::check_profile(&first.params, now_secs)
        .map_err(|e| refuse("bad_signature", e.to_string()))?;
    let (origin_text, key_id) = keyid
        .rsplit_once('#')
        .ok_or_else(|| refuse("bad_signature", "keyid must be <server>#<key id>"))?;
    let origin = ServerName::parse(origin_text)
        .map_err(|_| refuse("bad_signature", "invalid origin in keyid"))?;
    let key_id = key_id.to_string();
    // Every check that needs no key comes before the key lookup, so a
    // request a stranger made up cannot make this server fetch keys.
    signing::verify_content_digest(&digest, &body)
        .map_err(|e| refuse("bad_digest", e.to_string()))?;
    let parts = RequestParts::new(request.method().as_str(), &target)
        .map_err(|e| refuse("bad_signature", e.to_string()))?
        .with_header("content-digest", &digest);
    signing::signature_base(&parts, &first.params)
        .map_err(|e| refuse("bad_signature", e.to_string()))?;

    let allowed_origin = origin.clone();
    let federation = settings.federation.clone();
    let allowed = state
        .db
        .run(move |conn| policy::is_allowed(conn, &federation, &allowed_origin))
        .await?;
    if !allowed {
        return Err(ApiError::forbidden(
            "federation_denied",
            "this server does not federate with yours",
        ));
    }
    let key = state
        .peer_keys
        .key(&state.federation, &origin, &key_id)
        .await
        .map_err(|e| refuse("unknown_key", e.to_string()))?;
    signing::verify(&key, first, &parts).map_err(|e| refuse("bad_signature", e.to_string()))?;
    // Limited before its nonce is stored: what one origin keeps in
    // `federation_nonces` is its rate times a signature's lifetime.
    state
        .rate_limits
        .federation_per_origin
        .check(&origin.to_string())
        .map_err(crate::api::auth::too_many)?;

    // Remember the nonce for the signature's lifetime: a replay fails here.
    let nonce = first.params.nonce().unwrap_or_default().to_string();
    let expires_ms = first
        .params
        .expires()
        .unwrap_or(now_secs)
        .saturating_mul(1000);
    let replay_origin = origin.to_string();
    let fresh = state
        .db
        .run(move |conn| nonces::remember(conn, &replay_origin, &nonce, expires_ms))
        .await?;
    if !fresh {
        return Err(refuse("replayed", "this signature was used before"));
    }
    Ok(SignedRequest { origin, body })
}

/// True when a request whose `Host` is `addressed` was meant for the
/// server named `ours`. The hosts must be equal; a name without a port is
/// reached on Homing's port 443 (even over plain HTTP), and a `Host`
/// without a port means the scheme's default one, as HTTP leaves it out.
/// A portless `Host` is also taken for a portless name, whatever the
/// scheme: the signature still binds the exact authority the sender used.
fn addresses_us(ours: &ServerName, addressed: &ServerName, scheme: &str) -> bool {
    let scheme_default = if scheme == "https" { 443 } else { 80 };
    let addressed_port = addressed.port().filter(|&port| port != scheme_default);
    ours.host() == addressed.host()
        && match (ours.port(), addressed_port) {
            (None, None) => true,
            (ours, addressed) => {
                ours.unwrap_or(crate::federation::resolver::DEFAULT_PORT)
                    == addressed.unwrap_or(scheme_default)
            }
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_a_port_are_reached_on_the_default_port() {
        let name = |s| ServerName::parse(s).unwrap();
        let cases = [
            // (our name, Host received, scheme, ours?)
            ("h.example", "h.example", "https", true),
            ("h.example", "h.example:443", "https", true),
            ("h.example:443", "h.example", "https", true),
            ("h.example", "h.example:8448", "https", false),
            ("h.example:8448", "h.example", "https", false),
            ("h.example:8448", "h.example:8448", "https", true),
            ("g.example", "h.example", "https", false),
            // Plain HTTP: a portless name is still found on port 443.
            ("127.0.0.2", "127.0.0.2:443", "http", true),
            ("127.0.0.2", "127.0.0.2", "http", true),
            ("127.0.0.2", "127.0.0.2:80", "http", true),
            ("127.0.0.2", "127.0.0.2:8080", "http", false),
            ("127.0.0.2:443", "127.0.0.2", "http", false),
            ("127.0.0.2:80", "127.0.0.2", "http", true),
            ("127.0.0.1:8008", "127.0.0.1:8008", "http", true),
            ("127.0.0.1:8008", "127.0.0.1:8009", "http", false),
        ];
        for (ours, host, scheme, expected) in cases {
            assert_eq!(
                addresses_us(&name(ours), &name(host), scheme),
                expected,
                "{ours} / Host {host} / {scheme}"
            );
        }
    }
}
