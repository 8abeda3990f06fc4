//! Identities on other servers, fetched for this server's own clients:
//! verified, cached briefly, and pinned per address so a changed account
//! key is reported as such and never silently accepted. Device list
//! versions only grow: a list older than one seen before for the address
//! (under the same account key) is refused.

pub mod cache;

use std::time::Duration;

use diesel::prelude::*;

use super::client::read_limited;
use super::resolver::{FederationClient, PrivateAddress, ResolveError};
use crate::address::Address;
use crate::config::FederationSettings;
use crate::storage::schema::remote_identities;
use crate::storage::{Database, StorageError};
use crate::with_backend;
use homing_proto::documents::{DepartureDocument, IdentityDocument};

/// How long a fetched identity is served from the cache.
const CACHE: Duration = Duration::from_secs(300);
/// Largest identity document read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why a remote identity could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("no identity for {0}")]
    Unknown(String),
    #[error("this server does not federate with {0}")]
    Denied(String),
    /// The server is at an address this server may not connect to.
    #[error("{0}")]
    PrivateAddress(String),
    #[error("{0}")]
    Remote(String),
    #[error(
        "{address}: its server served version {offered} of the device list, \
         older than version {seen} seen before: refusing it"
    )]
    Rollback {
        address: String,
        seen: i64,
        offered: i64,
    },
    /// The account left its server, which served the departure its
    /// account key signed.
    #[error("{}", .0.message)]
    Gone(Box<DepartureDocument>),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for DirectoryError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Storage(error.into())
    }
}

/// The device list version of a document, as stored.
fn version(document: &IdentityDocument) -> i64 {
    i64::try_from(document.signed_device_list.device_list.version).unwrap_or(i64::MAX)
}

/// A verified remote identity and what the pin says about it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RemoteIdentity {
    #[serde(flatten)]
    pub document: IdentityDocument,
    /// The account key first seen for this address.
    pub pinned_account_key: String,
    /// True when the served key differs from the pinned one.
    pub key_changed: bool,
}

/// What a look-up of a remote identity works with.
pub struct Lookup<'a> {
    pub db: &'a Database,
    pub client: &'a FederationClient,
    pub federation: &'a FederationSettings,
}

/// The identity behind `address` (on another server).
pub async fn remote_identity(
    lookup: &Lookup<'_>,
    address: &Address,
) -> Result<RemoteIdentity, DirectoryError> {
    let key = address.to_string();
    let now = crate::time::now_ms();
    let cached: Option<(String, String)> = lookup
        .db
        .run({
            let key = key.clone();
            move |conn| {
                Ok::<_, StorageError>(with_backend!(conn, c => remote_identities::table
                    .find(&key)
                    .filter(remote_identities::expires_at.gt(now))
                    .select((remote_identities::document, remote_identities::pinned_account_key))
                    .first(c)
                    .optional())?)
            }
        })
        .await?;
    if let Some((document, pinned)) = cached {
        if let Ok(document) = serde_json::from_str::<IdentityDocument>(&document) {
            let key_changed = document.account_key.to_string() != pinned;
            return Ok(RemoteIdentity {
                document,
                pinned_account_key: pinned,
                key_changed,
            });
        }
    }
    let server = address.server().clone();
    let federation = lookup.federation.clone();
    let allowed = lookup
        .db
        .run(move |conn| super::policy::is_allowed(conn, &federation, &server))
        .await?;
    if !allowed {
        return Err(DirectoryError::Denied(address.server().to_string()));
    }
    let document = match fetch(lookup, address).await {
        Err(DirectoryError::Gone(departure)) => {
            return Err(pinned_departure(lookup, &key, departure).await)
        }
        other => other?,
    };
    store(lookup, &key, document, now).await
}

async fn fetch(lookup: &Lookup<'_>, address: &Address) -> Result<IdentityDocument, DirectoryError> {
    let remote =
        |e: &dyn std::fmt::Display| DirectoryError::Remote(format!("{}: {e}", address.server()));
    let refused =
        |e: &PrivateAddress| DirectoryError::PrivateAddress(format!("{}: {e}", address.server()));
    let destination = lookup
        .client
        .resolve(address.server())
        .await
        .map_err(|e| match &e {
            ResolveError::PrivateAddress(refusal) => refused(refusal),
            _ => remote(&e),
        })?;
    let url = format!(
        "{}/.well-known/homing/identity/{}",
        destination.base_url,
        address.alias()
    );
    let response = lookup
        .client
        .http()
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| match PrivateAddress::find_in(&e) {
            Some(refusal) => refused(refusal),
            None => remote(&e),
        })?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(DirectoryError::Unknown(address.to_string()));
    }
    if response.status() == reqwest::StatusCode::GONE {
        let body = read_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| remote(&e))?;
        return Err(departed(address, &body).map_err(|e| remote(&e))?);
    }
    if !response.status().is_success() {
        return Err(remote(&format!("answered {}", response.status())));
    }
    let body = read_limited(response, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|e| remote(&e))?;
    let document: IdentityDocument = serde_json::from_slice(&body).map_err(|e| remote(&e))?;
    if Address::parse(&document.address).ok().as_ref() != Some(address) {
        return Err(remote(&"the identity document is for another address"));
    }
    document
        .signed_device_list
        .verify(&document.account_key)
        .map_err(|e| remote(&format!("the device list does not verify: {e}")))?;
    Ok(document)
}

