//! Accounts, aliases and devices on this server: registration, device list
//! changes and public look-ups. No HTTP here; handlers call these.

pub mod account_changes;
pub mod departure;
mod devices;
pub mod invites;
pub mod links;
mod register;

use diesel::prelude::*;

use crate::crypto::identity::{DeviceList, DocumentError, SignedDeviceList};
use crate::crypto::{PublicKey, SignatureBytes};
use crate::storage::schema::accounts;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

pub use devices::{add_device, list_devices, revoke_device, DeviceInfo};
pub use register::{invite_hash, register, Registration, RegistrationOutcome};

/// Why an identity operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("registration is closed on this server")]
    RegistrationClosed,
    #[error("this server registers by invitation: an invite code is required")]
    InviteRequired,
    #[error("the invite code is invalid, used up, expired or revoked")]
    InviteInvalid,
    #[error("the alias `{0}` is reserved")]
    AliasReserved(String),
    #[error("the alias is registered to another account key")]
    AliasTaken,
    #[error("this account key is already registered as `{0}`")]
    AccountExists(String),
    #[error("a device signing key in this list is registered already")]
    DeviceKeyInUse,
    #[error("device id `{0}` was used by this account before")]
    DeviceIdUsed(String),
    #[error("invalid document: {0}")]
    Document(#[from] DocumentError),
    #[error("the registration proof does not verify with the account key")]
    BadProof,
    #[error("device list version {offered} is not newer than the current {current}")]
    Rollback { offered: u64, current: u64 },
    #[error("the device list does not match the change: {0}")]
    ListMismatch(String),
    #[error("no such device")]
    UnknownDevice,
    #[error("no such account")]
    UnknownAccount,
    #[error("the alias `{0}` belonged to an account that left this server")]
    AliasDeparted(String),
    #[error("the departure's time is more than five minutes from this server's clock")]
    StaleDeparture,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for IdentityError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Storage(StorageError::Query(error))
    }
}

/// An account as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = accounts)]
pub struct AccountRow {
    pub account_key: String,
    pub alias: String,
    pub disabled_at: Option<i64>,
    pub retention_keep_ms: Option<i64>,
    pub device_list_version: i64,
    pub device_list: Vec<u8>,
    pub device_list_signature: Vec<u8>,
}

impl AccountRow {
    /// The signed device list exactly as the account key signed it.
    pub fn signed_device_list(&self) -> Result<SignedDeviceList, StorageError> {
        let device_list: DeviceList = serde_json::from_slice(&self.device_list)
            .map_err(|e| StorageError::Corrupt(format!("stored device list unreadable: {e}")))?;
        let signature: [u8; 64] =
            self.device_list_signature
                .as_slice()
                .try_into()
                .map_err(|_| {
                    StorageError::Corrupt("stored device list signature is not 64 bytes".into())
                })?;
        Ok(SignedDeviceList {
            device_list,
            signature: SignatureBytes(ed25519_dalek::Signature::from_bytes(&signature)),
        })
    }
}

/// An account and its signed device list, as published.
#[derive(Debug, Clone)]
pub struct Identity {
    pub alias: String,
    pub account_key: PublicKey,
    pub signed_device_list: SignedDeviceList,
}

fn identity_from(row: AccountRow) -> Result<Identity, IdentityError> {
    let account_key = PublicKey::parse(&row.account_key).map_err(DocumentError::from)?;
    Ok(Identity {
        signed_device_list: row.signed_device_list()?,
        alias: row.alias,
        account_key,
    })
}

/// The account registered under `alias`, unless disabled.
pub fn identity_by_alias(
    conn: &mut DbConnection,
    alias: &str,
) -> Result<Option<Identity>, IdentityError> {
    let row: Option<AccountRow> = with_backend!(conn, c => accounts::table
        .filter(accounts::alias.eq(alias))
        .filter(accounts::disabled_at.is_null())
        .select(AccountRow::as_select())
        .first(c)
        .optional())?;
    row.map(identity_from).transpose()
}

/// The account with this key, unless disabled.
pub fn identity_by_key(
    conn: &mut DbConnection,
    account_key: &str,
) -> Result<Option<Identity>, IdentityError> {
    let row: Option<AccountRow> = with_backend!(conn, c => accounts::table
        .filter(accounts::account_key.eq(account_key))
        .filter(accounts::disabled_at.is_null())
        .select(AccountRow::as_select())
        .first(c)
        .optional())?;
    row.map(identity_from).transpose()
}

pub(crate) fn load_account(
    conn: &mut DbConnection,
    account_key: &str,
) -> Result<AccountRow, IdentityError> {
    let row: Option<AccountRow> = with_backend!(conn, c => accounts::table
        .filter(accounts::account_key.eq(account_key))
        .select(AccountRow::as_select())
        .first(c)
        .optional())?;
    row.ok_or(IdentityError::UnknownAccount)
}
