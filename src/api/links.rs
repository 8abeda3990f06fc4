//! `/api/v1/links`: the rendezvous for linking a new device.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::auth::{limit_by_ip, Authenticated};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::identity::links::{self, Answered, Link, MAX_LINK_BLOB};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobBody {
    /// Opaque to the server: 1 to 4096 bytes as unpadded base64url.
    #[schema(pattern = "^[A-Za-z0-9_-]+$")]
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
#[utoipa::path(
    post,
    path = "/api/v1/links",
    tag = "devices",
    request_body = BlobBody,
    responses(
        (status = 201, description = "The link, valid for ten minutes.", body = Link),
        (status = 400, description = "The blob is not 1 to 4096 bytes of base64url."),
        (status = 429, description = "Too many links from this address."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn create_link(
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
#[utoipa::path(
    get,
    path = "/api/v1/links/{link_id}",
    tag = "devices",
    params(("link_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$", description = "The link's id.")),
    responses(
        (status = 200, description = "The link and its answer, once given.", body = Link),
        (status = 404, description = "No such link, or it expired."),
        (status = 429, description = "Too many look-ups from this address."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn get_link(
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

/// A signed-in device of the account the request names answers the link
/// once.
#[utoipa::path(
    put,
    path = "/api/v1/links/{link_id}/response",
    tag = "devices",
    security(("bearer" = [])),
    params(("link_id" = String, Path, pattern = "^[A-Za-z0-9_-]{22}$", description = "The link's id.")),
    request_body = BlobBody,
    responses(
        (status = 204, description = "Answered."),
        (status = 400, description = "The blob is not 1 to 4096 bytes of base64url."),
        (status = 403, description = "The caller is not a device of the account the request names."),
        (status = 404, description = "Not a valid link id."),
        (status = 409, description = "The link is unknown, expired or already answered."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn answer_link(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
    body: web::Json<BlobBody>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    valid_id(&id)?;
    let blob = decode(body.into_inner())?;
    let account_key = device.0.account_key;
    let server = state.settings.server_name.clone();
    let answered = state
        .db
        .run(move |conn| links::answer(conn, &id, &blob, &account_key, &server))
        .await?;
    match answered {
        Answered::Recorded => Ok(HttpResponse::NoContent().finish()),
        Answered::Closed => Err(ApiError::conflict(
            "link_closed",
            "the link is unknown, expired or already answered",
            Default::default(),
        )),
        Answered::Forbidden => Err(ApiError::forbidden(
            "link_forbidden",
            "only a device of the account the link request names can answer it",
        )),
    }
}
