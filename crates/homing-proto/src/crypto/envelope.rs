//! Sealing and opening messages on the client (see `federation-spec/envelope.md`).
//!
//! A message is signed by the sending device, padded to a size bucket and
//! encrypted once with a fresh content key (`crypto_secretbox`); the content
//! key is sealed (`crypto_box_seal`) to every recipient device. Servers see
//! only the body and the key wraps, never the sender's alias or the length
//! beyond its bucket. Everything is byte-compatible with libsodium.
//!
//! Opening is split in two so that nothing unverified is handed out as
//! trusted: [`open`] decrypts and parses, yielding a [`SignedPayload`] that
//! only names its claimed sender; the caller looks that device's signing key
//! up in the sender's signed device list and calls [`SignedPayload::verify`]
//! to get the [`Plaintext`].

mod padding;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use curve25519_dalek::MontgomeryPoint;
use ed25519_dalek::{Signer, SigningKey};
use rand::rngs::OsRng;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::canonical::to_canonical_bytes;
use super::identity::{DeviceId, MAX_DEVICES};
use super::{b64, BoxPublicKey, CryptoError, PublicKey, SignatureBytes};
use crate::address::Address;

/// The `type` of a signed message payload.
pub const MESSAGE_TYPE: &str = "homing.message.v1";
/// Length of the per-message content key.
pub const CONTENT_KEY_LEN: usize = 32;
/// Length of the secretbox nonce that starts the body.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag that follows the nonce.
pub const TAG_LEN: usize = 16;
/// Length of a key wrap: ephemeral public key, tag, sealed content key.
pub const KEY_WRAP_LEN: usize = 32 + TAG_LEN + CONTENT_KEY_LEN;
/// Largest padded inner message (64 buckets of 64 KiB); servers usually
/// accept less (`limits.max_message_bytes`).
pub const MAX_PADDED_LEN: usize = 64 * padding::LINEAR_STEP;
/// Largest body [`open`] accepts.
pub const MAX_BODY_LEN: usize = NONCE_LEN + TAG_LEN + MAX_PADDED_LEN;
/// Most addresses in `to`, the same bound a server puts on one send.
pub const MAX_TO: usize = 100;
/// Most key wraps one message may carry.
pub const MAX_WRAPS: usize = MAX_TO * MAX_DEVICES;
/// Longest `thread`, in bytes.
pub const MAX_THREAD_LEN: usize = 128;
/// Longest `content_type`, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;
/// The largest integer JSON numbers carry exactly (`sent_at`).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Why a message could not be sealed, opened or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is too large to seal")]
    TooLarge,
    #[error("a message needs 1 to {MAX_WRAPS} recipient devices")]
    Recipients,
    #[error("a recipient box key is not a usable X25519 public key")]
    RecipientKey,
    #[error("invalid {0}")]
    InvalidField(&'static str),
    #[error("the body has an impossible length")]
    Body,
    #[error("the body does not decrypt with this key (wrong key or altered)")]
    Decrypt,
    #[error("the decrypted message is not correctly padded")]
    Padding,
    #[error("the decrypted message is not a valid signed payload: {0}")]
    Json(String),
    #[error("the payload is not of type {MESSAGE_TYPE}")]
    WrongType,
    #[error("the sender's signature does not verify")]
    BadSignature,
    #[error("the key wrap does not open with this device's key")]
    KeyWrap,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A message as its sender wrote it, or as verified on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    /// The sender's address, in canonical (lower-case) form.
    pub from: String,
    /// The sending device.
    pub from_device: DeviceId,
    /// Every addressee, canonical, without duplicates.
    pub to: Vec<String>,
    /// When it was sent, Unix milliseconds.
    pub sent_at: i64,
    /// An optional conversation thread id chosen by the clients.
    pub thread: Option<String>,
    /// The media type of `content`, e.g. `text/plain; charset=utf-8`.
    pub content_type: String,
    /// The message itself.
    pub content: Vec<u8>,
}

