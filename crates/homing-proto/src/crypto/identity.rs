//! Identity documents: device certificates, signed device lists and the
//! statements a device signs to register or sign in. Each is a canonical
//! JSON object (see `canonical`) with a `type` member and is signed with
//! ed25519; verification is strict.

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use super::canonical::to_canonical_bytes;
use super::{BoxPublicKey, CryptoError, PublicKey, SignatureBytes};

pub const DEVICE_CERTIFICATE_TYPE: &str = "homing.device_certificate.v1";
pub const DEVICE_LIST_TYPE: &str = "homing.device_list.v1";
pub const REGISTRATION_TYPE: &str = "homing.registration.v1";
pub const AUTH_TYPE: &str = "homing.auth.v1";
pub const DEPARTURE_TYPE: &str = "homing.departure.v1";

/// Most devices one account may list; a list is fetched whole by every
/// sender, so it must stay small.
pub const MAX_DEVICES: usize = 32;

/// Why an identity document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("expected a document of type {expected}")]
    WrongType { expected: &'static str },
    #[error("the document belongs to another account")]
    WrongAccount,
    #[error("device id {0} appears twice")]
    DuplicateDevice(String),
    #[error("a device list holds 1 to {MAX_DEVICES} devices")]
    DeviceCount,
    #[error("invalid device id: use 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    DeviceId,
}

/// A device's name within its account: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(text.to_string()))
        } else {
            Err(DocumentError::DeviceId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for DeviceId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A device's name within its account."))
            .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
            .build()
            .into()
    }
}

impl utoipa::ToSchema for DeviceId {}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_type(found: &str, expected: &'static str) -> Result<(), DocumentError> {
    if found == expected {
        Ok(())
    } else {
        Err(DocumentError::WrongType { expected })
    }
}

fn sign_document<T: Serialize>(
    document: &T,
    key: &SigningKey,
) -> Result<SignatureBytes, CryptoError> {
    Ok(SignatureBytes(key.sign(&to_canonical_bytes(document)?)))
}

fn verify_document<T: Serialize>(
    document: &T,
    key: &PublicKey,
    signature: &SignatureBytes,
) -> Result<(), CryptoError> {
    key.verify(&to_canonical_bytes(document)?, signature)
}

/// A device's keys, vouched for by the account key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceCertificate {
    /// Always `homing.device_certificate.v1`.
    #[serde(rename = "type")]
    pub kind: String,
    pub account_key: PublicKey,
    pub device_id: DeviceId,
    pub sign_key: PublicKey,
    pub box_key: BoxPublicKey,
    pub created_at: i64,
}

impl DeviceCertificate {
    pub fn new(
        account_key: PublicKey,
        device_id: DeviceId,
        sign_key: PublicKey,
        box_key: BoxPublicKey,
        created_at: i64,
    ) -> Self {
        Self {
            kind: DEVICE_CERTIFICATE_TYPE.into(),
            account_key,
            device_id,
            sign_key,
            box_key,
            created_at,
        }
    }

    /// Signs with the account key.
    pub fn sign(self, account_key: &SigningKey) -> Result<SignedDeviceCertificate, CryptoError> {
        let signature = sign_document(&self, account_key)?;
        Ok(SignedDeviceCertificate {
            certificate: self,
            signature,
        })
    }

    fn check(&self, account_key: &PublicKey) -> Result<(), DocumentError> {
        check_type(&self.kind, DEVICE_CERTIFICATE_TYPE)?;
        if &self.account_key != account_key {
            return Err(DocumentError::WrongAccount);
        }
        Ok(())
    }
}

/// A certificate with the account key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedDeviceCertificate {
    pub certificate: DeviceCertificate,
    pub signature: SignatureBytes,
}

impl SignedDeviceCertificate {
    /// Checks the type, the account and the signature.
    pub fn verify(&self, account_key: &PublicKey) -> Result<(), DocumentError> {
        self.certificate.check(account_key)?;
        verify_document(&self.certificate, account_key, &self.signature)?;
        Ok(())
    }
}

