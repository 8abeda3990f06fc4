//! HTTP routes. Handlers parse, make one domain call and map the result;
//! then they tell the services what changed (`Relay::queued`, the
//! `Notifier`), once each.

mod accounts;
pub mod auth;
mod body_timeout;
pub mod directory;
mod dms;
pub mod error;
mod extract;
mod federation;
mod gateway;
mod health;
mod home;
pub mod keys;
mod links;
pub mod openapi;
mod push;
pub mod server_info;
mod signed;
mod state;
pub mod upgraded;

pub use state::{AppState, RateLimiters};

use actix_web::dev::{HttpServiceFactory, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, ResponseError};

use crate::api::error::ApiError;
use crate::config::Settings;

pub use body_timeout::body_deadline;
pub use extract::json_config;

/// Registers every route and the request-body limits. Client routes come
/// from the OpenAPI document (see `openapi`); the rest are for other
/// servers, operators and browsers (the home page) and are listed here.
pub fn configure(cfg: &mut web::ServiceConfig, settings: &Settings) {
    cfg.app_data(json_config(settings.limits.max_request_bytes))
        .app_data(extract::path_config())
        .app_data(extract::query_config());
    let mut client =
        web::scope("/api/v1").wrap(actix_web::middleware::from_fn(auth::require_device));
    for (path, routes) in openapi::routes() {
        match path.strip_prefix("/api/v1") {
            Some(rest) => client = client.service(resource(rest, routes)),
            None => {
                cfg.service(resource(&path, routes));
            }
        }
    }
    cfg.service(resource("/", vec![web::get().to(home::home)]))
        .service(resource("/about", vec![web::get().to(home::home)]))
        .service(resource(
            "/static/home.css",
            vec![web::get().to(home::stylesheet)],
        ))
        .service(resource(
            "/static/home.js",
            vec![web::get().to(home::script)],
        ))
        .service(resource("/metrics", vec![web::get().to(health::metrics)]))
        .service(resource(
            "/.well-known/homing/keys",
            vec![web::get().to(keys::keys)],
        ))
        .service(resource(
            "/.well-known/homing/identity/{alias}",
            vec![web::get().to(directory::identity_by_alias)],
        ))
        .service(resource(
            "/.well-known/webfinger",
            vec![web::get().to(directory::webfinger)],
        ))
        .service(client)
        .service(
            web::scope("/federation/v1")
                .app_data(web::PayloadConfig::new(
                    crate::federation::wire::MAX_TXN_REQUEST_BYTES,
                ))
                .service(resource(
                    "/txn/{txn_id}",
                    vec![web::put().to(federation::put_txn)],
                ))
                .service(resource(
                    "/recall/{message_id}",
                    vec![web::put().to(federation::put_recall)],
                ))
                .service(resource("/hello", vec![web::post().to(federation::hello)])),
        )
        .default_service(web::to(extract::not_found));
}

/// One path and every method served there. A known path asked with
/// another method gets 405 with `Allow` (computed by actix from the routes
/// it holds) and the usual JSON error body, rather than a 404 that would
/// say the path does not exist.
fn resource(path: &str, routes: Vec<actix_web::Route>) -> impl HttpServiceFactory + 'static {
    routes
        .into_iter()
        .fold(web::resource(path), |resource, route| resource.route(route))
        .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
}

fn method_not_allowed<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (request, old) = response.into_parts();
    let error = ApiError::MethodNotAllowed(format!(
        "{} is not served at {}",
        request.method(),
        request.path()
    ));
    let mut answer = error.error_response();
    if let Some(allow) = old.headers().get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, answer).map_into_right_body(),
    ))
}