/// A departure is believed only from the key pinned for the address (or,
/// with no pin, from the key that signed it): anyone else's is a server
/// speaking for an account it does not hold.
async fn pinned_departure(
    lookup: &Lookup<'_>,
    key: &str,
    departure: Box<DepartureDocument>,
) -> DirectoryError {
    let address = key.to_string();
    let pinned = lookup
        .db
        .run(move |conn| {
            Ok::<_, StorageError>(with_backend!(conn, c => remote_identities::table
                .find(&address)
                .select(remote_identities::pinned_account_key)
                .first::<String>(c)
                .optional())?)
        })
        .await;
    match pinned {
        Ok(Some(pinned)) if pinned != departure.departure.account_key.to_string() => {
            DirectoryError::Remote(format!(
                "{key}: a departure signed by another key than the one pinned"
            ))
        }
        Ok(_) => DirectoryError::Gone(departure),
        Err(error) => error.into(),
    }
}

/// A `410 Gone` answer's departure, checked: it names this very address
/// and its account key signed it. Whether that key is the one pinned is
/// for the caller to see.
fn departed(address: &Address, body: &[u8]) -> Result<DirectoryError, String> {
    let document: DepartureDocument =
        serde_json::from_slice(body).map_err(|e| format!("unreadable departure: {e}"))?;
    let departure = &document.departure;
    let named = Address::parse(&format!("{}@{}", departure.alias, departure.server));
    if named.ok().as_ref() != Some(address) {
        return Err("the departure is for another address".into());
    }
    departure
        .verify(&document.signature)
        .map_err(|e| format!("the departure does not verify: {e}"))?;
    Ok(DirectoryError::Gone(Box::new(document)))
}

async fn store(
    lookup: &Lookup<'_>,
    key: &str,
    document: IdentityDocument,
    now: i64,
) -> Result<RemoteIdentity, DirectoryError> {
    let account_key = document.account_key.to_string();
    let text =
        serde_json::to_string(&document).map_err(|e| DirectoryError::Remote(e.to_string()))?;
    let expires_at = now.saturating_add(crate::time::duration_ms(CACHE));
    let key = key.to_string();
    let offered = version(&document);
    let pinned = lookup
        .db
        .run(move |conn| {
            crate::storage::write_transaction(conn, |conn| {
                let known: Option<(String, String, i64)> =
                    with_backend!(conn, c => remote_identities::table
                        .find(&key)
                        .select((
                            remote_identities::pinned_account_key,
                            remote_identities::document,
                            remote_identities::pinned_version,
                        ))
                        .first(c)
                        .optional())?;
                // The highest version seen under this account key: kept for
                // the pinned key; for another key, the cached copy's.
                let seen = match &known {
                    Some((pinned, _, pinned_version)) if *pinned == account_key => *pinned_version,
                    Some((_, cached, _)) => serde_json::from_str::<IdentityDocument>(cached)
                        .ok()
                        .filter(|cached| cached.account_key.to_string() == account_key)
                        .map_or(0, |cached| version(&cached)),
                    None => 0,
                };
                if offered < seen {
                    return Err(DirectoryError::Rollback {
                        address: key.clone(),
                        seen,
                        offered,
                    });
                }
                let (pinned, pinned_version) = match known {
                    Some((pinned, _, pinned_version)) if pinned != account_key => {
                        (pinned, pinned_version)
                    }
                    _ => (account_key.clone(), offered),
                };
                let changed_at = (pinned != account_key).then_some(now);
                let row = (
                    remote_identities::address.eq(&key),
                    remote_identities::account_key.eq(&account_key),
                    remote_identities::document.eq(&text),
                    remote_identities::pinned_account_key.eq(&pinned),
                    remote_identities::key_changed_at.eq(changed_at),
                    remote_identities::fetched_at.eq(now),
                    remote_identities::expires_at.eq(expires_at),
                    remote_identities::pinned_version.eq(pinned_version),
                );
                with_backend!(conn, c => diesel::insert_into(remote_identities::table)
                    .values(row)
                    .on_conflict(remote_identities::address)
                    .do_update()
                    .set((
                        remote_identities::account_key.eq(&account_key),
                        remote_identities::document.eq(&text),
                        remote_identities::key_changed_at.eq(changed_at),
                        remote_identities::fetched_at.eq(now),
                        remote_identities::expires_at.eq(expires_at),
                        remote_identities::pinned_version.eq(pinned_version),
                    ))
                    .execute(c))?;
                Ok::<_, DirectoryError>(pinned)
            })
        })
        .await?;
    let key_changed = pinned != document.account_key.to_string();
    Ok(RemoteIdentity {
        document,
        pinned_account_key: pinned,
        key_changed,
    })
}
