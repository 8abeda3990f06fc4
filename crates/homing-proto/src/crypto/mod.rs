//! Cryptographic types shared by the server and the client: keys, the
//! canonical encoding of everything that is signed, device certificates and
//! signed device lists; and, for clients, message envelopes and
//! passphrase-protected key backups. The server only ever holds public keys.

pub mod backup;
pub mod canonical;
pub mod envelope;
pub mod identity;
pub mod safety_number;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a key, signature or signed document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("{0} is not valid base64url")]
    Encoding(&'static str),
    #[error("{0} has the wrong length")]
    Length(&'static str),
    #[error("{0} is not a valid ed25519 public key")]
    InvalidKey(&'static str),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the document cannot be encoded canonically: {0}")]
    NotCanonical(String),
}

/// Unpadded base64url, the encoding of every binary value on the wire.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url into exactly `N` bytes.
pub fn b64_array<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], CryptoError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CryptoError::Encoding(what))?;
    bytes.try_into().map_err(|_| CryptoError::Length(what))
}

/// An ed25519 public key (account key or device signing key), written as
/// unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        Self::from_bytes(&b64_array::<32>(text, "public key")?)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, CryptoError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidKey("key"))?;
        // Small-order keys would let anyone produce "valid" signatures.
        if key.is_weak() {
            return Err(CryptoError::InvalidKey("key"));
        }
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Strict verification (no malleable or small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &SignatureBytes) -> Result<(), CryptoError> {
        self.0
            .verify_strict(message, &signature.0)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        Self(key)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&b64(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// An X25519 public key for `crypto_box_seal`, written as unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BoxPublicKey(pub [u8; 32]);

impl BoxPublicKey {
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        b64_array::<32>(text, "box key").map(Self)
    }
}

impl std::fmt::Display for BoxPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&b64(&self.0))
    }
}

/// A 64-byte ed25519 signature, written as unpadded base64url.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignatureBytes(pub Signature);

impl SignatureBytes {
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let bytes = b64_array::<64>(text, "signature")?;
        Ok(Self(Signature::from_bytes(&bytes)))
    }

    pub fn to_bytes(&self) -> [u8; 64] {
        self.0.to_bytes()
    }
}

impl std::fmt::Display for SignatureBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&b64(&self.0.to_bytes()))
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(PublicKey);
string_serde!(BoxPublicKey);
string_serde!(SignatureBytes);

/// OpenAPI schemas for the wire encodings above: strings of a fixed shape,
/// so generated clients and fuzzers produce values of the right form.
mod schemas {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};

    use super::{BoxPublicKey, PublicKey, SignatureBytes};

    fn base64url(description: &str, chars: usize) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .pattern(Some(format!("^[A-Za-z0-9_-]{{{chars}}}$")))
            .build()
            .into()
    }

    impl PartialSchema for PublicKey {
        fn schema() -> RefOr<Schema> {
            base64url("An ed25519 public key, 32 bytes as unpadded base64url.", 43)
        }
    }
    impl ToSchema for PublicKey {}

    impl PartialSchema for BoxPublicKey {
        fn schema() -> RefOr<Schema> {
            base64url("An X25519 public key, 32 bytes as unpadded base64url.", 43)
        }
    }
    impl ToSchema for BoxPublicKey {}

    impl PartialSchema for SignatureBytes {
        fn schema() -> RefOr<Schema> {
            base64url("An ed25519 signature, 64 bytes as unpadded base64url.", 86)
        }
    }
    impl ToSchema for SignatureBytes {}
}