impl Plaintext {
    /// Whether a device of `address` should have received this: it is an
    /// addressee, or the sender (whose other devices get a copy). Receivers
    /// refuse other messages, which someone re-encrypted to them.
    pub fn is_for(&self, address: &str) -> bool {
        self.from == address || self.to.iter().any(|to| to == address)
    }
}

/// A sealed message: the body stored once, and one key wrap per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `nonce || secretbox(content key, nonce, padded inner)`.
    pub body: Vec<u8>,
    /// The content key sealed to each recipient, in the order given.
    pub wraps: Vec<(BoxPublicKey, Vec<u8>)>,
}

/// The signed object inside the padding; `content` is base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    from: String,
    from_device: DeviceId,
    to: Vec<String>,
    sent_at: i64,
    // Present even when null, so that every writer signs the same members.
    #[serde(deserialize_with = "Option::deserialize")]
    thread: Option<String>,
    content_type: String,
    content: String,
}

/// The padded plaintext: the payload and the device's signature over its
/// canonical bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Inner {
    payload: Payload,
    signature: SignatureBytes,
}

/// A decrypted, well-formed message whose signature is not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayload {
    payload: Payload,
    signature: SignatureBytes,
    content: Vec<u8>,
}

impl SignedPayload {
    /// Who the message says it is from; look this device up, then `verify`.
    pub fn claimed_sender(&self) -> (&str, &DeviceId) {
        (&self.payload.from, &self.payload.from_device)
    }

    /// Checks the signature with the claimed device's signing key.
    pub fn verify(&self, sender_device_sign_key: &PublicKey) -> Result<Plaintext, EnvelopeError> {
        let bytes = to_canonical_bytes(&self.payload)?;
        sender_device_sign_key
            .verify(&bytes, &self.signature)
            .map_err(|_| EnvelopeError::BadSignature)?;
        let payload = &self.payload;
        Ok(Plaintext {
            from: payload.from.clone(),
            from_device: payload.from_device.clone(),
            to: payload.to.clone(),
            sent_at: payload.sent_at,
            thread: payload.thread.clone(),
            content_type: payload.content_type.clone(),
            content: self.content.clone(),
        })
    }
}

impl Payload {
    fn new(plaintext: &Plaintext) -> Self {
        Self {
            kind: MESSAGE_TYPE.into(),
            from: plaintext.from.clone(),
            from_device: plaintext.from_device.clone(),
            to: plaintext.to.clone(),
            sent_at: plaintext.sent_at,
            thread: plaintext.thread.clone(),
            content_type: plaintext.content_type.clone(),
            content: b64(&plaintext.content),
        }
    }

    /// Checks every member and returns the decoded content. The same rules
    /// apply when sealing and opening, so a sealed message always opens.
    fn check(&self) -> Result<Vec<u8>, EnvelopeError> {
        if self.kind != MESSAGE_TYPE {
            return Err(EnvelopeError::WrongType);
        }
        check_address(&self.from, "from")?;
        if self.to.is_empty() || self.to.len() > MAX_TO {
            return Err(EnvelopeError::InvalidField("to"));
        }
        let mut seen = std::collections::HashSet::new();
        for address in &self.to {
            check_address(address, "to")?;
            if !seen.insert(address) {
                return Err(EnvelopeError::InvalidField("to"));
            }
        }
        if !(0..=MAX_SAFE_INTEGER).contains(&self.sent_at) {
            return Err(EnvelopeError::InvalidField("sent_at"));
        }
        if let Some(thread) = &self.thread {
            if thread.is_empty()
                || thread.len() > MAX_THREAD_LEN
                || thread.chars().any(char::is_control)
            {
                return Err(EnvelopeError::InvalidField("thread"));
            }
        }
        let content_type = self.content_type.as_bytes();
        if content_type.is_empty()
            || content_type.len() > MAX_CONTENT_TYPE_LEN
            || !content_type.iter().all(|b| (0x20..0x7f).contains(b))
        {
            return Err(EnvelopeError::InvalidField("content_type"));
        }
        let content = URL_SAFE_NO_PAD
            .decode(&self.content)
            .map_err(|_| EnvelopeError::InvalidField("content"))?;
        // Only the one canonical encoding, so the signed bytes are unique.
        if b64(&content) != self.content {
            return Err(EnvelopeError::InvalidField("content"));
        }
        Ok(content)
    }
}

