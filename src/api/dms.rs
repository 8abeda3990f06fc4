//! `/api/v1/dms/*`: send, sync, ack and delivery status.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{too_many, Authenticated};
use crate::error::ApiError;
use crate::gateway::cluster::{self, ClusterEvent};
use crate::gateway::GatewayEvent;
use crate::mailbox::{
    self, NewDelivery, PreparedSend, Retention, SendContext, SendRequest, Sender, StatusEvent,
};
use crate::startup::AppState;

fn send_context(state: &AppState) -> SendContext {
    let settings = &state.settings;
    SendContext {
        server_name: settings.server_name.clone(),
        limits: settings.limits.clone(),
        max_pending_age: settings.retention.max_pending_age,
        device_inactivity: settings.retention.device_inactivity,
        inline_max_bytes: settings.gateway.inline_max_bytes,
        federation: settings.federation.clone(),
    }
}

/// Tells the senders' devices what changed.
pub fn publish_status(state: &AppState, events: Vec<StatusEvent>) {
    let mut cluster = Vec::with_capacity(events.len());
    for event in events {
        let account = event.sender_account.clone();
        cluster.push(ClusterEvent::Status {
            event: event.clone(),
            account: account.clone(),
        });
        state
            .hub
            .notify_account(&account, GatewayEvent::DeliveryStatus(event));
    }
    to_other_replicas(state, cluster);
}

/// Wakes the devices that got new deliveries, here and on other replicas.
pub fn publish_deliveries(state: &AppState, deliveries: Vec<NewDelivery>) {
    let mut cluster = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        cluster.push(ClusterEvent::Notify {
            device_row: delivery.device_row,
            cursor: delivery.cursor,
        });
        state.hub.notify_device(
            delivery.device_row,
            GatewayEvent::DmNotify {
                cursor: delivery.cursor,
                message: delivery.inline,
            },
        );
    }
    to_other_replicas(state, cluster);
}

/// Hands events to the other replicas without holding up the answer; a
/// lost hint costs latency only (devices resume from their cursor).
fn to_other_replicas(state: &AppState, events: Vec<ClusterEvent>) {
    if events.is_empty() || state.db.backend() != crate::storage::Backend::Postgres {
        return;
    }
    let (db, replica) = (state.db.clone(), state.replica_id.clone());
    tokio::spawn(async move {
        let published = db
            .run(move |conn| cluster::publish(conn, &replica, events))
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "publishing gateway events to other replicas failed");
        }
    });
}

pub async fn send(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let device = device.0;
    state
        .rate_limits
        .send_per_device
        .check(&device.device_row)
        .map_err(too_many)?;
    let context = Arc::new(send_context(&state));
    let sender = Sender {
        account_key: device.account_key,
        device_id: device.device_id,
    };
    let prepared = PreparedSend::new(body.into_inner(), &context.limits)?;
    let outcome = state.send_queue.send(context, sender, prepared).await?;
    if !outcome.replayed {
        state.metrics.messages_accepted.inc();
        state
            .metrics
            .message_bytes
            .observe(outcome.body_bytes as f64);
    }
    if !outcome.queued_destinations.is_empty() {
        state.relay_wake.notify_one();
    }
    publish_deliveries(&state, outcome.new_deliveries);
    Ok(HttpResponse::Accepted().json(outcome.response))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    #[serde(default)]
    cursor: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

pub async fn sync(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<SyncBody>,
) -> Result<HttpResponse, ApiError> {
    let device_row = device.0.device_row;
    let body = body.into_inner();
    if body.cursor < 0 || body.limit < 1 || body.limit > mailbox::MAX_SYNC_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!(
                "cursor must be ≥ 0 and limit 1 to {}",
                mailbox::MAX_SYNC_LIMIT
            ),
        ));
    }
    let page = state
        .db
        .run(move |conn| mailbox::sync(conn, device_row, body.cursor, body.limit))
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    message_ids: Vec<String>,
}

pub async fn ack(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<AckBody>,
) -> Result<HttpResponse, ApiError> {
    let device_row = device.0.device_row;
    let ids = body.into_inner().message_ids;
    let max_keep = state.settings.retention.max_keep;
    let outcome = state
        .db
        .run(move |conn| mailbox::ack(conn, device_row, &ids, max_keep))
        .await?;
    state
        .metrics
        .deliveries_acked
        .inc_by(outcome.acknowledged as u64);
    publish_status(&state, outcome.status_events);
    Ok(HttpResponse::Ok().json(json!({
        "acknowledged": outcome.acknowledged,
        "purged": outcome.purged_messages,
    })))
}

pub async fn status(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = device.0.account_key;
    let message_id = path.into_inner();
    if !mailbox::valid_message_id(&message_id) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "invalid message id",
        ));
    }
    let lookup = message_id.clone();
    let recipients = state
        .db
        .run(move |conn| mailbox::delivery_status(conn, &account, &lookup))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "message_id": message_id, "recipients": recipients })))
}

pub async fn set_retention(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<Retention>,
) -> Result<HttpResponse, ApiError> {
    let account = device.0.account_key;
    let retention = body.into_inner();
    let max_keep = state.settings.retention.max_keep;
    let effective = state
        .db
        .run(move |conn| mailbox::set_retention(conn, &account, retention, max_keep))
        .await?;
    Ok(HttpResponse::Ok().json(effective))
}
