//! `GET /api/v1/openapi.json`: a valid OpenAPI 3 document that matches the
//! router.
//!
//! The server builds its client routes from the document, so comparing the
//! document with a list taken from the same place would prove nothing.
//! Instead these tests ask the running server: every documented operation
//! must reach a handler (not the router's fallback), answer a documented
//! status, and demand a token exactly when the document says so; every
//! other method on a documented path must get 405, with an `Allow` header
//! that actix computes from the routes it really holds and that must list
//! exactly the documented methods. Routes registered by hand, outside the
//! document, are found in the router's source and must not be client
//! routes.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

const DOCUMENT: &str = "/api/v1/openapi.json";
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn fetch_document(app: &TestApp) -> Value {
    let response = app.get(DOCUMENT).await;
    assert_eq!(response.status(), 200, "the document needs no token");
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("the document is JSON")
}

/// `(method, path) -> operation` for every operation in the document.
fn operations(document: &Value) -> BTreeMap<(String, String), Value> {
    let mut found = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) || method == "head" || method == "options" {
                found.insert((method.clone(), path.clone()), operation.clone());
            }
        }
    }
    found
}

fn is_bearer(operation: &Value) -> bool {
    operation["security"]
        .as_array()
        .is_some_and(|reqs| reqs.iter().any(|r| r.get("bearer").is_some()))
}

/// Every `$ref` in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    out.push((at.to_string(), inner.as_str().unwrap_or("").to_string()));
                } else {
                    refs(inner, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                refs(inner, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_document_is_valid_openapi_3() {
    let app = spawn_app().await;
    let document = fetch_document(&app).await;

    let version = document["openapi"].as_str().expect("openapi version");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts[0] == "3" && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "not an OpenAPI 3 version: {version}"
    );
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());
    let operations = operations(&document);
    assert!(operations.len() > 20, "{} operations", operations.len());

    // Every reference is local and resolves.
    let mut found = Vec::new();
    refs(&document, "#", &mut found);
    assert!(!found.is_empty());
    for (at, target) in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: non-local $ref {target}"));
        assert!(
            document.pointer(pointer).is_some(),
            "{at}: $ref {target} does not resolve"
        );
    }

    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let error = &document["components"]["schemas"]["ErrorBody"];
    assert!(error.is_object(), "ErrorBody is a component");

    let mut ids = BTreeSet::new();
    for ((method, path), operation) in &operations {
        let id = operation["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
        assert!(path.starts_with('/'), "{path}");

        // Path templates and path parameters name the same things.
        let declared: BTreeSet<String> = operation["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| assert_eq!(p["required"], true, "{method} {path}"))
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(declared, template_params(path), "{method} {path}");

        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes[scheme].is_object(), "{method} {path}: {scheme}");
            }
        }

        let responses = operation["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{status}"));
            assert!((100..600).contains(&code), "{method} {path}: {status}");
            assert!(
                response["description"].is_string(),
                "{method} {path} {status}"
            );
            if code >= 400 {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}: errors use ErrorBody"
                );
            }
        }
        if is_bearer(operation) {
            assert!(responses.contains_key("401"), "{method} {path}: 401");
        }
        if operation.get("requestBody").is_some() {
            assert!(responses.contains_key("400"), "{method} {path}: 400");
            assert!(responses.contains_key("413"), "{method} {path}: 413");
        }
    }
}

/// A value of the right shape for each path parameter, so a request gets
/// past routing and path extraction.
fn concrete(app: &TestApp, path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{device_id}" => "no-such-device".to_string(),
            "{account_key}" => "A".repeat(43),
            "{address}" => format!("nobody@{}", app.server_name),
            "{message_id}" => "m".repeat(20),
            "{link_id}" => "l".repeat(22),
            other if other.starts_with('{') => "x".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = call_with_headers(app, method, path, token).await;
    (status, body)
}

