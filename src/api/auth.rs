//! Sign-in endpoints and the bearer-token extractor.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::auth::{self, AuthError, AuthenticatedDevice, Challenge, TokenGrant, TokenRequest};
use crate::crypto::identity::DeviceId;
use crate::crypto::{PublicKey, SignatureBytes};

/// The signed-in device, for handlers that require one.
pub struct Authenticated(pub AuthenticatedDevice);

fn bearer_token(request: &HttpRequest) -> Option<String> {
    let header = request.headers().get("Authorization")?.to_str().ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Usually `require_device` checked the token before any extractor
        // ran; otherwise check it here.
        let checked = request.extensions().get::<AuthenticatedDevice>().cloned();
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(request);
        Box::pin(async move {
            if let Some(device) = checked {
                return Ok(Authenticated(device));
            }
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            Ok(Authenticated(authenticate(&state, token).await?))
        })
    }
}

async fn authenticate(
    state: &AppState,
    token: Option<String>,
) -> Result<AuthenticatedDevice, ApiError> {
    let token = token.ok_or(AuthError::MissingToken)?;
    if !auth::well_formed(&token) {
        return Err(AuthError::InvalidToken.into());
    }
    let hash = auth::token_hash(&token);
    let source = |source| crate::metrics::TokenCheckLabels { source };
    if let Some(device) = state.tokens.get(&hash, crate::time::now_ms()) {
        state
            .metrics
            .token_checks
            .get_or_create(&source("cache"))
            .inc();
        return Ok(device);
    }
    state
        .metrics
        .token_checks
        .get_or_create(&source("database"))
        .inc();
    let generation = state.tokens.generation();
    let device = state
        .db
        .run(move |conn| auth::authenticate(conn, hash))
        .await?;
    state
        .tokens
        .remember(generation, device.clone(), crate::time::now_ms());
    Ok(device)
}

/// Middleware: authenticates the routes whose OpenAPI operation requires a
/// bearer token, before any other extractor runs, so a stranger gets 401
/// whatever the body holds (extractors race, and a body error would
/// otherwise answer first). Taking the list from the document keeps what
/// is enforced and what is published the same.
pub async fn require_device<B: actix_web::body::MessageBody + 'static>(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<B>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error> {
    let needed = request
        .match_pattern()
        .is_some_and(|pattern| super::openapi::requires_bearer(request.method(), &pattern));
    if needed {
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(request.request());
        let checked = match state {
            Some(state) => authenticate(&state, token).await,
            None => Err(ApiError::internal(anyhow::anyhow!("no app state"))),
        };
        match checked {
            Ok(device) => {
                request.extensions_mut().insert(device);
            }
            Err(error) => {
                return Ok(request.error_response(error).map_into_right_body());
            }
        }
    }
    next.call(request)
        .await
        .map(|response| response.map_into_left_body())
}

/// The client's address for rate limits: the peer, or the last
/// `X-Forwarded-For` hop when the admin says a proxy sets it.
pub fn client_ip(request: &HttpRequest, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = request
            .headers()
            .get("X-Forwarded-For")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request.peer_addr().map(|addr| addr.ip())
}

pub fn too_many(retry_after: Duration) -> ApiError {
    ApiError::TooManyRequests {
        message: "too many requests; slow down".into(),
        retry_after_secs: retry_after.as_secs().max(1),
    }
}

/// Applies a per-address limit to this request.
pub fn limit_by_ip(
    limiter: &crate::ratelimit::RateLimiter<crate::ratelimit::AddressKey>,
    request: &HttpRequest,
    state: &AppState,
) -> Result<(), ApiError> {
    match client_ip(request, state.settings.trust_forwarded_for) {
        Some(ip) => limiter.check(&ip.into()).map_err(too_many),
        None => Ok(()),
    }
}

/// A single-use challenge for a device to sign in with.
#[utoipa::path(
    post,
    path = "/api/v1/auth/challenge",
    tag = "auth",
    responses(
        (status = 200, description = "A fresh challenge.", body = Challenge),
        (status = 429, description = "Too many sign-in attempts from this address."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn challenge(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    limit_by_ip(&state.rate_limits.auth_per_ip, &request, &state)?;
    let ttl = state.settings.auth.challenge_ttl;
    let challenge = state
        .db
        .run(move |conn| auth::create_challenge(conn, ttl))
        .await?;
    Ok(HttpResponse::Ok().json(challenge))
}

/// A challenge signed by a device key, together with the server's name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    account_key: PublicKey,
    device_id: DeviceId,
    nonce: String,
    signature: SignatureBytes,
}

/// Exchanges a signed challenge for a bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/token",
    tag = "auth",
    request_body = TokenBody,
    responses(
        (status = 200, description = "Signed in.", body = TokenGrant),
        (status = 401, description = "Unknown challenge or device, or a bad signature."),
        (status = 429, description = "Too many sign-in attempts from this address, or too many sign-ins of this account."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn token(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<TokenBody>,
) -> Result<HttpResponse, ApiError> {
    limit_by_ip(&state.rate_limits.auth_per_ip, &request, &state)?;
    let body = body.into_inner();
    let server_name = state.settings.server_name.to_string();
    let ttl = state.settings.auth.token_ttl;
    let token_request = TokenRequest {
        account_key: body.account_key,
        device_id: body.device_id,
        nonce: body.nonce,
        signature: body.signature,
    };
    // Every attempt counts against its address (above); only a verified one
    // counts against the account.
    let limits = state.rate_limits.clone();
    let account = body.account_key.to_string();
    let admit = move || limits.auth_per_account.check(&account);
    let grant = state
        .db
        .run(move |conn| auth::issue_token(conn, &server_name, ttl, &token_request, admit))
        .await
        .inspect_err(|error| tracing::info!(%error, "sign-in refused"))?;
    Ok(HttpResponse::Ok().json(grant))
}

/// Signs this device out: the presented token stops working.
#[utoipa::path(
    delete,
    path = "/api/v1/auth/token",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn logout(
    state: web::Data<AppState>,
    device: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let hash = device.0.token_hash;
    state
        .db
        .run(move |conn| auth::revoke_token(conn, &hash))
        .await?;
    state.tokens.forget_all();
    Ok(HttpResponse::NoContent().finish())
}
