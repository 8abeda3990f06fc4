//! Liveness, readiness and metrics.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::storage::mail::outbox;

/// A probe's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    pub status: &'static str,
}

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "server",
    responses((status = 200, description = "Live.", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The database answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "server",
    responses(
        (status = 200, description = "Ready to serve.", body = Health),
        (status = 503, description = "The database is unreachable or migrations are pending."),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db.is_ready().await {
        Ok(true) => Ok(HttpResponse::Ok().json(Health { status: "ready" })),
        Ok(false) => Err(ApiError::Unavailable(
            "database migrations are pending".into(),
        )),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
    }
}

/// Prometheus text exposition, for the configured token or, without one,
/// for loopback peers only: the figures name the servers this server's
/// users write to.
pub async fn metrics(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !may_scrape(&request, state.settings.metrics_token_digest.as_ref()) {
        return Err(ApiError::Unauthorized {
            code: "metrics_token_required",
            message: "/metrics needs the metrics token (server.metrics_token)".into(),
        });
    }
    let metrics = &state.metrics;
    metrics
        .gateway_sessions
        .set(state.hub.session_count() as i64);
    metrics
        .write_queue_depth
        .set(state.write_queue.depth() as i64);
    metrics.observe_pool(state.db.pool_state());
    // Read at scrape time so the queue figures are never a pass behind.
    let limit = crate::metrics::MAX_DESTINATION_SERIES as i64;
    match state
        .db
        .run(move |conn| outbox::queue_summary(conn, limit))
        .await
    {
        Ok((total, queues)) => metrics.observe_outbox(total, &queues, crate::time::now_ms()),
        Err(error) => tracing::warn!(%error, "reading the relay queues for metrics failed"),
    }
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}

fn may_scrape(request: &HttpRequest, token_digest: Option<&[u8; 32]>) -> bool {
    let Some(expected) = token_digest else {
        // A reverse proxy on the same host connects from loopback too: a
        // request it forwarded says so in its headers and is refused.
        let headers = request.headers();
        let forwarded = headers.contains_key("x-forwarded-for")
            || headers.contains_key(actix_web::http::header::FORWARDED)
            || headers.contains_key("x-real-ip");
        return !forwarded
            && request
                .peer_addr()
                .is_some_and(|peer| peer.ip().is_loopback());
    };
    let presented = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    // Comparing digests: equal-length values whose timing tells nothing
    // about the token itself.
    presented.is_some_and(|token| Sha256::digest(token.as_bytes()).as_slice() == expected)
}
