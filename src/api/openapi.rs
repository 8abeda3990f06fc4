//! The client API's OpenAPI document, and the client routes built from it.
//!
//! One list below names every client handler. It feeds both utoipa's
//! document and the router: each route's method and path are read back
//! from the handler's `#[utoipa::path]`, and `require_device` takes the
//! routes that need a token from the operations' `security`. So what is
//! served, what is enforced and what is published cannot disagree.
//!
//! Federation (`/federation/v1/*`), the discovery documents other servers
//! read (`/.well-known/homing/keys`, `/.well-known/homing/identity/*`,
//! WebFinger), `/metrics` and the home page for browsers (`/`, `/about`
//! and its `/static/` files) are not client API and are not listed; the
//! federation protocol is specified in `federation-spec/`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::{accounts, auth, directory, dms, gateway, health, links, push, server_info};
use crate::api::error::ErrorBody;

/// Declares the client API: the document type and the handler table,
/// from one list of `module::handler`s.
macro_rules! client_api {
    ($($module:ident :: $handler:ident),+ $(,)?) => {
        #[derive(OpenApi)]
        #[openapi(
            info(
                title = "Homing client API",
                description = "What Homing clients call on their home server: \
                    accounts, sign-in, devices, directory look-ups, direct \
                    messages and the WebSocket gateway. Errors share one body, \
                    `ErrorBody`, whose `error` member is a code to branch on.",
            ),
            paths($($module::$handler),+),
            components(schemas(ErrorBody)),
            tags(
                (name = "accounts", description = "Registration and the caller's account."),
                (name = "auth", description = "Sign-in with a device key, and bearer tokens."),
                (name = "devices", description = "The account's devices, and linking new ones."),
                (name = "directory", description = "Identities and device lists by address or key."),
                (name = "dms", description = "Sending, syncing and acknowledging messages."),
                (name = "gateway", description = "Real-time events over WebSocket."),
                (name = "server", description = "Health and the server's public description."),
            ),
        )]
        struct ClientApi;

        /// Each handler by its operation id (utoipa's default: its name).
        fn handlers() -> Vec<(&'static str, actix_web::Route)> {
            vec![$((stringify!($handler), web::route().to($module::$handler))),+]
        }
    };
}

client_api![
    health::healthz,
    health::readyz,
    server_info::server_info,
    serve::openapi_json,
    accounts::register,
    accounts::me,
    accounts::leave,
    accounts::list_devices,
    accounts::add_device,
    accounts::revoke_device,
    auth::challenge,
    auth::token,
    auth::logout,
    directory::devices_by_key,
    directory::directory,
    dms::set_retention,
    dms::send,
    dms::sync,
    dms::ack,
    dms::status,
    dms::recall,
    dms::feed,
    push::set_push,
    push::get_push,
    push::clear_push,
    gateway::gateway,
    links::create_link,
    links::get_link,
    links::answer_link,
];

/// The security scheme name operations refer to.
const BEARER: &str = "bearer";

/// One documented operation, as the router needs it.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    pub path: String,
    pub operation_id: String,
    pub bearer: bool,
}

struct Document {
    json: String,
    operations: Vec<Operation>,
}

fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut value =
            serde_json::to_value(ClientApi::openapi()).expect("the OpenAPI document serializes");
        finish(&mut value);
        let operations = operations(&value);
        Document {
            json: value.to_string(),
            operations,
        }
    })
}

/// Every documented operation.
pub fn client_operations() -> &'static [Operation] {
    &document().operations
}

/// True when the operation at `pattern` (a route template) needs a token.
pub fn requires_bearer(method: &Method, pattern: &str) -> bool {
    client_operations()
        .iter()
        .any(|op| op.bearer && op.method == method && op.path == pattern)
}

