//! Registration, the caller's account, and device management.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{limit_by_ip, Authenticated};
use crate::address::{Address, Alias};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::crypto::identity::{DeviceId, SignedDeviceCertificate, SignedDeviceList};
use crate::crypto::{PublicKey, SignatureBytes};
use crate::identity::{self, DeviceInfo, Registration};

/// A new identity: its alias, account key and first device, with a proof
/// that the account key chose this alias on this server.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Case-insensitive; stored lower-cased.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    alias: String,
    account_key: PublicKey,
    device_certificate: SignedDeviceCertificate,
    device_list: SignedDeviceList,
    proof: SignatureBytes,
    /// Required when the server registers by invite only.
    #[serde(default)]
    invite: Option<String>,
}

/// A registered identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// `alias@server`.
    pub address: String,
    pub alias: String,
    pub device_list_version: u64,
}

/// Registers an identity.
///
/// Repeating the same registration answers 200 with the same body, so a
/// client whose first answer was lost can retry.
#[utoipa::path(
    post,
    path = "/api/v1/accounts",
    tag = "accounts",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered.", body = Registered),
        (status = 200, description = "This registration already existed.", body = Registered),
        (status = 400, description = "Invalid alias, document or signature."),
        (status = 403, description = "Registration is closed, or the invite is missing or invalid."),
        (status = 409, description = "The alias, the account key or a device key is taken."),
        (status = 429, description = "Too many registrations from this address."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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
    let body = Registered {
        address: format!("{}@{}", outcome.alias, state.settings.server_name),
        alias: outcome.alias,
        device_list_version: outcome.device_list_version,
    };
    Ok(if outcome.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// The caller's account and device.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountInfo {
    pub address: String,
    pub account_key: String,
    pub device_id: String,
    pub device_list_version: u64,
}

/// The caller's own account.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in account.", body = AccountInfo),
        (status = 404, description = "The account is gone."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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
        Alias::from_stored(&account.alias).map_err(ApiError::internal)?,
        state.settings.server_name.clone(),
    );
    Ok(HttpResponse::Ok().json(AccountInfo {
        address: address.to_string(),
        account_key: account.account_key.to_string(),
        device_id: device.0.device_id,
        device_list_version: account.signed_device_list.device_list.version,
    }))
}

/// What leaving took with it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Departed {
    pub address: String,
    /// Mail that was waiting for the account's devices, now deleted.
    pub pending_deliveries_removed: usize,
}

/// Leaves this server for good: the account, its devices, tokens and
/// pending mail are deleted, and the departure its account key signed is
/// served in place of its identity (`410 Gone`), so peers stop sending.
/// The alias is not registered again.
#[utoipa::path(
    delete,
    path = "/api/v1/account",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = homing_proto::documents::DepartureRequest,
    responses(
        (status = 200, description = "The account is gone.", body = Departed),
        (status = 400, description = "A bad signature, or a departure time more than five minutes off."),
        (status = 401, description = "No valid token."),
        (status = 404, description = "The account is gone already."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn leave(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<homing_proto::documents::DepartureRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = device.0.account_key.clone();
    let server = state.settings.server_name.clone();
    let request = body.into_inner();
    let (alias, removed) = state
        .db
        .run(move |conn| {
            let now = crate::time::now_ms();
            identity::departure::depart(conn, &server, &key, &request, now)
        })
        .await?;
    // The account's tokens ended with it; no cached check may outlive it.
    state.tokens.forget_all();
    let address = format!("{alias}@{}", state.settings.server_name);
    tracing::info!(%address, removed, "an account left this server");
    Ok(HttpResponse::Ok().json(Departed {
        address,
        pending_deliveries_removed: removed,
    }))
}

/// Every device the account ever had.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceListing {
    pub devices: Vec<DeviceInfo>,
}

/// The caller's devices, revoked ones included.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account's devices.", body = DeviceListing),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn list_devices(
    state: web::Data<AppState>,
    device: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let key = device.0.account_key;
    let devices = state
        .db
        .run(move |conn| identity::list_devices(conn, &key))
        .await?;
    Ok(HttpResponse::Ok().json(DeviceListing { devices }))
}

/// A new device's certificate and the device list that adds it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceBody {
    device_certificate: SignedDeviceCertificate,
    device_list: SignedDeviceList,
}

/// The version of the account's device list after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceListVersion {
    pub device_list_version: u64,
}

/// Adds a device to the caller's account.
#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "devices",
    security(("bearer" = [])),
    request_body = AddDeviceBody,
    responses(
        (status = 201, description = "Added.", body = DeviceListVersion),
        (status = 400, description = "An invalid certificate, list or signature."),
        (status = 404, description = "The account is gone."),
        (status = 409, description = "The list does not match, rolls back, or reuses a key or device id."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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
    Ok(HttpResponse::Created().json(DeviceListVersion {
        device_list_version: version,
    }))
}

/// The device list without the revoked device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeDeviceBody {
    device_list: SignedDeviceList,
}

/// Revokes one of the caller's devices: its tokens and pending mail go.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{device_id}/revoke",
    tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = DeviceId, Path, description = "The device to revoke.")),
    request_body = RevokeDeviceBody,
    responses(
        (status = 200, description = "Revoked.", body = DeviceListVersion),
        (status = 400, description = "An invalid device id, list or signature."),
        (status = 404, description = "No such device or account."),
        (status = 409, description = "The list does not match or rolls back."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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
    state.tokens.forget_all();
    Ok(HttpResponse::Ok().json(DeviceListVersion {
        device_list_version: version,
    }))
}

fn parse_own_key(device: &Authenticated) -> Result<PublicKey, ApiError> {
    PublicKey::parse(&device.0.account_key).map_err(ApiError::internal)
}
