//! `GET /.well-known/homing/keys`: this server's signing keys, current and
//! retired, so peers can verify what it signed.

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::storage::schema::server_keys;
use crate::storage::StorageError;
use crate::with_backend;

/// How long peers may cache this document.
const CACHE_SECS: u64 = 3_600;

pub use homing_proto::documents::{KeysDocument, PublishedKey};

pub async fn keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = crate::time::now_ms();
    type KeyRow = (String, Vec<u8>, i64, Option<i64>, bool);
    let rows: Vec<KeyRow> = state
        .db
        .run(move |conn| {
            with_backend!(conn, c => server_keys::table
                .filter(server_keys::expires_at.is_null().or(server_keys::expires_at.gt(now)))
                .order(server_keys::created_at.desc())
                .select((
                    server_keys::key_id,
                    server_keys::public_key,
                    server_keys::created_at,
                    server_keys::expires_at,
                    server_keys::is_current,
                ))
                .load(c))
            .map_err(StorageError::from)
        })
        .await?;
    let document = KeysDocument {
        server_name: state.settings.server_name.to_string(),
        current_key_id: rows
            .iter()
            .find(|row| row.4)
            .map(|row| row.0.clone())
            .unwrap_or_default(),
        keys: rows
            .into_iter()
            .map(
                |(key_id, public_key, created_at, expires_at, _)| PublishedKey {
                    key_id,
                    algorithm: "ed25519".into(),
                    public_key: URL_SAFE_NO_PAD.encode(public_key),
                    created_at,
                    expires_at,
                },
            )
            .collect(),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", format!("public, max-age={CACHE_SECS}")))
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .json(document))
}
