//! Leaving a server for good (`DELETE /api/v1/account`): the account key
//! signs its departure; the account, its devices, tokens and pending mail
//! go; the signed departure stays under the alias. It is served with
//! `410 Gone` in place of the identity, so peers that look the address up
//! stop sending and can check that the account itself asked, and the
//! alias is never registered again (to anyone else it would be a way to
//! receive mail meant for the person who left).

use diesel::prelude::*;

use super::{account_changes, IdentityError};
use crate::address::ServerName;
use crate::crypto::identity::DepartureStatement;
use crate::crypto::{PublicKey, SignatureBytes};
use crate::storage::schema::{accounts, departed_accounts};
use crate::storage::{write_transaction, DbConnection, StorageError};
use crate::with_backend;
use homing_proto::documents::{DepartureDocument, DepartureRequest};

/// How far a departure's time may be from this server's clock: a signed
/// departure is good for this long, so one that leaked cannot be used much
/// later (and the account is gone after the first use anyway).
pub const DEPARTURE_SKEW_MS: i64 = 5 * 60 * 1000;

/// The account of `account_key` leaves this server. Returns the alias it
/// held and how many pending deliveries went with it.
pub fn depart(
    conn: &mut DbConnection,
    server: &ServerName,
    account_key: &str,
    request: &DepartureRequest,
    now: i64,
) -> Result<(String, usize), IdentityError> {
    if request.departed_at.abs_diff(now) > DEPARTURE_SKEW_MS.unsigned_abs() {
        return Err(IdentityError::StaleDeparture);
    }
    let key = PublicKey::parse(account_key).map_err(|_| IdentityError::UnknownAccount)?;
    write_transaction(conn, |conn| {
        let alias: Option<String> = with_backend!(conn, c => accounts::table
            .find(account_key)
            .select(accounts::alias)
            .first(c)
            .optional())?;
        let alias = alias.ok_or(IdentityError::UnknownAccount)?;
        DepartureStatement::new(key, &alias, server.as_str(), request.departed_at)
            .verify(&request.signature)
            .map_err(|_| IdentityError::BadProof)?;
        with_backend!(conn, c => diesel::insert_into(departed_accounts::table)
            .values((
                departed_accounts::alias.eq(&alias),
                departed_accounts::account_key.eq(account_key),
                departed_accounts::departed_at.eq(request.departed_at),
                departed_accounts::signature.eq(request.signature.to_string()),
            ))
            .execute(c))?;
        let removed = account_changes::delete_within(conn, &alias)?.unwrap_or(0);
        Ok((alias, removed))
    })
}

/// The signed departure of the account that held `alias` here, if it left.
pub fn departure(
    conn: &mut DbConnection,
    server: &ServerName,
    alias: &str,
) -> Result<Option<DepartureDocument>, StorageError> {
    let row: Option<(String, i64, String)> = with_backend!(conn, c => departed_accounts::table
        .find(alias)
        .select((
            departed_accounts::account_key,
            departed_accounts::departed_at,
            departed_accounts::signature,
        ))
        .first(c)
        .optional())?;
    let Some((account_key, departed_at, signature)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| StorageError::Corrupt(format!("departure of {alias}: bad {what}"));
    let key = PublicKey::parse(&account_key).map_err(|_| corrupt("account key"))?;
    let signature = SignatureBytes::parse(&signature).map_err(|_| corrupt("signature"))?;
    let statement = DepartureStatement::new(key, alias, server.as_str(), departed_at);
    Ok(Some(DepartureDocument::new(statement, signature)))
}

/// True when an account that held `alias` here has left.
pub fn departed(conn: &mut DbConnection, alias: &str) -> Result<bool, StorageError> {
    let found: i64 = with_backend!(conn, c => departed_accounts::table
        .filter(departed_accounts::alias.eq(alias))
        .count()
        .get_result(c))?;
    Ok(found > 0)
}
