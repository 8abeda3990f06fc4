//! The public documents servers publish: a server's signing keys
//! (`/.well-known/homing/keys`) and an address's identity
//! (`/.well-known/homing/identity/{alias}`). Servers serve and fetch them;
//! clients read them.

use serde::{Deserialize, Serialize};

use crate::crypto::identity::SignedDeviceList;
use crate::crypto::PublicKey;

/// The identity document served for an address.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityDocument {
    pub address: String,
    pub account_key: PublicKey,
    pub signed_device_list: SignedDeviceList,
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
