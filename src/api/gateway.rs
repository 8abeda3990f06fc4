//! `GET /api/v1/gateway`: the WebSocket upgrade.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::Authenticated;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::gateway::{GatewayEvent, SessionBody, SessionConfig};
use crate::mailbox;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GatewayQuery {
    /// The last cursor this device saw; anything newer is announced at once.
    resume: Option<i64>,
}

/// Upgrades to the WebSocket gateway, where the server pushes `DM_NOTIFY`
/// and `DELIVERY_STATUS` events as they happen.
#[utoipa::path(
    get,
    path = "/api/v1/gateway",
    tag = "gateway",
    security(("bearer" = [])),
    params(GatewayQuery),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol."),
        (status = 400, description = "Not a WebSocket upgrade request, or a bad `resume`."),
        (status = 429, description = "This device has too many gateway sessions open."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn gateway(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    device: Authenticated,
    query: web::Query<GatewayQuery>,
) -> Result<HttpResponse, ApiError> {
    let device = device.0;
    let settings = &state.settings.gateway;
    // Register before looking for missed mail, so nothing committed in
    // between can slip through unannounced.
    let ticket = state
        .hub
        .register(
            device.device_row,
            &device.account_key,
            &device.token_hash,
            settings.max_sessions_per_device,
        )
        .map_err(|e| ApiError::TooManyRequests {
            message: e.to_string(),
            retry_after_secs: 5,
        })?;
    // actix-ws answers the handshake and decodes what the device sends.
    // Its `Session` and the body it made (a channel to the socket) are
    // dropped: the session itself is the answer's body, polled by the
    // connection's task (see `gateway::session`).
    let (response, _, stream) = match actix_ws::handle(&request, payload) {
        Ok(parts) => parts,
        Err(error) => {
            state.hub.unregister(ticket.device_row, ticket.id);
            return Err(ApiError::bad_request("not_websocket", error.to_string()));
        }
    };
    let mut initial = Vec::new();
    if let Some(cursor) = query.resume {
        let device_row = device.device_row;
        let latest = state
            .db
            .run(move |conn| mailbox::latest_pending(conn, device_row, cursor))
            .await;
        match latest {
            Ok(Some(cursor)) => initial.push(GatewayEvent::DmNotify {
                cursor,
                message: None,
            }),
            Ok(None) => {}
            Err(error) => {
                state.hub.unregister(ticket.device_row, ticket.id);
                return Err(error.into());
            }
        }
    }
    let token_expires_in = device
        .token_expires_at
        .saturating_sub(crate::time::now_ms())
        .max(0);
    let config = SessionConfig {
        token_expires_in: std::time::Duration::from_millis(token_expires_in as u64),
        heartbeat_interval: settings.heartbeat_interval,
        heartbeat_timeout: settings.heartbeat_timeout,
    };
    let session = SessionBody::new(state.hub.clone(), ticket, stream, config, initial);
    Ok(response.set_body(session).map_into_boxed_body())
}
