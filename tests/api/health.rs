use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn server_info_describes_policy_and_limits() {
    let app = spawn_app_with_invites().await;
    let response = app.get("/.well-known/homing/server-info").await;
    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["server_name"], app.server_name.as_str());
    assert_eq!(info["registration"], "invite");
    assert_eq!(info["limits"]["max_message_bytes"], 262_144);
    assert_eq!(info["retention"]["default_policy"], "purge-on-ack");
    assert_eq!(info["retention"]["max_pending_age_secs"], 30 * 86_400);
}

async fn spawn_app_with_invites() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(vec![("HOMING__REGISTRATION__POLICY", "invite")]).await
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/no/such/route").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    app.get("/definitely-unknown-path-123").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"homing_http_requests_total{route="/healthz",status="200"} 1"#),
        "{text}"
    );
    // Raw paths never become label values.
    assert!(!text.contains("definitely-unknown-path-123"), "{text}");
    let backend = if app.database.is_postgres() {
        "postgres"
    } else {
        "sqlite"
    };
    assert!(text.contains(&format!(r#"backend="{backend}""#)), "{text}");
}

#[tokio::test]
async fn keys_document_lists_the_current_key() {
    let app = spawn_app().await;
    let response = app.get("/.well-known/homing/keys").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    let current = doc["current_key_id"].as_str().unwrap();
    assert_eq!(current, app.state.server_key.key_id());
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["key_id"], current);
    assert_eq!(keys[0]["public_key"], app.state.server_key.public_key_b64());
    assert!(keys[0]["expires_at"].is_null());
}
