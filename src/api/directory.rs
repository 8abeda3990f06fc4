//! Public look-ups of identities: by account key, by alias, by WebFinger,
//! and the authenticated directory clients use for any address.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Authenticated;
use crate::address::{Address, Alias};
use crate::api::error::ApiError;
use crate::api::AppState;
use crate::crypto::identity::SignedDeviceList;
use crate::crypto::PublicKey;
use crate::federation::directory::RemoteIdentity;
use crate::identity::{self, Identity};

/// Link relation of the identity document in WebFinger answers.
pub const IDENTITY_REL: &str = "urn:homing:rel:identity";

pub use homing_proto::documents::IdentityDocument;

fn document(state: &AppState, identity: Identity) -> Result<IdentityDocument, ApiError> {
    let alias = Alias::from_stored(&identity.alias).map_err(ApiError::internal)?;
    Ok(IdentityDocument {
        address: Address::new(alias, state.settings.server_name.clone()).to_string(),
        account_key: identity.account_key,
        signed_device_list: identity.signed_device_list,
    })
}

fn unknown(what: &str) -> ApiError {
    ApiError::not_found("unknown_identity", format!("no identity for {what}"))
}

/// A local address's identity; for an account that left, `410 Gone` with
/// its signed departure.
async fn local_by_alias(state: &AppState, alias: Alias) -> Result<IdentityDocument, ApiError> {
    let lookup = alias.clone();
    let server = state.settings.server_name.clone();
    let (found, departure) = state
        .db
        .run(move |conn| {
            let found = identity::identity_by_alias(conn, lookup.as_str())?;
            let departure = match found {
                Some(_) => None,
                None => identity::departure::departure(conn, &server, lookup.as_str())?,
            };
            Ok::<_, identity::IdentityError>((found, departure))
        })
        .await?;
    if let Some(departure) = departure {
        return Err(ApiError::Gone(Box::new(departure)));
    }
    document(state, found.ok_or_else(|| unknown(alias.as_str()))?)
}

/// An account key's current signed device list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountDevices {
    pub account_key: PublicKey,
    pub signed_device_list: SignedDeviceList,
}

/// The signed device list of a local account, by account key. Public:
/// the list is signed by the account key, so whoever reads it can check it.
#[utoipa::path(
    get,
    path = "/api/v1/users/{account_key}/devices",
    tag = "directory",
    params(("account_key" = PublicKey, Path, description = "The account key.")),
    responses(
        (status = 200, description = "The signed device list.", body = AccountDevices),
        (status = 400, description = "Not a valid account key."),
        (status = 404, description = "No local account has this key."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn devices_by_key(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let key = PublicKey::parse(&path.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_account_key", e.to_string()))?;
    let lookup = key.to_string();
    let found = state
        .db
        .run(move |conn| identity::identity_by_key(conn, &lookup))
        .await?
        .ok_or_else(|| unknown("this account key"))?;
    Ok(HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .json(AccountDevices {
            account_key: found.account_key,
            signed_device_list: found.signed_device_list,
        }))
}

/// `GET /.well-known/homing/identity/{alias}`.
pub async fn identity_by_alias(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let alias = Alias::parse(&path.into_inner()).map_err(|_| unknown("this alias"))?;
    let doc = local_by_alias(&state, alias).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .insert_header(("Cache-Control", "public, max-age=60"))
        .json(doc))
}

#[derive(Debug, Deserialize)]
pub struct WebFingerQuery {
    resource: Option<String>,
}

/// `GET /.well-known/webfinger?resource=acct:alias@server` (RFC 7033).
pub async fn webfinger(
    state: web::Data<AppState>,
    query: web::Query<WebFingerQuery>,
) -> Result<HttpResponse, ApiError> {
    let resource = query.into_inner().resource.ok_or_else(|| {
        ApiError::bad_request("invalid_resource", "the resource parameter is required")
    })?;
    let address = resource
        .strip_prefix("acct:")
        .and_then(|acct| Address::parse(acct).ok())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_resource", "expected resource=acct:alias@server")
        })?;
    if !state.settings.local_names().contains(address.server()) {
        return Err(unknown(&resource));
    }
    let doc = local_by_alias(&state, address.alias().clone()).await?;
    let scheme = if state.settings.federation.allow_insecure_http {
        "http"
    } else {
        "https"
    };
    let href = format!(
        "{scheme}://{}/.well-known/homing/identity/{}",
        state.settings.server_name,
        address.alias()
    );
    let jrd = json!({
        "subject": format!("acct:{address}"),
        "links": [{ "rel": IDENTITY_REL, "type": "application/json", "href": href }],
        "properties": { "urn:homing:account_key": doc.account_key },
    });
    Ok(HttpResponse::Ok()
        .content_type("application/jrd+json")
        .insert_header(("Access-Control-Allow-Origin", "*"))
        .body(jrd.to_string()))
}

/// The identity behind any address, local or on another server, for this
/// server's own clients. Remote answers are cached and their account key
/// pinned: `key_changed` says the served key is not the first one seen.
#[utoipa::path(
    get,
    path = "/api/v1/directory/{address}",
    tag = "directory",
    security(("bearer" = [])),
    params(("address" = String, Path, description = "`alias@server`.")),
    responses(
        (status = 200, description = "The identity document.", body = RemoteIdentity),
        (status = 400, description = "Not a valid address."),
        (status = 403, description = "This server does not federate with that server (`federation_denied`), or that server is at a loopback, private or reserved address (`private_address`)."),
        (status = 404, description = "No identity at that address."),
        (status = 410, description = "The account left its server (`account_gone`): the departure its account key signed.", body = homing_proto::documents::DepartureDocument),
        (status = 502, description = "The other server could not be reached or answered badly."),
        (status = 503, description = "The database is unavailable."),
    )
)]
pub async fn directory(
    state: web::Data<AppState>,
    device: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let address = Address::parse(&path.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_address", e.to_string()))?;
    if !state.settings.local_names().contains(address.server()) {
        use crate::federation::directory::{remote_identity, DirectoryError, Lookup};
        // A remote look-up may fetch and store a document from elsewhere.
        state
            .rate_limits
            .directory_per_account
            .check(&device.0.account_key)
            .map_err(crate::api::auth::too_many)?;
        let lookup = Lookup {
            db: &state.db,
            client: &state.federation,
            federation: &state.settings.federation,
        };
        let found = remote_identity(&lookup, &address)
            .await
            .map_err(|error| match error {
                DirectoryError::Unknown(what) => unknown(&what),
                DirectoryError::Denied(_) => {
                    ApiError::forbidden("federation_denied", error.to_string())
                }
                DirectoryError::PrivateAddress(_) => {
                    ApiError::forbidden("private_address", error.to_string())
                }
                DirectoryError::Gone(departure) => ApiError::Gone(departure),
                DirectoryError::Remote(_) | DirectoryError::Rollback { .. } => {
                    ApiError::BadGateway(error.to_string())
                }
                DirectoryError::Storage(cause) => cause.into(),
            })?;
        return Ok(HttpResponse::Ok().json(found));
    }
    let doc = local_by_alias(&state, address.alias().clone()).await?;
    let pinned = doc.account_key.to_string();
    Ok(HttpResponse::Ok().json(RemoteIdentity {
        document: doc,
        pinned_account_key: pinned,
        key_changed: false,
    }))
}
