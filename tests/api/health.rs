use serde_json::{json, Value};

use crate::helpers::{message_to, spawn_app, spawn_app_with};

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
    let rates = &info["rate_limits"];
    assert_eq!(rates["directory_per_account"]["burst"], 60);
    assert_eq!(rates["directory_per_account"]["per_secs"], 60);
    assert_eq!(rates["new_destinations_per_account"]["burst"], 20);
    assert_eq!(rates["new_destinations_per_account"]["per_secs"], 3600);
    assert!(rates["send_per_device"]["burst"].as_u64().is_some());
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
    // Without a token only loopback peers may scrape, and a request a local
    // reverse proxy forwarded is not one of them.
    let forwarded = app
        .http
        .get(app.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 401);
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

/// The value of the first exposition line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_show_queues_failures_pool_and_group_commits() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut remote = message_to(&app, &[(&bob, &[0])], b"far", "all");
    // Port 9 on loopback refuses connections: the relay fails to connect.
    remote["recipients"][0]["address"] = json!("ghost@127.0.0.1:9");
    let response = app
        .post_json("/api/v1/dms/send", &remote, Some(&alice.device(0).token))
        .await;
    assert_eq!(response.status(), 202);

    let mut text = String::new();
    for _ in 0..100 {
        text = app.get("/metrics").await.text().await.unwrap();
        if text.contains(r#"homing_relay_failures_total{cause="connect"}"#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&text, r#"homing_outbox_depth{destination="127.0.0.1:9"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "homing_outbox_queued"), Some(1.0), "{text}");
    assert!(sample(
        &text,
        r#"homing_outbox_oldest_age_seconds{destination="127.0.0.1:9"}"#
    )
    .is_some());
    assert!(
        sample(&text, r#"homing_relay_failures_total{cause="connect"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "homing_write_batch_size_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // Where a slow send's time went: waiting for its batch, or the commit.
    // Every queued write is counted once, every transaction once.
    let waits = sample(&text, "homing_write_queue_wait_seconds_count").unwrap_or(0.0);
    let commits = sample(&text, "homing_write_commit_seconds_count").unwrap_or(0.0);
    assert!(waits >= 1.0, "{text}");
    assert!(commits >= 1.0 && commits <= waits, "{text}");
    assert!(
        sample(&text, "homing_write_commit_seconds_sum").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, r#"homing_token_checks_total{source="database"}"#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // Once the daemon has read the revocation counter, a token it checked
    // before is answered from its cache.
    let mut cached = None;
    for _ in 0..60 {
        let me = app
            .get_auth("/api/v1/account", &alice.device(0).token)
            .await;
        assert_eq!(me.status(), 200);
        text = app.get("/metrics").await.text().await.unwrap();
        cached = sample(&text, r#"homing_token_checks_total{source="cache"}"#);
        if cached.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(cached.unwrap_or(0.0) >= 1.0, "{text}");
    assert!(
        sample(&text, "homing_db_pool_wait_seconds_count").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, "homing_db_pool_max").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, r#"homing_db_pool_connections{state="idle"}"#).is_some(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "homing_write_queue_depth"),
        Some(0.0),
        "{text}"
    );

    // Dropping the queue drops the destination's series.
    let mut conn = app.state.db.get().unwrap();
    homing::admin::federation::drop_queue(&mut conn, "127.0.0.1:9").unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        sample(&text, r#"homing_outbox_depth{destination="127.0.0.1:9"}"#),
        None,
        "{text}"
    );
    assert_eq!(sample(&text, "homing_outbox_queued"), Some(0.0), "{text}");
}

#[tokio::test]
async fn a_metrics_token_is_required_once_configured() {
    let token = "scrape-token-0123456789";
    let app = spawn_app_with(vec![("HOMING__SERVER__METRICS_TOKEN", token)]).await;
    let without = app.get("/metrics").await;
    assert_eq!(without.status(), 401);
    let body: Value = without.json().await.unwrap();
    assert_eq!(body["error"], "metrics_token_required");
    for presented in ["wrong-token-0123456789", "", token.trim_end_matches('9')] {
        let response = app
            .http
            .get(app.url("/metrics"))
            .bearer_auth(presented)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{presented:?}");
    }
    let response = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("homing_build_info"));
}
