//! Secrets encrypted under a passphrase: the account key backup, and small
//! secrets such as a device's key files. Argon2id (RFC 9106, version 0x13)
//! derives a key from the passphrase, `crypto_secretbox` encrypts; the KDF
//! costs travel in the document so they can be raised later. The format is
//! the one libsodium's `crypto_pwhash` (argon2id13) and
//! `crypto_secretbox_easy` produce (see `federation-spec/envelope.md`).

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{b64, b64_array};

/// The `type` of an exported account key.
pub const KEY_BACKUP_TYPE: &str = "homing.key_backup.v1";
/// The `type` of any other passphrase-protected secret.
pub const SECRET_TYPE: &str = "homing.secret.v1";
/// The only KDF of version 1.
pub const KDF_NAME: &str = "argon2id";
/// Salt length, libsodium's `crypto_pwhash_SALTBYTES`.
pub const SALT_LEN: usize = 16;
/// Nonce length of `crypto_secretbox`.
pub const NONCE_LEN: usize = 24;
/// Largest secret [`encrypt_with_passphrase`] protects.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;

/// Why a secret could not be protected or recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("the document is not valid: {0}")]
    Json(String),
    #[error("expected a document of type {expected}")]
    WrongType { expected: &'static str },
    #[error("unsupported key derivation function {0:?}")]
    UnsupportedKdf(String),
    #[error("key derivation parameters out of range: {0}")]
    Parameters(&'static str),
    #[error("{0} is not valid base64url of the right length")]
    Encoding(&'static str),
    #[error("wrong passphrase, or the document was altered")]
    WrongPassphrase,
    #[error("the decrypted secret has the wrong length")]
    Length,
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    #[error("the secret is larger than {MAX_SECRET_LEN} bytes")]
    TooLarge,
}

/// Argon2id costs: memory in KiB, passes, lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB (libsodium's `memlimit` is this times 1024).
    pub m_cost_kib: u32,
    /// Passes over the memory (libsodium's `opslimit`).
    pub t_cost: u32,
    /// Lanes; libsodium supports only 1.
    pub p_cost: u32,
}

impl KdfParams {
    /// The costs of new documents: 64 MiB, 3 passes, 1 lane (RFC 9106 §4's
    /// memory-constrained choice).
    pub const DEFAULT: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Most memory a reader spends on a document: 1 GiB.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    /// Most passes a reader runs.
    pub const MAX_T_COST: u32 = 64;
    /// Most lanes a reader accepts.
    pub const MAX_P_COST: u32 = 16;

    /// Checks the bounds a reader enforces, so a document cannot make it
    /// allocate or compute without limit.
    fn check(&self) -> Result<(), BackupError> {
        if !(1..=Self::MAX_P_COST).contains(&self.p_cost) {
            return Err(BackupError::Parameters("p_cost"));
        }
        if !(1..=Self::MAX_T_COST).contains(&self.t_cost) {
            return Err(BackupError::Parameters("t_cost"));
        }
        // Argon2 needs at least 8 KiB per lane.
        if self.m_cost_kib < 8 * self.p_cost || self.m_cost_kib > Self::MAX_M_COST_KIB {
            return Err(BackupError::Parameters("m_cost_kib"));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(rename = "type")]
    kind: String,
    kdf: Kdf,
    nonce: String,
    ciphertext: String,
}

/// Exports the account key's 32-byte seed under `passphrase`, with the
/// default (strong) costs.
pub fn export(seed: &[u8; 32], passphrase: &str) -> Result<String, BackupError> {
    export_with_params(seed, passphrase, KdfParams::DEFAULT)
}

/// [`export`] with chosen costs (higher ones, or small ones in tests).
pub fn export_with_params(
    seed: &[u8; 32],
    passphrase: &str,
    params: KdfParams,
) -> Result<String, BackupError> {
    encrypt_document(KEY_BACKUP_TYPE, seed, passphrase, params)
}

/// Recovers the account key's seed from an exported document.
pub fn import(document: &str, passphrase: &str) -> Result<[u8; 32], BackupError> {
    let secret = decrypt_document(KEY_BACKUP_TYPE, document, passphrase)?;
    secret
        .as_slice()
        .try_into()
        .map_err(|_| BackupError::Length)
}

/// Protects a small secret (such as a device key file) under `passphrase`,
/// with the default costs.
pub fn encrypt_with_passphrase(secret: &[u8], passphrase: &str) -> Result<String, BackupError> {
    encrypt_with_params(secret, passphrase, KdfParams::DEFAULT)
}

/// [`encrypt_with_passphrase`] with chosen costs.
pub fn encrypt_with_params(
    secret: &[u8],
    passphrase: &str,
    params: KdfParams,
) -> Result<String, BackupError> {
    encrypt_document(SECRET_TYPE, secret, passphrase, params)
}

/// Recovers a secret protected by [`encrypt_with_passphrase`].
pub fn decrypt_with_passphrase(
    document: &str,
    passphrase: &str,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    decrypt_document(SECRET_TYPE, document, passphrase)
}

fn encrypt_document(
    kind: &'static str,
    secret: &[u8],
    passphrase: &str,
    params: KdfParams,
) -> Result<String, BackupError> {
    if passphrase.is_empty() {
        return Err(BackupError::EmptyPassphrase);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(BackupError::TooLarge);
    }
    params.check()?;
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, params)?;
    let ciphertext = XSalsa20Poly1305::new((&*key).into())
        .encrypt((&nonce).into(), secret)
        .map_err(|_| BackupError::TooLarge)?;
    let document = Document {
        kind: kind.into(),
        kdf: Kdf {
            name: KDF_NAME.into(),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: b64(&salt),
        },
        nonce: b64(&nonce),
        ciphertext: b64(&ciphertext),
    };
    serde_json::to_string(&document).map_err(|e| BackupError::Json(e.to_string()))
}

fn decrypt_document(
    kind: &'static str,
    document: &str,
    passphrase: &str,
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    // Far more than any document of MAX_SECRET_LEN; refuse before parsing.
    if document.len() > 2 * MAX_SECRET_LEN {
        return Err(BackupError::TooLarge);
    }
    let document: Document =
        serde_json::from_str(document).map_err(|e| BackupError::Json(e.to_string()))?;
    if document.kind != kind {
        return Err(BackupError::WrongType { expected: kind });
    }
    if document.kdf.name != KDF_NAME {
        return Err(BackupError::UnsupportedKdf(document.kdf.name));
    }
    let params = KdfParams {
        m_cost_kib: document.kdf.m_cost_kib,
        t_cost: document.kdf.t_cost,
        p_cost: document.kdf.p_cost,
    };
    params.check()?;
    let salt = b64_array::<SALT_LEN>(&document.kdf.salt, "salt")
        .map_err(|_| BackupError::Encoding("salt"))?;
    let nonce = b64_array::<NONCE_LEN>(&document.nonce, "nonce")
        .map_err(|_| BackupError::Encoding("nonce"))?;
    let ciphertext = URL_SAFE_NO_PAD
        .decode(&document.ciphertext)
        .ok()
        .filter(|c| c.len() >= TAG_LEN && c.len() <= MAX_SECRET_LEN + TAG_LEN)
        .ok_or(BackupError::Encoding("ciphertext"))?;
    let key = derive_key(passphrase, &salt, params)?;
    XSalsa20Poly1305::new((&*key).into())
        .decrypt((&nonce).into(), ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| BackupError::WrongPassphrase)
}

/// Argon2id v0x13 of the passphrase's UTF-8 bytes, as libsodium's
/// `crypto_pwhash(32, passphrase, salt, t_cost, m_cost_kib * 1024,
/// crypto_pwhash_ALG_ARGON2ID13)` computes it (with `p_cost` 1).
fn derive_key(
    passphrase: &str,
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let argon_params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
        .map_err(|_| BackupError::Parameters("argon2"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params)
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|_| BackupError::Parameters("argon2"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn default_export_round_trips_and_records_strong_costs() {
        let seed = [9u8; 32];
        let document = export(&seed, "a long passphrase").unwrap();
        let json: Value = serde_json::from_str(&document).unwrap();
        assert_eq!(json["type"], KEY_BACKUP_TYPE);
        assert_eq!(json["kdf"]["name"], "argon2id");
        assert_eq!(json["kdf"]["m_cost_kib"], 65536);
        assert_eq!(json["kdf"]["t_cost"], 3);
        assert_eq!(json["kdf"]["p_cost"], 1);
        assert_eq!(import(&document, "a long passphrase").unwrap(), seed);
    }

    #[test]
    fn wrong_passphrases_and_altered_documents_are_refused() {
        let document = export_with_params(&[1u8; 32], "right", FAST).unwrap();
        assert_eq!(
            import(&document, "wrong"),
            Err(BackupError::WrongPassphrase)
        );
        // Lowering the recorded costs only makes the derived key wrong.
        let lowered = document.replace("\"t_cost\":1", "\"t_cost\":2");
        assert_eq!(import(&lowered, "right"), Err(BackupError::WrongPassphrase));
        // A secret document is not a key backup, and the other way round.
        let secret = encrypt_with_params(&[1u8; 32], "right", FAST).unwrap();
        assert!(matches!(
            import(&secret, "right"),
            Err(BackupError::WrongType { .. })
        ));
        assert!(matches!(
            decrypt_with_passphrase(&document, "right"),
            Err(BackupError::WrongType { .. })
        ));
        assert_eq!(
            export_with_params(&[1u8; 32], "", FAST),
            Err(BackupError::EmptyPassphrase)
        );
    }

    #[test]
    fn malformed_documents_and_costly_parameters_are_refused() {
        let good: Value =
            serde_json::from_str(&export_with_params(&[1u8; 32], "pw", FAST).unwrap()).unwrap();
        let with = |path: &[&str], value: Value| {
            let mut doc = good.clone();
            let mut target = &mut doc;
            for key in &path[..path.len() - 1] {
                target = &mut target[*key];
            }
            target[path[path.len() - 1]] = value;
            import(&doc.to_string(), "pw")
        };
        let huge = Value::from(KdfParams::MAX_M_COST_KIB + 1);
        assert_eq!(
            with(&["kdf", "m_cost_kib"], huge),
            Err(BackupError::Parameters("m_cost_kib"))
        );
        assert_eq!(
            with(&["kdf", "t_cost"], Value::from(0)),
            Err(BackupError::Parameters("t_cost"))
        );
        assert_eq!(
            with(&["kdf", "p_cost"], Value::from(17)),
            Err(BackupError::Parameters("p_cost"))
        );
        assert!(matches!(
            with(&["kdf", "name"], Value::from("scrypt")),
            Err(BackupError::UnsupportedKdf(_))
        ));
        assert_eq!(
            with(&["kdf", "salt"], Value::from("c2FsdA")),
            Err(BackupError::Encoding("salt"))
        );
        assert_eq!(
            with(&["nonce"], Value::from("!!")),
            Err(BackupError::Encoding("nonce"))
        );
        assert_eq!(
            with(&["ciphertext"], Value::from("")),
            Err(BackupError::Encoding("ciphertext"))
        );
        assert!(matches!(
            with(&["extra"], Value::from(1)),
            Err(BackupError::Json(_))
        ));
        assert!(matches!(
            import("not json", "pw"),
            Err(BackupError::Json(_))
        ));
        // A key backup must hold exactly 32 bytes.
        let short = encrypt_document(KEY_BACKUP_TYPE, &[1u8; 31], "pw", FAST).unwrap();
        assert_eq!(import(&short, "pw"), Err(BackupError::Length));
    }

    #[test]
    fn small_secrets_round_trip() {
        let document = encrypt_with_params(b"device keys", "pw", FAST).unwrap();
        assert_eq!(
            decrypt_with_passphrase(&document, "pw").unwrap().as_slice(),
            b"device keys"
        );
        assert_eq!(
            encrypt_with_params(&vec![0u8; MAX_SECRET_LEN + 1], "pw", FAST),
            Err(BackupError::TooLarge)
        );
    }

    /// Documents made by libsodium (`crypto_pwhash` argon2id13 and
    /// `crypto_secretbox_easy`) open here, with the same derived key.
    #[test]
    fn libsodium_documents_open() {
        let vectors: Value = serde_json::from_str(include_str!(
            "../../../../federation-spec/test-vectors/envelope.json"
        ))
        .unwrap();
        let documents = vectors["passphrase_documents"].as_array().unwrap();
        assert_eq!(documents.len(), 2);
        for vector in documents {
            let text = vector["document"].as_str().unwrap();
            let passphrase = vector["passphrase"].as_str().unwrap();
            let secret = hex(vector["secret"].as_str().unwrap());
            let document: Document = serde_json::from_str(text).unwrap();
            let params = KdfParams {
                m_cost_kib: document.kdf.m_cost_kib,
                t_cost: document.kdf.t_cost,
                p_cost: document.kdf.p_cost,
            };
            let salt = b64_array::<SALT_LEN>(&document.kdf.salt, "salt").unwrap();
            let key = derive_key(passphrase, &salt, params).unwrap();
            assert_eq!(key.to_vec(), hex(vector["derived_key"].as_str().unwrap()));
            if document.kind == KEY_BACKUP_TYPE {
                assert_eq!(import(text, passphrase).unwrap().to_vec(), secret);
                assert_eq!(import(text, "nope"), Err(BackupError::WrongPassphrase));
            } else {
                let opened = decrypt_with_passphrase(text, passphrase).unwrap();
                assert_eq!(opened.as_slice(), secret.as_slice());
                assert_eq!(
                    decrypt_with_passphrase(text, "nope"),
                    Err(BackupError::WrongPassphrase)
                );
            }
        }
    }
}
