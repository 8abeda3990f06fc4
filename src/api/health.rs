//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The database answers and every migration is applied.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.db.is_ready().await {
        Ok(true) => Ok(HttpResponse::Ok().json(json!({ "status": "ready" }))),
        Ok(false) => Err(ApiError::Unavailable(
            "database migrations are pending".into(),
        )),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(ApiError::Unavailable("the database is unreachable".into()))
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .metrics
        .gateway_sessions
        .set(state.hub.session_count() as i64);
    let body = state.metrics.render().map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(body))
}
