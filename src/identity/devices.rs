//! Adding, revoking and listing an account's devices. Every change comes
//! with a new device list signed by the account key whose version is higher
//! than the stored one and which lists exactly the devices the change leaves.

use std::collections::BTreeSet;

use diesel::prelude::*;

use super::{load_account, IdentityError};
use crate::crypto::canonical::to_canonical_bytes;
use crate::crypto::identity::{DeviceId, DocumentError, SignedDeviceCertificate, SignedDeviceList};
use crate::crypto::{b64, PublicKey};
use crate::storage::schema::{accounts, devices};
use crate::storage::{is_unique_violation, write_transaction, DbConnection, StorageError};
use crate::with_backend;

/// A device as its owner sees it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeviceInfo {
    pub device_id: String,
    pub sign_key: String,
    pub box_key: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub revoked_at: Option<i64>,
}

/// Every device the account ever had, revoked ones included.
pub fn list_devices(
    conn: &mut DbConnection,
    account_key: &str,
) -> Result<Vec<DeviceInfo>, IdentityError> {
    type Row = (String, Vec<u8>, Vec<u8>, i64, i64, Option<i64>);
    let rows: Vec<Row> = with_backend!(conn, c => devices::table
        .filter(devices::account_key.eq(account_key))
        .order(devices::id.asc())
        .select((
            devices::device_id,
            devices::sign_key,
            devices::box_key,
            devices::created_at,
            devices::last_seen_at,
            devices::revoked_at,
        ))
        .load(c))?;
    Ok(rows
        .into_iter()
        .map(
            |(device_id, sign_key, box_key, created_at, last_seen_at, revoked_at)| DeviceInfo {
                device_id,
                sign_key: b64(&sign_key),
                box_key: b64(&box_key),
                created_at,
                last_seen_at,
                revoked_at,
            },
        )
        .collect())
}

pub(super) fn insert_device(
    conn: &mut DbConnection,
    signed: &SignedDeviceCertificate,
    now: i64,
) -> Result<(), IdentityError> {
    let cert = &signed.certificate;
    let row = (
        devices::account_key.eq(cert.account_key.to_string()),
        devices::device_id.eq(cert.device_id.as_str()),
        devices::sign_key.eq(cert.sign_key.as_bytes().to_vec()),
        devices::box_key.eq(cert.box_key.0.to_vec()),
        devices::certificate.eq(to_canonical_bytes(cert).map_err(DocumentError::from)?),
        devices::certificate_signature.eq(signed.signature.to_bytes().to_vec()),
        devices::created_at.eq(now),
        devices::last_seen_at.eq(now),
    );
    with_backend!(conn, c => diesel::insert_into(devices::table).values(row).execute(c))?;
    Ok(())
}

/// The canonical certificates of the account's active devices.
fn active_certificates(
    conn: &mut DbConnection,
    account_key: &str,
) -> Result<BTreeSet<Vec<u8>>, IdentityError> {
    let certs: Vec<Vec<u8>> = with_backend!(conn, c => devices::table
        .filter(devices::account_key.eq(account_key))
        .filter(devices::revoked_at.is_null())
        .select(devices::certificate)
        .load(c))?;
    Ok(certs.into_iter().collect())
}

fn listed_certificates(list: &SignedDeviceList) -> Result<BTreeSet<Vec<u8>>, IdentityError> {
    list.device_list
        .devices
        .iter()
        .map(|cert| to_canonical_bytes(cert).map_err(|e| DocumentError::from(e).into()))
        .collect()
}

/// Refuses a list that is not newer than the stored one.
fn check_newer(stored: i64, list: &SignedDeviceList) -> Result<i64, IdentityError> {
    let offered = list.device_list.version;
    let current = u64::try_from(stored).unwrap_or(0);
    if offered <= current {
        return Err(IdentityError::Rollback { offered, current });
    }
    i64::try_from(offered).map_err(|_| IdentityError::Rollback { offered, current })
}

fn store_list(
    conn: &mut DbConnection,
    account_key: &str,
    version: i64,
    list: &SignedDeviceList,
) -> Result<(), IdentityError> {
    let bytes = to_canonical_bytes(&list.device_list).map_err(DocumentError::from)?;
    with_backend!(conn, c => diesel::update(accounts::table.find(account_key))
        .set((
            accounts::device_list_version.eq(version),
            accounts::device_list.eq(bytes),
            accounts::device_list_signature.eq(list.signature.to_bytes().to_vec()),
        ))
        .execute(c))?;
    Ok(())
}

