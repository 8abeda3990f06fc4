//! Registering an alias for an account key with its first device.

use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::{load_account, IdentityError};
use crate::address::{Alias, ServerName};
use crate::config::RegistrationPolicy;
use crate::crypto::canonical::to_canonical_bytes;
use crate::crypto::identity::{
    DocumentError, RegistrationStatement, SignedDeviceCertificate, SignedDeviceList,
};
use crate::crypto::{PublicKey, SignatureBytes};
use crate::storage::schema::accounts;
use crate::storage::{is_unique_violation, write_transaction, DbConnection};
use crate::with_backend;

/// Aliases nobody may register: the addresses people expect to reach the
/// operator, and names that would impersonate the server itself.
const RESERVED: &[&str] = &[
    "abuse",
    "admin",
    "administrator",
    "homing",
    "hostmaster",
    "info",
    "mailer-daemon",
    "noc",
    "no-reply",
    "noreply",
    "nobody",
    "postmaster",
    "root",
    "security",
    "server",
    "support",
    "system",
    "webmaster",
];

/// A registration request, already parsed.
#[derive(Debug, Clone)]
pub struct Registration {
    pub alias: Alias,
    pub account_key: PublicKey,
    pub device_certificate: SignedDeviceCertificate,
    pub device_list: SignedDeviceList,
    pub proof: SignatureBytes,
    pub invite: Option<String>,
}

/// What registration did.
#[derive(Debug, Clone)]
pub struct RegistrationOutcome {
    /// False when the same key had already registered the same alias.
    pub created: bool,
    pub alias: String,
    pub device_list_version: u64,
}

fn is_reserved(alias: &Alias, server: &ServerName) -> bool {
    let alias = alias.as_str();
    let host = match server.host() {
        crate::address::Host::Domain(name) => name.as_str(),
        crate::address::Host::Ip(_) => "",
    };
    RESERVED.contains(&alias) || alias == host || host.split('.').next() == Some(alias)
}

/// SHA-256 of an invite code: only hashes are stored.
pub fn invite_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.trim().as_bytes()).to_vec()
}

/// Registers `request`, or confirms an identical earlier registration.
pub fn register(
    conn: &mut DbConnection,
    server: &ServerName,
    policy: RegistrationPolicy,
    request: Registration,
) -> Result<RegistrationOutcome, IdentityError> {
    if policy == RegistrationPolicy::Closed {
        return Err(IdentityError::RegistrationClosed);
    }
    if is_reserved(&request.alias, server) {
        return Err(IdentityError::AliasReserved(request.alias.to_string()));
    }
    RegistrationStatement::new(
        &request.account_key,
        request.alias.as_str(),
        server.as_str(),
    )
    .verify(&request.proof)
    .map_err(|_| IdentityError::BadProof)?;
    request.device_certificate.verify(&request.account_key)?;
    request.device_list.verify(&request.account_key)?;
    if request.device_list.device_list.devices != [request.device_certificate.certificate.clone()] {
        return Err(IdentityError::ListMismatch(
            "the first device list must hold exactly the registered device".into(),
        ));
    }
    let invite = match (policy, &request.invite) {
        (RegistrationPolicy::Invite, None) => return Err(IdentityError::InviteRequired),
        (RegistrationPolicy::Invite, Some(code)) => Some(invite_hash(code)),
        _ => None,
    };
    let result = write_transaction(conn, |conn| {
        if let Some(outcome) = existing(conn, &request)? {
            return Ok(outcome);
        }
        if super::departure::departed(conn, request.alias.as_str())? {
            return Err(IdentityError::AliasDeparted(request.alias.to_string()));
        }
        if let Some(hash) = &invite {
            super::invites::consume(conn, hash)?;
        }
        insert(conn, &request)
    });
    match result {
        Err(IdentityError::Storage(crate::storage::StorageError::Query(error)))
            if is_unique_violation(&error) =>
        {
            // A concurrent registration won the race: answer as if we had
            // seen it first.
            existing(conn, &request)?.ok_or(IdentityError::DeviceKeyInUse)
        }
        other => other,
    }
}

/// An earlier registration of the same alias or key, as an outcome or error.
fn existing(
    conn: &mut DbConnection,
    request: &Registration,
) -> Result<Option<RegistrationOutcome>, IdentityError> {
    let key = request.account_key.to_string();
    let by_alias: Option<String> = with_backend!(conn, c => accounts::table
        .filter(accounts::alias.eq(request.alias.as_str()))
        .select(accounts::account_key)
        .first(c)
        .optional())?;
    match by_alias {
        Some(owner) if owner == key => {
            let account = load_account(conn, &key)?;
            Ok(Some(RegistrationOutcome {
                created: false,
                alias: account.alias,
                device_list_version: u64::try_from(account.device_list_version).unwrap_or(0),
            }))
        }
        Some(_) => Err(IdentityError::AliasTaken),
        None => match load_account(conn, &key) {
            Ok(account) => Err(IdentityError::AccountExists(account.alias)),
            Err(IdentityError::UnknownAccount) => Ok(None),
            Err(other) => Err(other),
        },
    }
}

fn insert(
    conn: &mut DbConnection,
    request: &Registration,
) -> Result<RegistrationOutcome, IdentityError> {
    let now = crate::time::now_ms();
    let list = &request.device_list;
    let version = list.device_list.version;
    let version_i64 = i64::try_from(version).map_err(|_| DocumentError::DeviceCount)?;
    let list_bytes = to_canonical_bytes(&list.device_list).map_err(DocumentError::from)?;
    let account_row = (
        accounts::account_key.eq(request.account_key.to_string()),
        accounts::alias.eq(request.alias.as_str()),
        accounts::created_at.eq(now),
        accounts::device_list_version.eq(version_i64),
        accounts::device_list.eq(list_bytes),
        accounts::device_list_signature.eq(list.signature.to_bytes().to_vec()),
    );
    with_backend!(conn, c => diesel::insert_into(accounts::table).values(account_row).execute(c))?;
    super::devices::insert_device(conn, &request.device_certificate, now)?;
    Ok(RegistrationOutcome {
        created: true,
        alias: request.alias.to_string(),
        device_list_version: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_and_the_server_name_are_reserved() {
        let server = ServerName::parse("chat.example.org").unwrap();
        for alias in ["admin", "Postmaster", "abuse", "chat"] {
            assert!(
                is_reserved(&Alias::parse(alias).unwrap(), &server),
                "{alias}"
            );
        }
        assert!(!is_reserved(&Alias::parse("alice").unwrap(), &server));
        let local = ServerName::parse("localhost:8008").unwrap();
        assert!(is_reserved(&Alias::parse("localhost").unwrap(), &local));
    }

    #[test]
    fn invite_hashes_ignore_surrounding_whitespace() {
        assert_eq!(invite_hash(" code \n"), invite_hash("code"));
        assert_ne!(invite_hash("code"), invite_hash("Code"));
    }
}
