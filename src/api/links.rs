//! `/api/v1/links`: the rendezvous for linking a new device.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::auth::{limit_by_ip, Authenticated};
use crate::error::ApiError;
use crate::identity::links::{self, MAX_LINK_BLOB};
use crate::startup::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobBody {
    /// Opaque to the server, base64url.
    blob: String,
}

fn decode(body: BlobBody) -> Result<Vec<u8>, ApiError> {
    URL_SAFE_NO_PAD
        .decode(&body.blob)
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= MAX_LINK_BLOB)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("blob must be 1 to {MAX_LINK_BLOB} bytes of base64url"),
            )
        })
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(ApiError::not_found("unknown_link", "no such link"))
    }
}

/// A new device (not signed in yet) leaves its request.
pub async fn create(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<BlobBody>,
) -> Result<HttpResponse, ApiError> {
    limit_by_ip(&state.rate_limits.registration_per_ip, &request, &state)?;
    let blob = decode(body.into_inner())?;
    let link = state.db.run(move |conn| links::create(conn, &blob)).await?;
    Ok(HttpResponse::Created().json(link))
}

/// Either side reads the link; the id is an unguessable capability.
pub async fn get(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    limit_by_ip(&state.rate_limits.auth_per_ip, &request, &state)?;
    let id = path.into_inner();
    valid_id(&id)?;
    let link = state
        .db
        .run(move |conn| links::get(conn, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_link", "no such link, or it expired"))?;
    Ok(HttpResponse::Ok().json(link))
}

/// A signed-in device of the account answers the link once.
pub async fn answer(
    state: web::Data<AppState>,
    _device: Authenticated,
    path: web::Path<String>,
    body: web::Json<BlobBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    valid_id(&id)?;
    let blob = decode(body.into_inner())?;
    let answered = state
        .db
        .run(move |conn| links::answer(conn, &id, &blob))
        .await?;
    if !answered {
        return Err(ApiError::conflict(
            "link_closed",
            "the link is unknown, expired or already answered",
            serde_json::Value::Null,
        ));
    }
    Ok(HttpResponse::NoContent().finish())
}
