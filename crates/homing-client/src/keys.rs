//! Keys made on the device, and the signed documents built from them.

use crypto_box::SecretKey as BoxSecretKey;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use serde_json::{json, Value};

use crate::crypto::identity::{
    AuthStatement, DeviceCertificate, DeviceId, DeviceList, RegistrationStatement,
    SignedDeviceCertificate, SignedDeviceList,
};
use crate::crypto::{BoxPublicKey, CryptoError, PublicKey, SignatureBytes};

/// The account key: the identity itself. Whoever holds it can add devices.
pub struct AccountKeys {
    pub signing: SigningKey,
}

impl AccountKeys {
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// The account id: the public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::from(self.signing.verifying_key())
    }

    /// Signs a certificate for `device`.
    pub fn certify(
        &self,
        device: &DeviceKeys,
        created_at: i64,
    ) -> Result<SignedDeviceCertificate, CryptoError> {
        device
            .certificate(self.public(), created_at)
            .sign(&self.signing)
    }

    /// Signs a device list of `certificates` at `version`.
    pub fn device_list(
        &self,
        version: u64,
        certificates: Vec<DeviceCertificate>,
    ) -> Result<SignedDeviceList, CryptoError> {
        DeviceList::new(self.public(), version, certificates).sign(&self.signing)
    }

    /// The body of `POST /api/v1/accounts` registering `alias` at `server`
    /// with `device` as the first device.
    pub fn registration(
        &self,
        alias: &str,
        server: &str,
        device: &DeviceKeys,
        invite: Option<&str>,
    ) -> Result<Value, CryptoError> {
        // The proof covers the alias as the server stores it: lower-cased.
        let alias = crate::address::Alias::parse(alias)
            .map(|a| a.as_str().to_string())
            .unwrap_or_else(|_| alias.to_string());
        let alias = alias.as_str();
        let account_key = self.public();
        let certificate = self.certify(device, crate::time::now_ms())?;
        let list = self.device_list(1, vec![certificate.certificate.clone()])?;
        let proof = RegistrationStatement::new(&account_key, alias, server).sign(&self.signing)?;
        Ok(json!({
            "alias": alias,
            "account_key": account_key,
            "device_certificate": certificate,
            "device_list": list,
            "proof": proof,
            "invite": invite,
        }))
    }
}

/// A device's own keys: ed25519 for signing, X25519 for receiving.
pub struct DeviceKeys {
    pub device_id: DeviceId,
    pub signing: SigningKey,
    pub box_secret: BoxSecretKey,
}

impl DeviceKeys {
    pub fn generate(device_id: DeviceId) -> Self {
        Self {
            device_id,
            signing: SigningKey::generate(&mut OsRng),
            box_secret: BoxSecretKey::generate(&mut OsRng),
        }
    }

    pub fn sign_key(&self) -> PublicKey {
        PublicKey::from(self.signing.verifying_key())
    }

    pub fn box_key(&self) -> BoxPublicKey {
        BoxPublicKey(*self.box_secret.public_key().as_bytes())
    }

    /// The unsigned certificate of this device under `account_key`.
    pub fn certificate(&self, account_key: PublicKey, created_at: i64) -> DeviceCertificate {
        DeviceCertificate::new(
            account_key,
            self.device_id.clone(),
            self.sign_key(),
            self.box_key(),
            created_at,
        )
    }

    /// Signs a sign-in challenge for `server`.
    pub fn sign_challenge(
        &self,
        server: &str,
        nonce: &str,
        account_key: &PublicKey,
    ) -> Result<SignatureBytes, CryptoError> {
        AuthStatement::new(server, nonce, account_key, &self.device_id).sign(&self.signing)
    }

    /// The body of `POST /api/v1/auth/token` for `nonce`.
    pub fn token_request(
        &self,
        server: &str,
        nonce: &str,
        account_key: &PublicKey,
    ) -> Result<Value, CryptoError> {
        Ok(json!({
            "account_key": account_key,
            "device_id": self.device_id,
            "nonce": nonce,
            "signature": self.sign_challenge(server, nonce, account_key)?,
        }))
    }
}