/// Adds the device in `certificate`; `list` must be the current devices plus
/// this one. Returns the new list version.
pub fn add_device(
    conn: &mut DbConnection,
    account_key: &PublicKey,
    certificate: SignedDeviceCertificate,
    list: SignedDeviceList,
) -> Result<u64, IdentityError> {
    certificate.verify(account_key)?;
    list.verify(account_key)?;
    let key = account_key.to_string();
    let new_device = certificate.certificate.device_id.clone();
    let result = write_transaction(conn, |conn| {
        let account = load_account(conn, &key)?;
        let version = check_newer(account.device_list_version, &list)?;
        if device_id_used(conn, &key, &new_device)? {
            return Err(IdentityError::DeviceIdUsed(new_device.to_string()));
        }
        let mut expected = active_certificates(conn, &key)?;
        expected.insert(to_canonical_bytes(&certificate.certificate).map_err(DocumentError::from)?);
        if listed_certificates(&list)? != expected {
            return Err(IdentityError::ListMismatch(
                "the list must hold the current devices and the new one, nothing else".into(),
            ));
        }
        insert_device(conn, &certificate, crate::time::now_ms())?;
        store_list(conn, &key, version, &list)?;
        Ok(list.device_list.version)
    });
    match result {
        // A concurrent request took the id or the signing key after the
        // checks above: say which (PostgreSQL lets both check first).
        Err(IdentityError::Storage(StorageError::Query(error))) if is_unique_violation(&error) => {
            if device_id_used(conn, &key, &new_device)? {
                Err(IdentityError::DeviceIdUsed(new_device.to_string()))
            } else {
                Err(IdentityError::DeviceKeyInUse)
            }
        }
        other => other,
    }
}

/// Whether the account ever had a device with this id (revoked ones count:
/// an id is never reused).
fn device_id_used(
    conn: &mut DbConnection,
    account_key: &str,
    device_id: &DeviceId,
) -> Result<bool, IdentityError> {
    let used: i64 = with_backend!(conn, c => devices::table
        .filter(devices::account_key.eq(account_key))
        .filter(devices::device_id.eq(device_id.as_str()))
        .count()
        .get_result(c))?;
    Ok(used > 0)
}

/// Revokes `device_id`: its tokens stop working at once and its pending
/// deliveries are dropped. `list` must be the current devices less this one.
pub fn revoke_device(
    conn: &mut DbConnection,
    account_key: &PublicKey,
    device_id: &DeviceId,
    list: SignedDeviceList,
) -> Result<u64, IdentityError> {
    list.verify(account_key)?;
    let key = account_key.to_string();
    write_transaction(conn, |conn| {
        let account = load_account(conn, &key)?;
        let version = check_newer(account.device_list_version, &list)?;
        let target: Option<(i64, Vec<u8>)> = with_backend!(conn, c => devices::table
            .filter(devices::account_key.eq(&key))
            .filter(devices::device_id.eq(device_id.as_str()))
            .filter(devices::revoked_at.is_null())
            .select((devices::id, devices::certificate))
            .first(c)
            .optional())?;
        let (device_row, certificate) = target.ok_or(IdentityError::UnknownDevice)?;
        let mut expected = active_certificates(conn, &key)?;
        expected.remove(&certificate);
        if listed_certificates(&list)? != expected {
            return Err(IdentityError::ListMismatch(
                "the list must hold the current devices less the revoked one".into(),
            ));
        }
        let now = crate::time::now_ms();
        with_backend!(conn, c => diesel::update(devices::table.find(device_row))
            .set((
                devices::revoked_at.eq(now),
                devices::pending_messages.eq(0),
                devices::pending_bytes.eq(0),
            ))
            .execute(c))?;
        crate::auth::end_device_tokens(conn, device_row)?;
        crate::auth::bump_revocations(conn)?;
        crate::storage::mail::remove_device_mail(conn, device_row)?;
        // A revoked device is never woken again.
        crate::storage::push::clear(conn, device_row)?;
        store_list(conn, &key, version, &list)?;
        Ok(list.device_list.version)
    })
}
