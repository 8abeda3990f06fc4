//! Registration, the caller's account, and device management.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{limit_by_ip, Authenticated};
use crate::address::{Address, Alias};
use crate::crypto::identity::{DeviceId, SignedDeviceCertificate, SignedDeviceList};
use crate::crypto::{PublicKey, SignatureBytes};
use crate::error::ApiError;
use crate::identity::{self, Registration};
use crate::startup::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    alias: String,
    account_key: PublicKey,
    device_certificate: SignedDeviceCertificate,
    device_list: SignedDeviceList,
    proof: SignatureBytes,
    #[serde(default)]
    invite: Option<String>,
}

pub async fn register(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    limit_by_ip(&state.rate_limits.registration_per_ip, &request, &state)?;
    let body = body.into_inner();
    let alias = Alias::parse(&body.alias)
        .map_err(|e| ApiError::bad_request("invalid_alias", e.to_string()))?;
    if body.invite.as_ref().is_some_and(|code| code.len() > 256) {
        return Err(ApiError::forbidden(
            "invite_invalid",
            "the invite code is invalid",
        ));
    }
    let registration = Registration {
        alias,
        account_key: body.account_key,
        device_certificate: body.device_certificate,
        device_list: body.device_list,
        proof: body.proof,
        invite: body.invite,
    };
    let server = state.settings.server_name.clone();
    let policy = state.settings.registration_policy;
    let outcome = state
        .db
        .run(move |conn| identity::register(conn, &server, policy, registration))
        .await?;
    let address = format!("{}@{}", outcome.alias, state.settings.server_name);
    let body = json!({
        "address": address,
        "alias": outcome.alias,
        "device_list_version": outcome.device_list_version,
    });
    Ok(if outcome.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The caller's own account.
pub async fn me(
    state: web::Data<AppState>,
    device: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let key = device.0.account_key.clone();
    let account = state
        .db
        .run(move |conn| identity::identity_by_key(conn, &key))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown_account", "no such account"))?;
    let address = Address::new(
        Alias::parse(&account.alias).map_err(ApiError::internal)?,
        state.settings.server_name.clone(),
    );
    Ok(HttpResponse::Ok().json(json!({
        "address": address.to_string(),
        "account_key": account.account_key.to_string(),
        "device_id": device.0.device_id,
        "device_list_version": account.signed_device_list.device_list.version,
    })))
}

pub async fn list_devices(
    state: web::Data<AppState>,
    device: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let key = device.0.account_key;
    let devices = state
        .db
        .run(move |conn| identity::list_devices(conn, &key))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "devices": devices })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceBody {
    device_certificate: SignedDeviceCertificate,
    device_list: SignedDeviceList,
}

pub async fn add_device(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<AddDeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let account = parse_own_key(&device)?;
    let body = body.into_inner();
    let version = state
        .db
        .run(move |conn| {
            identity::add_device(conn, &account, body.device_certificate, body.device_list)
        })
        .await?;
    Ok(HttpResponse::Created().json(json!({ "device_list_version": version })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeDeviceBody {
    device_list: SignedDeviceList,
}

pub async fn revoke_device(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
    body: web::Json<RevokeDeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let account = parse_own_key(&device)?;
    let device_id = DeviceId::parse(&path.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_device_id", e.to_string()))?;
    let list = body.into_inner().device_list;
    let version = state
        .db
        .run(move |conn| identity::revoke_device(conn, &account, &device_id, list))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "device_list_version": version })))
}

fn parse_own_key(device: &Authenticated) -> Result<PublicKey, ApiError> {
    PublicKey::parse(&device.0.account_key).map_err(ApiError::internal)
}