async fn call_with_headers(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let mut request = app.http.request(method.clone(), app.url(path));
    if method == Method::POST || method == Method::PUT || method == Method::PATCH {
        request = request.json(&serde_json::json!({}));
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The router's answer when no route matches the path, or none the method.
fn is_fallback(status: u16, body: &Value) -> bool {
    (status == 404 && body["error"] == "not_found")
        || (status == 405 && body["error"] == "method_not_allowed")
}

#[tokio::test]
async fn every_documented_operation_is_routed_as_documented() {
    let app = spawn_app().await;
    let user = app.register("prober").await;
    let document = fetch_document(&app).await;
    let operations = operations(&document);

    for ((method, path), operation) in &operations {
        let url = concrete(&app, path);
        let documented = operation["responses"].as_object().unwrap();

        // Without a token: routed, and refused exactly when documented so.
        let (status, body) = call(&app, method, &url, None).await;
        assert!(
            !is_fallback(status, &body),
            "{method} {path} is documented but not routed"
        );
        assert!(
            documented.contains_key(&status.to_string()),
            "{method} {path} answered {status} {body}, which is not documented"
        );
        let refused = status == 401 && body["error"] == "missing_token";
        assert_eq!(
            refused,
            is_bearer(operation),
            "{method} {path}: the document and the server disagree on the token ({status} {body})"
        );

        // With a token, bearer operations get past authentication. A
        // fresh token each time, since one of them signs out.
        if is_bearer(operation) {
            let token = app.sign_in(&user.account, &user.device(0).keys).await;
            let (status, body) = call(&app, method, &url, Some(&token)).await;
            assert_ne!(status, 401, "{method} {path}: {body}");
            assert!(
                documented.contains_key(&status.to_string()),
                "{method} {path} answered {status} {body}, which is not documented"
            );
        }
    }

    // No undocumented method is served on a documented path, and the
    // router's own list of methods there is the documented one.
    let token = app.sign_in(&user.account, &user.device(0).keys).await;
    let paths: BTreeSet<&String> = operations.keys().map(|(_, path)| path).collect();
    for path in paths {
        let documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| operations.contains_key(&(m.to_string(), path.clone())))
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in METHODS.iter().chain(&["trace"]) {
            if documented.contains(&method.to_ascii_uppercase()) {
                continue;
            }
            let url = concrete(&app, path);
            let (status, headers, body) = call_with_headers(&app, method, &url, Some(&token)).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (405, Some("method_not_allowed")),
                "{method} {path} is served ({status} {body}) but not documented"
            );
            let allow: BTreeSet<String> = headers["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_string())
                .collect();
            assert_eq!(allow, documented, "{path}: Allow says {allow:?}");
        }
    }
}

/// `(call, literal)` for every route or scope registration in `source`;
/// the literal is `None` when the path is not a string literal.
fn registrations(source: &str) -> Vec<(&'static str, Option<String>)> {
    let mut found = Vec::new();
    for call in [".route(", "resource(", "web::scope("] {
        for (at, _) in source.match_indices(call) {
            if call == "resource(" && source[..at].ends_with("web::") {
                continue; // counted as itself below
            }
            let rest = source[at + call.len()..].trim_start();
            let literal = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(lit, _)| lit.to_string());
            found.push((call, literal));
        }
    }
    for _ in source.matches("web::resource(") {
        found.push(("web::resource(", None));
    }
    found
}

#[tokio::test]
async fn no_client_route_is_registered_outside_the_document() {
    let app = spawn_app().await;
    let document = fetch_document(&app).await;
    let documented: BTreeSet<String> = operations(&document)
        .into_keys()
        .map(|(_, path)| path)
        .collect();

    // Routes are registered in one place, through `resource(path, routes)`.
    // Every registration there names its path literally except five: the
    // two that take the document's routes, and inside `resource` itself
    // its definition, `web::resource(path)` and `.route(route)`.
    let source = include_str!("../../src/api/mod.rs");
    let found = registrations(source);
    let unnamed: Vec<_> = found.iter().filter(|(_, lit)| lit.is_none()).collect();
    assert_eq!(
        unnamed.len(),
        5,
        "a route registered without a literal path: {unnamed:?}"
    );
    assert!(source.contains("openapi::routes()"));
    let mut scopes = BTreeSet::new();
    let mut hand_made = Vec::new();
    for (call, literal) in &found {
        let Some(path) = literal else { continue };
        match *call {
            "web::scope(" => {
                scopes.insert(path.clone());
            }
            ".route(" => panic!(".route({path}) bypasses `resource`"),
            _ => hand_made.push(path.clone()),
        }
    }
    assert_eq!(
        scopes,
        BTreeSet::from(["/api/v1".to_string(), "/federation/v1".to_string()]),
        "a new scope must be added to the document or to this test"
    );
    assert!(!hand_made.is_empty());
    for path in &hand_made {
        assert!(
            !path.starts_with("/api/") && !documented.contains(path),
            "{path} is registered by hand; client routes come from the document"
        );
        // The parse found real routes: each one is known to the router, at
        // the root or in the federation scope (a 405 still means known).
        let concrete = concrete(&app, path);
        let mut known = false;
        for url in [concrete.clone(), format!("/federation/v1{concrete}")] {
            let (status, body) = call(&app, "get", &url, None).await;
            known |= !(status == 404 && body["error"] == "not_found");
        }
        assert!(known, "{path} was found in the source but is not routed");
    }

    // Nothing else in the crate registers routes (attribute macros, other
    // `configure` functions).
    let sources = [
        include_str!("../../src/startup.rs"),
        include_str!("../../src/api/accounts.rs"),
        include_str!("../../src/api/auth.rs"),
        include_str!("../../src/api/directory.rs"),
        include_str!("../../src/api/dms.rs"),
        include_str!("../../src/api/gateway.rs"),
        include_str!("../../src/api/health.rs"),
        include_str!("../../src/api/links.rs"),
        include_str!("../../src/api/openapi.rs"),
        include_str!("../../src/api/extract.rs"),
        include_str!("../../src/api/federation.rs"),
        include_str!("../../src/api/keys.rs"),
        include_str!("../../src/api/server_info.rs"),
        include_str!("../../src/api/signed.rs"),
    ];
    for text in sources {
        assert!(
            registrations(text).is_empty(),
            "routes outside api::configure"
        );
        for attribute in ["#[get(", "#[post(", "#[put(", "#[delete(", "#[route("] {
            assert!(!text.contains(attribute), "{attribute} registers a route");
        }
    }
}
