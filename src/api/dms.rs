//! `/api/v1/dms/*`: send, sync, ack and delivery status.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{too_many, Authenticated};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::mailbox::{
    self, PreparedSend, Retention, SendRequest, SendResponse, Sender, StatusEvent, SyncPage,
};
use crate::storage::StorageError;

/// Sends an encrypted message to up to 100 recipients.
///
/// Idempotent by `message_id`: a retry with the same content gets the
/// first answer again.
#[utoipa::path(
    post,
    path = "/api/v1/dms/send",
    tag = "dms",
    security(("bearer" = [])),
    request_body = SendRequest,
    responses(
        (status = 202, description = "Accepted for every recipient; see each one's status.", body = SendResponse),
        (status = 400, description = "An invalid message id, body, address or key wrap."),
        (status = 403, description = "This server does not federate with a recipient's server (`federation_denied`), or that server is named by a loopback or private address or `localhost` (`private_address`)."),
        (status = 404, description = "A local recipient does not exist."),
        (status = 409, description = "The device lists are stale (`stale_devices`), or the message id was used for other content."),
        (status = 413, description = "The body is larger than the server accepts."),
        (status = 429, description = "Sending too fast, or every recipient's mailbox is full (`mailbox_full`)."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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
    let context = state.send_context.clone();
    let sender = Sender {
        account_key: device.account_key,
        device_id: device.device_id,
    };
    let prepared = PreparedSend::new(body.into_inner(), &context.limits)?;
    let remote = prepared.remote_servers(&state.settings.server_name);
    if !remote.is_empty() {
        state
            .new_destinations
            .admit(
                &state.db,
                &sender.account_key,
                remote,
                state.settings.federation.allow_private_addresses,
            )
            .await?;
    }
    // The wait for the commit and what follows it run in a task of their
    // own: a client that goes away meanwhile cancels this handler, but its
    // committed message must still wake the recipients and the relay.
    let response = tokio::spawn(async move {
        let job = mailbox::SendJob::new(context, sender, prepared);
        let outcome = state.write_queue.batched(job).await?;
        if !outcome.replayed {
            state.metrics.messages_accepted.inc();
            state
                .metrics
                .message_bytes
                .observe(outcome.body_bytes as f64);
        }
        state.relay.queued(&outcome.queued_destinations);
        state.notifier.deliveries(outcome.new_deliveries);
        Ok::<_, mailbox::MailboxError>(outcome.response)
    })
    .await
    .map_err(StorageError::from)??;
    Ok(HttpResponse::Accepted().json(response))
}

/// Where to continue, and how many items at most.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncBody {
    /// The cursor of the last item already processed; 0 to start.
    #[serde(default)]
    #[schema(minimum = 0)]
    cursor: i64,
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 500, default = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// The device's pending messages after `cursor`, oldest first.
#[utoipa::path(
    post,
    path = "/api/v1/dms/sync",
    tag = "dms",
    security(("bearer" = [])),
    request_body = SyncBody,
    responses(
        (status = 200, description = "A page of pending messages.", body = SyncPage),
        (status = 400, description = "A negative cursor or a limit out of range."),
        (status = 503, description = "The database is unavailable."),
    )
)]
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

/// Messages this device has stored and no longer needs from the server.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    #[schema(max_items = 500)]
    message_ids: Vec<String>,
}

/// What an acknowledgement did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AckResponse {
    /// Deliveries to this device that were acknowledged now.
    pub acknowledged: usize,
    /// Messages removed from the server as a result.
    pub purged: usize,
}

/// Acknowledges deliveries to this device.
#[utoipa::path(
    post,
    path = "/api/v1/dms/ack",
    tag = "dms",
    security(("bearer" = [])),
    request_body = AckBody,
    responses(
        (status = 200, description = "Acknowledged.", body = AckResponse),
        (status = 400, description = "Too many message ids."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn ack(
    state: web::Data<AppState>,
    device: Authenticated,
    body: web::Json<AckBody>,
) -> Result<HttpResponse, ApiError> {
    let device_row = device.0.device_row;
    let ids = body.into_inner().message_ids;
    let max_keep = state.settings.retention.max_keep;
    mailbox::check_ack(&ids)?;
    // In a task of its own, like a send: the senders hear of a committed
    // ack even if this client has gone away.
    let response = tokio::spawn(async move {
        let outcome = state
            .write_queue
            .run(move |conn, _| mailbox::ack_within(conn, device_row, &ids, max_keep))
            .await?;
        state
            .metrics
            .deliveries_acked
            .inc_by(outcome.acknowledged as u64);
        state.notifier.statuses(outcome.status_events);
        Ok::<_, mailbox::MailboxError>(AckResponse {
            acknowledged: outcome.acknowledged,
            purged: outcome.purged_messages,
        })
    })
    .await
    .map_err(StorageError::from)??;
    Ok(HttpResponse::Ok().json(response))
}

/// What the server knows of the delivery of one sent message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryStatus {
    pub message_id: String,
    pub recipients: Vec<StatusEvent>,
}

/// The delivery state of the caller's message, per recipient.
#[utoipa::path(
    get,
    path = "/api/v1/dms/status/{message_id}",
    tag = "dms",
    security(("bearer" = [])),
    params(
        ("message_id" = String, Path, pattern = "^[A-Za-z0-9_-]{16,64}$",
            description = "The id the message was sent with."),
    ),
    responses(
        (status = 200, description = "Each recipient's state.", body = DeliveryStatus),
        (status = 400, description = "Not a valid message id."),
        (status = 404, description = "The caller sent no message with this id."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn status(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let account = device.0.account_key;
    let message_id = message_id_in(path)?;
    let lookup = message_id.clone();
    let recipients = state
        .db
        .run(move |conn| mailbox::delivery_status(conn, &account, &lookup))
        .await?;
    Ok(HttpResponse::Ok().json(DeliveryStatus {
        message_id,
        recipients,
    }))
}

/// The `since` and `limit` of a delivery feed read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// The `cursor` of the last page read; from the start when absent.
    pub since: Option<String>,
    /// At most this many changes (1 to 500, default 100).
    pub limit: Option<i64>,
}

/// One change of one of the caller's messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedEvent {
    /// Where this change is in the feed.
    pub cursor: String,
    #[serde(flatten)]
    pub event: StatusEvent,
}

/// A page of the delivery feed, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    pub events: Vec<FeedEvent>,
    /// Where the next read starts (`since`); unchanged when nothing new.
    pub cursor: String,
    /// True when more changes are waiting past this page.
    pub more: bool,
}

