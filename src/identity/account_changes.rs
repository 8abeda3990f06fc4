//! Account changes made from outside the account: an admin disabling or
//! deleting it, and the recipient's retention choice. With registration
//! and device lists (`register`, `devices`), the only writers of
//! `accounts`.

use diesel::prelude::*;

use crate::storage::schema::accounts;
use crate::storage::{write_transaction, DbConnection, StorageError};
use crate::with_backend;

/// Disables (or re-enables) an account: its tokens stop working and its
/// identity is no longer served. False when there is no such alias.
pub fn set_disabled(
    conn: &mut DbConnection,
    alias: &str,
    disabled: bool,
) -> Result<bool, StorageError> {
    let value = disabled.then(crate::time::now_ms);
    write_transaction(conn, |conn| {
        let updated = with_backend!(conn, c => diesel::update(accounts::table.filter(accounts::alias.eq(alias)))
            .set(accounts::disabled_at.eq(value))
            .execute(c))?;
        if disabled && updated == 1 {
            crate::auth::bump_revocations(conn)?;
        }
        Ok(updated == 1)
    })
}

/// Deletes an account with its devices, tokens and pending mail. Returns
/// how many pending deliveries went with it, or `None` for no such alias.
pub fn delete(conn: &mut DbConnection, alias: &str) -> Result<Option<usize>, StorageError> {
    write_transaction(conn, |conn| delete_within(conn, alias))
}

/// [`delete`], inside the caller's write transaction.
pub(super) fn delete_within(
    conn: &mut DbConnection,
    alias: &str,
) -> Result<Option<usize>, StorageError> {
    {
        let key: Option<String> = with_backend!(conn, c => accounts::table
            .filter(accounts::alias.eq(alias))
            .select(accounts::account_key)
            .first(c)
            .optional())?;
        let Some(key) = key else {
            return Ok(None);
        };
        // The account goes first, and its devices with it: a send that
        // wrote deliveries to them committed before (deleting the device
        // rows waits for it), and none can follow (a send locks the device
        // row it writes a delivery for, and finds it gone). So the
        // deliveries read next are all there will ever be: nothing
        // deletes them but this.
        with_backend!(conn, c => diesel::delete(accounts::table.find(&key)).execute(c))?;
        let removed = crate::storage::mail::remove_account_mail(conn, &key)?;
        crate::auth::bump_revocations(conn)?;
        Ok(Some(removed))
    }
}

/// Stores how long a message stays for the account's other devices after
/// one acknowledged it (`None`: purged at once).
pub fn set_retention_keep(
    conn: &mut DbConnection,
    account_key: &str,
    keep_ms: Option<i64>,
) -> Result<(), StorageError> {
    with_backend!(conn, c => diesel::update(accounts::table.find(account_key))
        .set(accounts::retention_keep_ms.eq(keep_ms))
        .execute(c))?;
    Ok(())
}
