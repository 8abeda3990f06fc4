//! `/api/v1/devices/{device_id}/push`: a device's own Web Push
//! subscription. Only the device itself may set, read or clear it.

use actix_web::{web, HttpResponse};
use homing_proto::push::{PushSubscription, PushSubscriptionInfo};

use super::auth::{too_many, Authenticated};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::crypto::identity::DeviceId;
use crate::push::endpoint;
use crate::storage::push as subscriptions;

/// The caller's device row, when `path` names the caller's own device.
fn own_device(device: &Authenticated, path: web::Path<String>) -> Result<i64, ApiError> {
    let named = DeviceId::parse(&path.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_device_id", e.to_string()))?;
    if named.as_str() != device.0.device_id {
        return Err(ApiError::forbidden(
            "not_your_device",
            "a device may only manage its own push subscription",
        ));
    }
    Ok(device.0.device_row)
}

/// Sets the calling device's push subscription (the browser's
/// `PushSubscription.toJSON()` form), replacing any it had. While the
/// device has no gateway session, new mail makes the server send it a
/// wake-up through that push service.
#[utoipa::path(
    put,
    path = "/api/v1/devices/{device_id}/push",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = DeviceId, Path, description = "The calling device.")),
    request_body = PushSubscription,
    responses(
        (status = 204, description = "Stored."),
        (status = 400, description = "An invalid device id, endpoint (`invalid_push_endpoint`: not an https URL, credentials, a fragment, over 1024 characters), or keys (`invalid_push_keys`); or an endpoint at a loopback or private address (`push_endpoint_refused`)."),
        (status = 403, description = "The path names another device (`not_your_device`)."),
        (status = 429, description = "Subscriptions changed too often."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn set_push(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
    body: web::Json<PushSubscription>,
) -> Result<HttpResponse, ApiError> {
    let device_row = own_device(&device, path)?;
    state
        .rate_limits
        .push_per_device
        .check(&device_row)
        .map_err(too_many)?;
    let valid = endpoint::validate(
        &body,
        &state.federation,
        state.settings.federation.allow_insecure_http,
    )
    .map_err(|refused| ApiError::bad_request(refused.code, refused.reason))?;
    state
        .db
        .run(move |conn| {
            let subscription = subscriptions::NewSubscription {
                endpoint: valid.endpoint.as_str(),
                p256dh: &valid.p256dh,
                auth: &valid.auth,
            };
            subscriptions::set(conn, device_row, &subscription, crate::time::now_ms())
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The calling device's push subscription, without its keys.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{device_id}/push",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = DeviceId, Path, description = "The calling device.")),
    responses(
        (status = 200, description = "The subscription.", body = PushSubscriptionInfo),
        (status = 400, description = "An invalid device id."),
        (status = 403, description = "The path names another device (`not_your_device`)."),
        (status = 404, description = "The device has no subscription (`no_push_subscription`)."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn get_push(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device_row = own_device(&device, path)?;
    let info = state
        .db
        .run(move |conn| subscriptions::info(conn, device_row))
        .await?;
    match info {
        Some(info) => Ok(HttpResponse::Ok().json(info)),
        None => Err(no_subscription()),
    }
}

/// Removes the calling device's push subscription: no more wake-ups.
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{device_id}/push",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = DeviceId, Path, description = "The calling device.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "An invalid device id."),
        (status = 403, description = "The path names another device (`not_your_device`)."),
        (status = 404, description = "The device had no subscription (`no_push_subscription`)."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn clear_push(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let device_row = own_device(&device, path)?;
    let removed = state
        .db
        .run(move |conn| subscriptions::clear(conn, device_row))
        .await?;
    if removed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(no_subscription())
    }
}

fn no_subscription() -> ApiError {
    ApiError::not_found(
        "no_push_subscription",
        "this device has no push subscription",
    )
}
