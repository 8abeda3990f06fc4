//! `GET /.well-known/homing/server-info`: what a person picking a home server
//! wants to compare.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::config::{Limits, RegistrationPolicy};
use crate::startup::AppState;

/// The public description of this server.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ServerInfo {
    pub server_name: String,
    pub software: String,
    pub version: String,
    /// `open`, `invite` or `closed`.
    pub registration: String,
    pub limits: Limits,
    pub retention: RetentionInfo,
    /// The per-account and per-device rates a client may run into.
    pub rate_limits: RateLimitsInfo,
}

/// Rates a client may meet, each as `{"burst": N, "per_secs": S}`: N
/// requests at once, refilled over S seconds. Beyond one: `429
/// rate_limited` with `Retry-After`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateLimitsInfo {
    /// Messages one device may send.
    pub send_per_device: RateInfo,
    /// Look-ups of addresses on other servers one account may make.
    pub directory_per_account: RateInfo,
    /// Servers new to this server's relay one account may send to.
    pub new_destinations_per_account: RateInfo,
}

/// One rate: `burst` requests, refilled over `per_secs` seconds.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateInfo {
    pub burst: u32,
    pub per_secs: u64,
}

impl From<crate::config::Rate> for RateInfo {
    fn from(rate: crate::config::Rate) -> Self {
        Self {
            burst: rate.burst,
            per_secs: rate.per.as_secs(),
        }
    }
}

/// Retention caps, in seconds.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RetentionInfo {
    pub default_policy: String,
    pub max_pending_age_secs: u64,
    pub max_keep_secs: u64,
    pub device_inactivity_secs: u64,
}

/// What this server is, its registration policy, limits and retention.
#[utoipa::path(
    get,
    path = "/.well-known/homing/server-info",
    tag = "server",
    responses((status = 200, description = "The server's public description.", body = ServerInfo))
)]
pub async fn server_info(state: web::Data<AppState>) -> HttpResponse {
    let settings = &state.settings;
    let registration = match settings.registration_policy {
        RegistrationPolicy::Open => "open",
        RegistrationPolicy::Invite => "invite",
        RegistrationPolicy::Closed => "closed",
    };
    let limits: &Limits = &settings.limits;
    let info = ServerInfo {
        server_name: settings.server_name.to_string(),
        software: "homing".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        registration: registration.into(),
        limits: limits.clone(),
        retention: RetentionInfo {
            default_policy: "purge-on-ack".into(),
            max_pending_age_secs: settings.retention.max_pending_age.as_secs(),
            max_keep_secs: settings.retention.max_keep.as_secs(),
            device_inactivity_secs: settings.retention.device_inactivity.as_secs(),
        },
        rate_limits: RateLimitsInfo {
            send_per_device: settings.rate_limits.send_per_device.into(),
            directory_per_account: settings.rate_limits.directory_per_account.into(),
            new_destinations_per_account: settings.rate_limits.new_destinations_per_account.into(),
        },
    };
    HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(info)
}
