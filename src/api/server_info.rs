//! `GET /.well-known/homing/server-info`: what a person picking a home server
//! wants to compare.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::config::{FederationSettings, Limits, RegistrationPolicy};
use crate::federation::policy;

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
    /// Which servers this one exchanges mail with.
    pub federation: FederationInfo,
    /// Web Push wake-ups for devices that are not connected.
    pub push: PushInfo,
    /// The admin's description of the server (`server.description`), up
    /// to 500 characters; line breaks are meant to be kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How to reach the admin (`server.contact`): an email address or an
    /// `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Where the server's rules are (`server.rules_url`): an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_url: Option<String>,
}

/// What a device needs to subscribe to wake-ups (RFC 8030).
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PushInfo {
    /// The server's VAPID public key (RFC 8292): an uncompressed P-256
    /// point, unpadded base64url, the `applicationServerKey` a browser
    /// subscribes with.
    pub vapid_public_key: String,
    /// At most one wake-up per device this often while the last one's
    /// mail is unread.
    pub min_interval_secs: u64,
}

/// The federation policy as visitors may know it. Blocked servers are
/// not named: a block list is the admin's business.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FederationInfo {
    /// `open`: any Homing server, except any the admin has blocked;
    /// `allow_list`: only the servers in `allow`.
    pub policy: String,
    /// The servers mail may go to and come from under `allow_list`
    /// (configured and set at run time, sorted); empty under `open`.
    pub allow: Vec<String>,
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
    responses(
        (status = 200, description = "The server's public description.", body = ServerInfo),
        (status = 503, description = "The database (which holds run-time federation rules) is unavailable."),
    )
)]
pub async fn server_info(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let info = describe(&state).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(info))
}

/// The description both server-info and the home page show.
pub async fn describe(state: &AppState) -> Result<ServerInfo, ApiError> {
    let rules = state.db.run(policy::load_rules).await?;
    let settings = &state.settings;
    let registration = match settings.registration_policy {
        RegistrationPolicy::Open => "open",
        RegistrationPolicy::Invite => "invite",
        RegistrationPolicy::Closed => "closed",
    };
    let limits: &Limits = &settings.limits;
    let about = &settings.about;
    Ok(ServerInfo {
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
        federation: federation_info(&settings.federation, &rules),
        push: PushInfo {
            vapid_public_key: state.pusher.public_key_b64().to_string(),
            min_interval_secs: settings.push.min_interval.as_secs(),
        },
        description: about.description.clone(),
        contact: about.contact.as_ref().map(|c| c.as_str().to_string()),
        rules_url: about.rules_url.clone(),
    })
}

/// The allow list as `FederationSettings::permits` applies it: configured and run-time
/// allows, less any server a deny overrides.
fn federation_info(settings: &FederationSettings, rules: &[(String, String)]) -> FederationInfo {
    let denied = |name: &str| {
        settings.deny.iter().any(|d| d.as_str() == name)
            || rules.iter().any(|(s, r)| s == name && r == "deny")
    };
    let mut allow: Vec<String> = settings
        .allow
        .iter()
        .map(|name| name.to_string())
        .chain(
            rules
                .iter()
                .filter(|(_, rule)| rule == "allow")
                .map(|(server, _)| server.clone()),
        )
        .collect();
    let restricted = !allow.is_empty();
    allow.retain(|name| !denied(name));
    allow.sort();
    allow.dedup();
    FederationInfo {
        policy: if restricted { "allow_list" } else { "open" }.into(),
        allow,
    }
}