/// Every change of the caller's sent messages, for as long as the pending
/// age (`retention.max_pending_age`): what a device that was away missed.
#[utoipa::path(
    get,
    path = "/api/v1/dms/status",
    tag = "dms",
    security(("bearer" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "The next changes, oldest first.", body = FeedPage),
        (status = 400, description = "Not a cursor this server gave, or a bad limit."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn feed(
    state: web::Data<AppState>,
    device: Authenticated,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    use crate::storage::mail::feed::{self, FeedCursor};
    let query = query.into_inner();
    let after = match query.since.as_deref() {
        None => FeedCursor::default(),
        Some(text) => FeedCursor::parse(text)
            .ok_or_else(|| ApiError::bad_request("invalid_cursor", "not a feed cursor"))?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=mailbox::MAX_SYNC_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("limit is 1 to {}", mailbox::MAX_SYNC_LIMIT),
        ));
    }
    let account = device.0.account_key;
    let rows = state
        .db
        .run(move |conn| feed::read(conn, &account, after, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    let mut cursor = after;
    let events: Vec<FeedEvent> = rows
        .into_iter()
        .take(limit as usize)
        .map(|(at, message_id, recipient, state, detail, when)| {
            cursor = at;
            FeedEvent {
                cursor: at.to_string(),
                // The sender is the caller, and not part of the answer.
                event: StatusEvent::new("", message_id, recipient, state, when)
                    .with_detail(detail.as_deref()),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(FeedPage {
        events,
        cursor: cursor.to_string(),
        more,
    }))
}

/// Takes back the caller's message from every mailbox here that has not
/// acknowledged it and from relay work still on this server (`recalled`),
/// and asks the servers it was relayed to to do the same (`recalling`,
/// then `recalled` or `not_recalled` when they answer, as the delivery
/// status and feed tell). Answers each recipient's state. Recalling again
/// answers the same.
#[utoipa::path(
    delete,
    path = "/api/v1/dms/{message_id}",
    tag = "dms",
    security(("bearer" = [])),
    params(
        ("message_id" = String, Path, pattern = "^[A-Za-z0-9_-]{16,64}$",
            description = "The id the message was sent with."),
    ),
    responses(
        (status = 200, description = "Each recipient's state after the recall.", body = DeliveryStatus),
        (status = 400, description = "Not a valid message id."),
        (status = 404, description = "The caller sent no message with this id."),
        (status = 429, description = "Recalling (and sending) too fast: recalls count against the device's send rate."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn recall(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // A recall is a write like a send, and may ask other servers: it
    // counts against the device's send rate.
    state
        .rate_limits
        .send_per_device
        .check(&device.0.device_row)
        .map_err(too_many)?;
    let account = device.0.account_key;
    let message_id = message_id_in(path)?;
    let origin = state.settings.server_name.to_string();
    let lookup = message_id.clone();
    let outcome = state
        .write_queue
        .run(move |conn, _| {
            let now = crate::time::now_ms();
            mailbox::recall(conn, &origin, &account, &lookup, now)
        })
        .await?;
    state.notifier.statuses(outcome.changes);
    state.relay.queued(&outcome.destinations);
    Ok(HttpResponse::Ok().json(DeliveryStatus {
        message_id,
        recipients: outcome.recipients,
    }))
}

/// Sets how long the caller's delivered messages stay on the server.
#[utoipa::path(
    put,
    path = "/api/v1/account/retention",
    tag = "accounts",
    security(("bearer" = [])),
    request_body = Retention,
    responses(
        (status = 200, description = "The retention now in force, capped by the server.", body = Retention),
        (status = 503, description = "The database is unavailable."),
    )
)]
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

/// The message id a path names, checked before anything is looked up.
fn message_id_in(path: web::Path<String>) -> Result<String, ApiError> {
    let message_id = path.into_inner();
    if !mailbox::valid_message_id(&message_id) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "invalid message id",
        ));
    }
    Ok(message_id)
}
