//! The server's VAPID identity (RFC 8292): a P-256 key pair kept in the
//! database so every replica signs alike, and the `Authorization` header
//! each push request carries.
//!
//! The JWT is assembled here and signed with the `p256` crate's ECDSA:
//! `web-push-native`'s own VAPID feature pulls a JWT library with RSA,
//! ML-DSA, secp256k1 and P-384 for this one ES256 signature, and writes the
//! audience without the endpoint's port, which RFC 8292 makes part of it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::prelude::*;
use p256::ecdsa::signature::Signer;
use p256::elliptic_curve::sec1::ToEncodedPoint;

use crate::storage::schema::push_keys;
use crate::storage::{Database, StorageError};
use crate::with_backend;

/// How long a signed header is valid: RFC 8292 allows at most 24 hours;
/// a push is sent the moment it is signed.
const VALIDITY_SECS: i64 = 12 * 3600;

/// The VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: p256::ecdsa::SigningKey,
    /// The public key, uncompressed, unpadded base64url: the form browsers
    /// take as `applicationServerKey` and the header's `k`.
    public_b64: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret half.
        f.debug_struct("VapidKey")
            .field("public", &self.public_b64)
            .finish()
    }
}

impl VapidKey {
    fn from_secret(secret: &p256::SecretKey) -> Self {
        let public = secret.public_key().to_encoded_point(false);
        Self {
            signing: p256::ecdsa::SigningKey::from(secret),
            public_b64: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        }
    }

    pub fn public_key_b64(&self) -> &str {
        &self.public_b64
    }

    /// `vapid t=JWT, k=KEY` for a push to a resource at `audience` (the
    /// endpoint's origin), naming `subject` (a `mailto:` or `https:` URL)
    /// as the contact.
    pub fn authorization(&self, audience: &str, subject: &str, now_secs: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": audience,
            "exp": now_secs + VALIDITY_SECS,
            "sub": subject,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        // JWS ES256: the fixed-size r || s over SHA-256 of the text.
        let signature: p256::ecdsa::Signature = self.signing.sign(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("vapid t={signed}.{signature}, k={}", self.public_b64)
    }
}

/// Loads the key, creating it on the server's first start; when several
/// replicas start at once, the first insert wins and all read it.
pub async fn load_or_create(db: &Database) -> Result<VapidKey, StorageError> {
    db.run(|conn| {
        if let Some(key) = stored(conn)? {
            return Ok(key);
        }
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let public = secret.public_key().to_encoded_point(false);
        let row = (
            push_keys::id.eq(1),
            push_keys::secret_key.eq(secret.to_bytes().to_vec()),
            push_keys::public_key.eq(public.as_bytes().to_vec()),
            push_keys::created_at.eq(crate::time::now_ms()),
        );
        with_backend!(conn, c => diesel::insert_into(push_keys::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
        stored(conn)?.ok_or_else(|| StorageError::Corrupt("the VAPID key vanished".into()))
    })
    .await
}

fn stored(conn: &mut crate::storage::DbConnection) -> Result<Option<VapidKey>, StorageError> {
    let secret: Option<Vec<u8>> = with_backend!(conn, c => push_keys::table
        .select(push_keys::secret_key)
        .first(c)
        .optional())?;
    secret
        .map(|bytes| {
            p256::SecretKey::from_slice(&bytes)
                .map(|secret| VapidKey::from_secret(&secret))
                .map_err(|_| {
                    StorageError::Corrupt("the stored VAPID key is not a P-256 key".into())
                })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier;

    #[test]
    fn the_header_is_a_jwt_the_public_key_verifies() {
        let key = VapidKey::from_secret(&p256::SecretKey::random(&mut rand::rngs::OsRng));
        let header = key.authorization("https://push.example:8443", "mailto:a@b.example", 1_000);
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_key_b64());
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let (_, claims) = signed.split_once('.').unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example:8443");
        assert_eq!(claims["exp"], 1_000 + VALIDITY_SECS);
        let public = p256::PublicKey::from_sec1_bytes(&URL_SAFE_NO_PAD.decode(k).unwrap()).unwrap();
        let signature =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap())
                .unwrap();
        let verifying = p256::ecdsa::VerifyingKey::from(&public);
        assert!(verifying.verify(signed.as_bytes(), &signature).is_ok());
        assert!(verifying.verify(b"something else", &signature).is_err());
    }
}