/// Addresses are signed in their canonical form only.
fn check_address(text: &str, what: &'static str) -> Result<(), EnvelopeError> {
    match Address::parse(text) {
        Ok(address) if address.to_string() == text => Ok(()),
        _ => Err(EnvelopeError::InvalidField(what)),
    }
}

/// Signs, pads and encrypts `plaintext` with fresh randomness, and wraps the
/// content key for each recipient device's box key.
pub fn seal(
    plaintext: &Plaintext,
    sender_device_key: &SigningKey,
    recipients: &[BoxPublicKey],
) -> Result<Sealed, EnvelopeError> {
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    OsRng.fill_bytes(content_key.as_mut());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let ephemerals: Vec<Zeroizing<[u8; 32]>> = recipients
        .iter()
        .map(|_| {
            let mut secret = Zeroizing::new([0u8; 32]);
            OsRng.fill_bytes(secret.as_mut());
            secret
        })
        .collect();
    let ephemerals: Vec<&[u8; 32]> = ephemerals.iter().map(|e| &**e).collect();
    seal_inner(
        plaintext,
        sender_device_key,
        recipients,
        &content_key,
        &nonce,
        &ephemerals,
    )
}

/// [`seal`] with chosen content key, nonce and sealed-box ephemeral secrets
/// (one per recipient), for reproducible test vectors only: reusing any of
/// them breaks confidentiality.
#[doc(hidden)]
pub fn seal_with(
    plaintext: &Plaintext,
    sender_device_key: &SigningKey,
    recipients: &[BoxPublicKey],
    content_key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ephemeral_secrets: &[[u8; 32]],
) -> Result<Sealed, EnvelopeError> {
    let ephemerals: Vec<&[u8; 32]> = ephemeral_secrets.iter().collect();
    seal_inner(
        plaintext,
        sender_device_key,
        recipients,
        content_key,
        nonce,
        &ephemerals,
    )
}

fn seal_inner(
    plaintext: &Plaintext,
    sender_device_key: &SigningKey,
    recipients: &[BoxPublicKey],
    content_key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    ephemerals: &[&[u8; 32]],
) -> Result<Sealed, EnvelopeError> {
    if recipients.is_empty() || recipients.len() > MAX_WRAPS || ephemerals.len() != recipients.len()
    {
        return Err(EnvelopeError::Recipients);
    }
    // Refuse oversized content before base64-encoding and signing it.
    if plaintext.content.len() > MAX_PADDED_LEN / 4 * 3 {
        return Err(EnvelopeError::TooLarge);
    }
    let payload = Payload::new(plaintext);
    payload.check()?;
    let signature = SignatureBytes(sender_device_key.sign(&to_canonical_bytes(&payload)?));
    let inner = Zeroizing::new(to_canonical_bytes(&Inner { payload, signature })?);
    if inner.len() >= MAX_PADDED_LEN {
        return Err(EnvelopeError::TooLarge);
    }
    let padded = padding::pad(&inner);
    let mut body = Vec::with_capacity(NONCE_LEN + TAG_LEN + padded.len());
    body.extend_from_slice(nonce);
    body.extend_from_slice(&secretbox_seal(content_key, nonce, &padded)?);
    let wraps = recipients
        .iter()
        .zip(ephemerals)
        .map(|(recipient, ephemeral)| {
            Ok((*recipient, seal_box(recipient, content_key, ephemeral)?))
        })
        .collect::<Result<_, EnvelopeError>>()?;
    Ok(Sealed { body, wraps })
}

