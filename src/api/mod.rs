//! HTTP routes. Handlers parse, make one domain call and map the result.

mod extract;
mod health;
pub mod keys;
pub mod server_info;

use actix_web::web;

use crate::config::Settings;

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
        .default_service(web::to(extract::not_found));
}