/// The client routes by path, each with the method its documentation
/// names. Panics on a handler without a documented operation: that is a
/// programming error every test would hit at start-up.
pub fn routes() -> BTreeMap<String, Vec<actix_web::Route>> {
    let mut routes: BTreeMap<String, Vec<actix_web::Route>> = BTreeMap::new();
    for (id, route) in handlers() {
        let op = client_operations()
            .iter()
            .find(|op| op.operation_id == id)
            .unwrap_or_else(|| panic!("handler {id} has no OpenAPI operation"));
        routes
            .entry(op.path.clone())
            .or_default()
            .push(route.method(op.method.clone()));
    }
    routes
}

/// The handler lives in a module of its own so that the list above can
/// name it as `module::handler` like the others.
mod serve {
    use super::*;

    /// This document. No token needed: it describes, it reveals nothing.
    #[utoipa::path(
        get,
        path = "/api/v1/openapi.json",
        tag = "server",
        responses((status = 200, description = "The OpenAPI 3 document.", content_type = "application/json"))
    )]
    pub async fn openapi_json() -> HttpResponse {
        HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("Access-Control-Allow-Origin", "*"))
            .body(document().json.as_str())
    }
}

/// Adds what operations share, so each handler lists only its own cases:
/// the bearer scheme, 401 where a token is required, 400 and 413 for
/// JSON bodies (the extractor's answers), 400 for path parameters, and
/// the `ErrorBody` schema on every error response.
fn finish(document: &mut Value) {
    document["components"]["securitySchemes"][BEARER] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "A device token from `POST /api/v1/auth/token`.",
    });
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            if http_method(method).is_some() {
                finish_operation(operation);
            }
        }
    }
}

fn finish_operation(operation: &mut Value) {
    let bearer = has_bearer(operation);
    let has_body = operation.get("requestBody").is_some();
    let has_path_params = operation["parameters"]
        .as_array()
        .is_some_and(|params| params.iter().any(|p| p["in"] == "path"));
    let Some(responses) = operation["responses"].as_object_mut() else {
        return;
    };
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status)
            .or_insert_with(|| json!({ "description": description }));
    };
    if bearer {
        add(
            "401",
            "The bearer token is missing, invalid, expired or revoked.",
        );
    }
    if has_body {
        add("400", "The body is not valid JSON of this shape.");
        add("413", "The body is larger than the server accepts.");
    }
    if has_path_params {
        add("400", "A path parameter is malformed.");
    }
    for (status, response) in responses.iter_mut() {
        if status.parse::<u16>().is_ok_and(|code| code >= 400) {
            error_response(status, response);
        }
    }
}

fn error_response(status: &str, response: &mut Value) {
    response["content"] = json!({
        "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } }
    });
    let header = match status {
        "401" => Some(("WWW-Authenticate", "Always `Bearer`.", "^Bearer")),
        "429" => Some((
            "Retry-After",
            "Seconds to wait, when rate limited.",
            "^[0-9]+$",
        )),
        _ => None,
    };
    if let Some((name, description, pattern)) = header {
        response["headers"][name] = json!({
            "description": description,
            "schema": { "type": "string", "pattern": pattern },
        });
    }
}

fn has_bearer(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|reqs| reqs.iter().any(|r| r.get(BEARER).is_some()))
}

/// The method of a path item's key; other keys (`parameters`, `summary`)
/// are not operations.
fn http_method(key: &str) -> Option<Method> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    METHODS
        .contains(&key)
        .then(|| Method::from_bytes(key.to_ascii_uppercase().as_bytes()).ok())
        .flatten()
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut found = Vec::new();
    let empty = Map::new();
    let paths = document["paths"].as_object().unwrap_or(&empty);
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap_or(&empty) {
            let Some(method) = http_method(method) else {
                continue;
            };
            found.push(Operation {
                method,
                path: path.clone(),
                operation_id: operation["operationId"].as_str().unwrap_or("").to_string(),
                bearer: has_bearer(operation),
            });
        }
    }
    found
}
