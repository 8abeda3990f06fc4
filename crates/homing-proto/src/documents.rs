//! The public documents servers publish: a server's signing keys
//! (`/.well-known/homing/keys`) and an address's identity
//! (`/.well-known/homing/identity/{alias}`), or the account's signed
//! departure once it has left. Servers serve and fetch them; clients read
//! them.

use serde::{Deserialize, Serialize};

use crate::crypto::identity::{DepartureStatement, SignedDeviceList};
use crate::crypto::{PublicKey, SignatureBytes};

/// The identity document served for an address.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityDocument {
    pub address: String,
    pub account_key: PublicKey,
    pub signed_device_list: SignedDeviceList,
}

/// Served with `410 Gone` for an address whose account left: what the
/// account key signed when it asked to be deleted.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DepartureDocument {
    /// `account_gone`, like any error answer's code.
    pub error: String,
    pub message: String,
    pub departure: DepartureStatement,
    pub signature: SignatureBytes,
}

/// `DELETE /api/v1/account`: the account's departure, signed by its
/// account key (`DepartureStatement` for this account, its alias, this
/// server and `departed_at`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepartureRequest {
    /// Unix ms; within five minutes of the server's clock.
    pub departed_at: i64,
    pub signature: SignatureBytes,
}

impl DepartureDocument {
    pub fn new(departure: DepartureStatement, signature: SignatureBytes) -> Self {
        Self {
            error: "account_gone".into(),
            message: format!("{}@{} left this server", departure.alias, departure.server),
            departure,
            signature,
        }
    }
}

/// The published key document.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeysDocument {
    pub server_name: String,
    pub current_key_id: String,
    pub keys: Vec<PublishedKey>,
}

/// One key. `expires_at` (Unix ms) is set on retired keys: signatures made
/// with them are accepted until then.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishedKey {
    pub key_id: String,
    pub algorithm: String,
    pub public_key: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}