/// Every current device of an account, with a version that only grows, so a
/// server can neither add a device unnoticed nor roll the list back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceList {
    /// Always `homing.device_list.v1`.
    #[serde(rename = "type")]
    pub kind: String,
    pub account_key: PublicKey,
    pub version: u64,
    pub devices: Vec<DeviceCertificate>,
}

impl DeviceList {
    pub fn new(account_key: PublicKey, version: u64, mut devices: Vec<DeviceCertificate>) -> Self {
        devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Self {
            kind: DEVICE_LIST_TYPE.into(),
            account_key,
            version,
            devices,
        }
    }

    /// Signs with the account key.
    pub fn sign(self, account_key: &SigningKey) -> Result<SignedDeviceList, CryptoError> {
        let signature = sign_document(&self, account_key)?;
        Ok(SignedDeviceList {
            device_list: self,
            signature,
        })
    }

    pub fn device(&self, device_id: &DeviceId) -> Option<&DeviceCertificate> {
        self.devices.iter().find(|d| &d.device_id == device_id)
    }
}

/// A device list with the account key's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedDeviceList {
    pub device_list: DeviceList,
    pub signature: SignatureBytes,
}

impl SignedDeviceList {
    /// Checks the type, that every device belongs to `account_key` once, and
    /// the signature.
    pub fn verify(&self, account_key: &PublicKey) -> Result<(), DocumentError> {
        let list = &self.device_list;
        check_type(&list.kind, DEVICE_LIST_TYPE)?;
        if &list.account_key != account_key {
            return Err(DocumentError::WrongAccount);
        }
        if list.devices.is_empty() || list.devices.len() > MAX_DEVICES {
            return Err(DocumentError::DeviceCount);
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for device in &list.devices {
            device.check(account_key)?;
            if !ids.insert(&device.device_id) || !keys.insert(device.sign_key) {
                return Err(DocumentError::DuplicateDevice(device.device_id.to_string()));
            }
        }
        verify_document(list, account_key, &self.signature)?;
        Ok(())
    }
}

/// What the account key signs to register an alias on one server, so the
/// proof cannot be replayed for another alias or at another server.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationStatement<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub account_key: &'a PublicKey,
    pub alias: &'a str,
    pub server: &'a str,
}

impl<'a> RegistrationStatement<'a> {
    pub fn new(account_key: &'a PublicKey, alias: &'a str, server: &'a str) -> Self {
        Self {
            kind: REGISTRATION_TYPE,
            account_key,
            alias,
            server,
        }
    }

    pub fn sign(&self, account_key: &SigningKey) -> Result<SignatureBytes, CryptoError> {
        sign_document(self, account_key)
    }

    pub fn verify(&self, signature: &SignatureBytes) -> Result<(), CryptoError> {
        verify_document(self, self.account_key, signature)
    }
}

/// What the account key signs to leave a server for good: the account
/// and its alias there are gone from `departed_at` (Unix ms). The server
/// serves it in place of the identity, so peers that pinned the key can
/// check that the account itself asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DepartureStatement {
    #[serde(rename = "type")]
    pub kind: String,
    pub account_key: PublicKey,
    pub alias: String,
    pub server: String,
    pub departed_at: i64,
}

impl DepartureStatement {
    pub fn new(account_key: PublicKey, alias: &str, server: &str, departed_at: i64) -> Self {
        Self {
            kind: DEPARTURE_TYPE.to_string(),
            account_key,
            alias: alias.to_string(),
            server: server.to_string(),
            departed_at,
        }
    }

    pub fn sign(&self, account_key: &SigningKey) -> Result<SignatureBytes, CryptoError> {
        sign_document(self, account_key)
    }

    /// Checks the signature with the statement's own account key, and that
    /// the statement is a departure.
    pub fn verify(&self, signature: &SignatureBytes) -> Result<(), CryptoError> {
        if self.kind != DEPARTURE_TYPE {
            return Err(CryptoError::BadSignature);
        }
        verify_document(self, &self.account_key, signature)
    }
}

