//! `/federation/v1/*`: what other servers call. Every handler takes a
//! `SignedRequest`, so it only runs for a verified, allowed origin.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::signed::SignedRequest;
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::federation::inbound::{self, InboundError};
use crate::federation::wire::{Recall, Transaction};
use crate::mailbox::InboundRules;
use crate::storage::mail::outbox;

fn rules(state: &AppState) -> InboundRules {
    let settings = &state.settings;
    InboundRules {
        local_names: settings.local_names(),
        limits: settings.limits.clone(),
        device_inactivity: settings.retention.device_inactivity,
        max_pending_age: settings.retention.max_pending_age,
        inline_max_bytes: settings.gateway.inline_max_bytes,
    }
}

impl From<InboundError> for ApiError {
    fn from(error: InboundError) -> Self {
        let message = error.to_string();
        match error {
            InboundError::Invalid(_) => ApiError::bad_request("invalid_transaction", message),
            InboundError::TooLarge { limit, .. } => ApiError::PayloadTooLarge { message, limit },
            InboundError::TxnReused(_) => {
                ApiError::conflict("txn_reused", message, Default::default())
            }
            InboundError::Mailbox(cause) => cause.into(),
        }
    }
}

/// `PUT /federation/v1/txn/{txn_id}`.
pub async fn put_txn(
    state: web::Data<AppState>,
    path: web::Path<String>,
    signed: SignedRequest,
) -> Result<HttpResponse, ApiError> {
    let transaction: Transaction = serde_json::from_slice(&signed.body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("invalid transaction: {e}")))?;
    let txn_id = path.into_inner();
    let origin = signed.origin.to_string();
    inbound::check(&origin, &txn_id, &transaction)?;
    let rules = rules(&state);
    let digest = inbound::body_digest(&signed.body);
    // Through the write queue: the transaction shares a commit with the
    // sends and other transactions waiting, instead of competing with them
    // for the write lock.
    let outcome = state
        .write_queue
        .run(move |conn, _| {
            match inbound::receive_transaction(
                conn,
                &rules,
                &origin,
                &txn_id,
                &digest,
                &transaction,
            ) {
                Ok(outcome) => Ok(Ok(outcome)),
                // Refusals of the transaction as a whole, decided before
                // anything is written.
                Err(InboundError::Mailbox(error)) => Err(error),
                Err(refused) => Ok(Err(refused)),
            }
        })
        .await??;
    if !outcome.replayed {
        state
            .metrics
            .inbound_messages
            .inc_by(outcome.response.results.len() as u64);
    }
    state.notifier.deliveries(outcome.new_deliveries);
    Ok(HttpResponse::Ok().json(outcome.response))
}

/// `PUT /federation/v1/recall/{message_id}`: the origin took its message
/// back; what the named recipients have not acknowledged goes.
pub async fn put_recall(
    state: web::Data<AppState>,
    path: web::Path<String>,
    signed: SignedRequest,
) -> Result<HttpResponse, ApiError> {
    let recall: Recall = serde_json::from_slice(&signed.body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("invalid recall: {e}")))?;
    let message_id = path.into_inner();
    let origin = signed.origin.to_string();
    inbound::check_recall(&origin, &message_id, &recall)?;
    let rules = rules(&state);
    let digest = inbound::body_digest(&signed.body);
    let answer = state
        .write_queue
        .run(move |conn, _| {
            match inbound::receive_recall(conn, &rules, &origin, &message_id, &digest, &recall) {
                Ok(answer) => Ok(Ok(answer)),
                Err(InboundError::Mailbox(error)) => Err(error),
                Err(refused) => Ok(Err(refused)),
            }
        })
        .await??;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /federation/v1/hello`: the origin is back; retry its queue now.
pub async fn hello(
    state: web::Data<AppState>,
    signed: SignedRequest,
) -> Result<HttpResponse, ApiError> {
    let origin = signed.origin.to_string();
    let known = state
        .db
        .run(move |conn| outbox::retry_now(conn, &origin))
        .await?;
    if known {
        state.relay.wake();
    }
    Ok(HttpResponse::Ok().json(json!({ "queued_for_you": known })))
}
