//! HTTP routes. Handlers parse, make one domain call and map the result.

mod accounts;
pub mod auth;
pub mod directory;
mod dms;
mod extract;
mod federation;
mod gateway;
mod health;
pub mod keys;
mod links;
pub mod server_info;
mod signed;

use actix_web::web;

use crate::config::Settings;

pub use dms::{publish_deliveries, publish_status};
pub use extract::json_config;

/// Registers every route and the request-body limits.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    cfg.app_data(json_config(settings.limits.max_request_bytes))
        .app_data(extract::path_config())
        .app_data(extract::query_config())
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route(
            "/.well-known/homing/server-info",
            web::get().to(server_info::server_info),
        )
        .route("/.well-known/homing/keys", web::get().to(keys::keys))
        .route(
            "/.well-known/homing/identity/{alias}",
            web::get().to(directory::identity_by_alias),
        )
        .route(
            "/.well-known/webfinger",
            web::get().to(directory::webfinger),
        )
        .service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(auth::require_device))
                .route("/accounts", web::post().to(accounts::register))
                .route("/account", web::get().to(accounts::me))
                .route("/auth/challenge", web::post().to(auth::challenge))
                .route("/auth/token", web::post().to(auth::token))
                .route("/auth/token", web::delete().to(auth::logout))
                .route("/devices", web::get().to(accounts::list_devices))
                .route("/devices", web::post().to(accounts::add_device))
                .route(
                    "/devices/{device_id}/revoke",
                    web::post().to(accounts::revoke_device),
                )
                .route(
                    "/users/{account_key}/devices",
                    web::get().to(directory::devices_by_key),
                )
                .route("/directory/{address}", web::get().to(directory::directory))
                .route("/account/retention", web::put().to(dms::set_retention))
                .route("/dms/send", web::post().to(dms::send))
                .route("/dms/sync", web::post().to(dms::sync))
                .route("/dms/ack", web::post().to(dms::ack))
                .route("/dms/status/{message_id}", web::get().to(dms::status))
                .route("/gateway", web::get().to(gateway::gateway))
                .route("/links", web::post().to(links::create))
                .route("/links/{link_id}", web::get().to(links::get))
                .route("/links/{link_id}/response", web::put().to(links::answer)),
        )
        .service(
            web::scope("/federation/v1")
                .app_data(web::PayloadConfig::new(
                    crate::federation::wire::MAX_TXN_REQUEST_BYTES,
                ))
                .route("/txn/{txn_id}", web::put().to(federation::put_txn))
                .route("/hello", web::post().to(federation::hello)),
        )
        .default_service(web::to(extract::not_found));
}