/// What a device signs to sign in: the server's nonce and the server's name,
/// so a signature made for one server is useless at another.
#[derive(Debug, Clone, Serialize)]
pub struct AuthStatement<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub server: &'a str,
    pub nonce: &'a str,
    pub account_key: &'a PublicKey,
    pub device_id: &'a DeviceId,
}

impl<'a> AuthStatement<'a> {
    pub fn new(
        server: &'a str,
        nonce: &'a str,
        account_key: &'a PublicKey,
        device_id: &'a DeviceId,
    ) -> Self {
        Self {
            kind: AUTH_TYPE,
            server,
            nonce,
            account_key,
            device_id,
        }
    }

    pub fn sign(&self, device_key: &SigningKey) -> Result<SignatureBytes, CryptoError> {
        sign_document(self, device_key)
    }

    pub fn verify(
        &self,
        device_key: &PublicKey,
        signature: &SignatureBytes,
    ) -> Result<(), CryptoError> {
        verify_document(self, device_key, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn keypair() -> (SigningKey, PublicKey) {
        let key = SigningKey::generate(&mut OsRng);
        let public = PublicKey::from(key.verifying_key());
        (key, public)
    }

    fn certificate(account: PublicKey, id: &str) -> DeviceCertificate {
        let (_, sign) = keypair();
        DeviceCertificate::new(
            account,
            DeviceId::parse(id).unwrap(),
            sign,
            BoxPublicKey([7; 32]),
            1,
        )
    }

    #[test]
    fn signed_certificates_and_lists_verify_and_tampering_fails() {
        let (account_key, account) = keypair();
        let cert = certificate(account, "laptop").sign(&account_key).unwrap();
        cert.verify(&account).unwrap();
        let mut forged = cert.clone();
        forged.certificate.device_id = DeviceId::parse("phone").unwrap();
        assert_eq!(
            forged.verify(&account),
            Err(CryptoError::BadSignature.into())
        );

        let list = DeviceList::new(account, 1, vec![cert.certificate.clone()])
            .sign(&account_key)
            .unwrap();
        list.verify(&account).unwrap();
        let mut rolled = list.clone();
        rolled.device_list.version = 2;
        assert!(rolled.verify(&account).is_err());
    }

    #[test]
    fn lists_refuse_other_accounts_duplicates_and_wrong_types() {
        let (account_key, account) = keypair();
        let (other_key, other) = keypair();
        let cert = certificate(account, "a");
        let list = DeviceList::new(account, 1, vec![cert.clone()])
            .sign(&other_key)
            .unwrap();
        assert!(list.verify(&account).is_err());
        let list = DeviceList::new(other, 1, vec![cert.clone()])
            .sign(&other_key)
            .unwrap();
        assert_eq!(list.verify(&other), Err(DocumentError::WrongAccount));
        let list = DeviceList::new(account, 1, vec![cert.clone(), cert.clone()])
            .sign(&account_key)
            .unwrap();
        assert!(matches!(
            list.verify(&account),
            Err(DocumentError::DuplicateDevice(_))
        ));
        let mut list = DeviceList::new(account, 1, vec![cert]);
        list.kind = DEVICE_CERTIFICATE_TYPE.into();
        let list = list.sign(&account_key).unwrap();
        assert!(matches!(
            list.verify(&account),
            Err(DocumentError::WrongType { .. })
        ));
    }

    #[test]
    fn auth_statements_are_bound_to_the_server() {
        let (device_key, device) = keypair();
        let (_, account) = keypair();
        let id = DeviceId::parse("d1").unwrap();
        let signature = AuthStatement::new("a.example", "nonce", &account, &id)
            .sign(&device_key)
            .unwrap();
        AuthStatement::new("a.example", "nonce", &account, &id)
            .verify(&device, &signature)
            .unwrap();
        assert!(AuthStatement::new("b.example", "nonce", &account, &id)
            .verify(&device, &signature)
            .is_err());
    }

    #[test]
    fn device_ids_are_restricted() {
        assert!(DeviceId::parse("Laptop_2-x").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            assert!(DeviceId::parse(bad).is_err());
        }
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point (a small-order key).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PublicKey::from_bytes(&identity).is_err());
    }
}