/// Opens a key wrap with this device's box secret key.
pub fn unwrap_key(
    wrap: &[u8],
    device_box_secret: &crypto_box::SecretKey,
) -> Result<[u8; CONTENT_KEY_LEN], EnvelopeError> {
    if wrap.len() != KEY_WRAP_LEN {
        return Err(EnvelopeError::KeyWrap);
    }
    let key = Zeroizing::new(
        device_box_secret
            .unseal(wrap)
            .map_err(|_| EnvelopeError::KeyWrap)?,
    );
    key.as_slice()
        .try_into()
        .map_err(|_| EnvelopeError::KeyWrap)
}

/// Decrypts, unpads and parses a body. The result is well-formed but not yet
/// trusted: see [`SignedPayload::verify`].
pub fn open(
    body: &[u8],
    content_key: &[u8; CONTENT_KEY_LEN],
) -> Result<SignedPayload, EnvelopeError> {
    if body.len() < NONCE_LEN + TAG_LEN + padding::MIN_BUCKET || body.len() > MAX_BODY_LEN {
        return Err(EnvelopeError::Body);
    }
    let (nonce, ciphertext) = body.split_at(NONCE_LEN);
    let padded = Zeroizing::new(
        XSalsa20Poly1305::new(content_key.into())
            .decrypt(nonce.into(), ciphertext)
            .map_err(|_| EnvelopeError::Decrypt)?,
    );
    let inner = padding::unpad(&padded)?;
    let Inner { payload, signature } =
        serde_json::from_slice(inner).map_err(|e| EnvelopeError::Json(e.to_string()))?;
    let content = payload.check()?;
    Ok(SignedPayload {
        payload,
        signature,
        content,
    })
}

/// `crypto_secretbox_easy`: the Poly1305 tag, then the ciphertext.
fn secretbox_seal(
    key: &[u8; CONTENT_KEY_LEN],
    nonce: &[u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    XSalsa20Poly1305::new(key.into())
        .encrypt(nonce.into(), plaintext)
        .map_err(|_| EnvelopeError::TooLarge)
}

/// `crypto_box_seal` of `message` to `recipient` with the given ephemeral
/// secret key.
fn seal_box(
    recipient: &BoxPublicKey,
    message: &[u8],
    ephemeral: &[u8; 32],
) -> Result<Vec<u8>, EnvelopeError> {
    check_box_key(recipient)?;
    crypto_box::PublicKey::from_bytes(recipient.0)
        .seal(&mut OneShotRng::new(ephemeral), message)
        .map_err(|_| EnvelopeError::RecipientKey)
}

/// Refuses box keys outside the prime-order subgroup. libsodium refuses the
/// small-order ones; `crypto_box` reduces secret scalars modulo the group
/// order, so for a key with a small-order component it would compute another
/// shared secret than libsodium, and the recipient could not open the wrap.
/// Honestly generated keys always pass.
fn check_box_key(key: &BoxPublicKey) -> Result<(), EnvelopeError> {
    match MontgomeryPoint(key.0).to_edwards(0) {
        Some(point) if point.is_torsion_free() && !point.is_small_order() => Ok(()),
        _ => Err(EnvelopeError::RecipientKey),
    }
}

/// Hands `crypto_box` the chosen ephemeral secret: the first 32 bytes it asks
/// for are that secret (it asks for exactly 32), anything more comes from
/// the OS so a change in the library can never make output predictable.
struct OneShotRng {
    secret: Zeroizing<[u8; 32]>,
    used: usize,
}

impl OneShotRng {
    fn new(secret: &[u8; 32]) -> Self {
        Self {
            secret: Zeroizing::new(*secret),
            used: 0,
        }
    }
}

impl RngCore for OneShotRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let take = dest.len().min(self.secret.len() - self.used);
        dest[..take].copy_from_slice(&self.secret[self.used..self.used + take]);
        self.used += take;
        OsRng.fill_bytes(&mut dest[take..]);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// The secret is random (or, for vectors, fixed on purpose).
impl CryptoRng for OneShotRng {}
