//! What every command needs: the state directory, this device's keys, a
//! signed-in connection to the home server, and verified, pinned identities.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::address::Address;
use crate::api::{ClientError, HomeServer};
use crate::crypto::identity::{DeviceCertificate, DeviceId, SignedDeviceList};
use crate::crypto::{b64, PublicKey};
use crate::keys::{AccountKeys, DeviceKeys};
use crate::network::Network;
use crate::store::{Contact, Identity, Session, Store, StoreError};

/// Global options of the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub home: Option<PathBuf>,
    pub server_url: Option<String>,
    pub insecure_http: bool,
    /// Trusted roots and nameservers for every connection.
    pub network: Network,
    pub json: bool,
}

/// A failure, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Server(#[from] ClientError),
    #[error("{}", key_changed(.address, .pinned, .offered, *.verified))]
    KeyChanged {
        address: String,
        pinned: String,
        offered: String,
        /// The user had compared safety numbers for the pinned key.
        verified: bool,
    },
    #[error(
        "WARNING: the home server served version {offered} of the device list of {address}, \
         older than version {seen} seen before.\n\
         An old list may still hold a device that was removed since: refusing it."
    )]
    Rollback {
        address: String,
        seen: u64,
        offered: u64,
    },
    /// The home server's answer about an identity cannot be trusted.
    #[error("{0}")]
    Untrusted(String),
    /// The address's account left its server, and signed that it did.
    #[error(
        "{address} left its home server (at {when}); its account key signed the departure. \
         Nothing can be sent to it."
    )]
    Departed { address: String, when: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Crypto(String),
}

/// The warning for a changed account key; louder when the user had
/// compared safety numbers for the old one, since then it was known good.
fn key_changed(address: &str, pinned: &str, offered: &str, verified: bool) -> String {
    if verified {
        format!(
            "!!! WARNING: THE ACCOUNT KEY OF {address} THAT YOU VERIFIED CHANGED !!!\n\
             You compared safety numbers with {address} for key {pinned}; the key presented now \
             is {offered}.\n\
             This is what an impersonation looks like. Do not send or read anything under the new \
             key until you have talked to them in person or on a call.\n\
             Only if they confirm they started over, run `homing trust {address}`, then compare \
             safety numbers again with `homing verify {address}`."
        )
    } else {
        format!(
            "WARNING: the account key of {address} changed (pinned {pinned}, now {offered}).\n\
             Someone may be impersonating them, or they lost their keys and started over.\n\
             Check with them another way, then run `homing trust {address}`."
        )
    }
}

/// Reads a passphrase from `HOMING_PASSPHRASE`, else asks at the terminal.
pub fn passphrase(prompt: &str) -> Result<String, CliError> {
    if let Ok(value) = std::env::var("HOMING_PASSPHRASE") {
        return Ok(value);
    }
    rpassword::prompt_password(prompt)
        .map_err(|e| CliError::Usage(format!("cannot read a passphrase: {e}")))
}

/// Stores a secret file, passphrase-protected when `HOMING_PASSPHRASE` is
/// set (the CLI asks for it again whenever it needs the key).
pub fn save_secret(store: &Store, name: &str, secret: &Value) -> Result<(), CliError> {
    let value = match std::env::var("HOMING_PASSPHRASE") {
        Ok(passphrase) if !passphrase.is_empty() => {
            let bytes = serde_json::to_vec(secret).map_err(|e| CliError::Crypto(e.to_string()))?;
            let document = crate::crypto::backup::encrypt_with_passphrase(&bytes, &passphrase)
                .map_err(|e| CliError::Crypto(e.to_string()))?;
            json!({ "protected": document })
        }
        _ => json!({ "plain": secret }),
    };
    Ok(store.save_secret(name, &value)?)
}

/// Reads a secret file written by `save_secret`.
pub fn load_secret(store: &Store, name: &str) -> Result<Option<Value>, CliError> {
    let Some(value) = store.secret(name)? else {
        return Ok(None);
    };
    if let Some(plain) = value.get("plain") {
        return Ok(Some(plain.clone()));
    }
    let document = value
        .get("protected")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::Crypto(format!("{name} is not a key file")))?;
    let passphrase = passphrase(&format!("passphrase for {name}: "))?;
    let bytes = crate::crypto::backup::decrypt_with_passphrase(document, &passphrase)
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CliError::Crypto(e.to_string()))
}

fn seed(value: &Value, field: &str) -> Result<[u8; 32], CliError> {
    value[field]
        .as_str()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| CliError::Crypto(format!("key file field {field} is damaged")))
}

pub fn device_secret(keys: &DeviceKeys) -> Value {
    json!({
        "device_id": keys.device_id,
        "sign_seed": b64(&keys.signing.to_bytes()),
        "box_secret": b64(&keys.box_secret.to_bytes()),
    })
}

pub fn account_secret(keys: &AccountKeys) -> Value {
    json!({ "seed": b64(&keys.signing.to_bytes()) })
}

/// A command's view of this device once its identity exists.
pub struct Context {
    pub store: Store,
    pub identity: Identity,
    pub device: DeviceKeys,
    pub server: HomeServer,
}

impl Context {
    /// Loads the identity and keys and signs in (reusing a valid session).
    pub async fn load(options: &Options) -> Result<Self, CliError> {
        let store = Store::locate(options.home.clone());
        let mut identity = store.identity()?;
        if let Some(url) = &options.server_url {
            identity.server_url = url.trim_end_matches('/').to_string();
        }
        let secret = load_secret(&store, "device.key")?
            .ok_or_else(|| CliError::Crypto("device.key is missing".into()))?;
        let device_id = DeviceId::parse(secret["device_id"].as_str().unwrap_or_default())
            .map_err(|e| CliError::Crypto(e.to_string()))?;
        let device = DeviceKeys {
            device_id,
            signing: SigningKey::from_bytes(&seed(&secret, "sign_seed")?),
            box_secret: crypto_box::SecretKey::from(seed(&secret, "box_secret")?),
        };
        let server = HomeServer::reached_through(&identity.server_url, &options.network);
        let mut context = Self {
            store,
            identity,
            device,
            server,
        };
        context.sign_in(false).await?;
        Ok(context)
    }

    pub fn account_key(&self) -> Result<PublicKey, CliError> {
        PublicKey::parse(&self.identity.account_key).map_err(|e| CliError::Crypto(e.to_string()))
    }

    pub fn server_name(&self) -> &str {
        self.identity
            .address
            .split_once('@')
            .map_or("", |(_, server)| server)
    }

    /// Signs in unless a session valid for another minute exists.
    pub async fn sign_in(&mut self, force: bool) -> Result<(), CliError> {
        let now = crate::time::now_ms();
        if !force {
            if let Some(session) = self.store.session()? {
                if session.expires_at > now + 60_000 {
                    self.server = self.server.clone().with_token(&session.token);
                    return Ok(());
                }
            }
        }
        let account = self.account_key()?;
        let plain = self.server.clone().without_token();
        let (token, expires_at) = plain
            .sign_in(self.server_name(), &account, &self.device)
            .await?;
        self.store.save_session(&Session {
            token: token.clone(),
            expires_at,
        })?;
        self.server = plain.with_token(&token);
        Ok(())
    }

    /// The account key, on devices that hold it.
    pub fn account_keys(&self) -> Result<AccountKeys, CliError> {
        let secret = load_secret(&self.store, "account.key")?.ok_or_else(|| {
            CliError::Usage(
                "this device does not hold the account key; use the first device".into(),
            )
        })?;
        Ok(AccountKeys {
            signing: SigningKey::from_bytes(&seed(&secret, "seed")?),
        })
    }

    /// Looks up `address` through the home server, verifies its device list
    /// here, and checks it against what this device remembers of the
    /// address: the pinned account key (pinned on first use) and the
    /// highest device list version seen under it.
    pub async fn verified_identity(
        &self,
        address: &str,
        trust_new_key: bool,
    ) -> Result<VerifiedIdentity, CliError> {
        let asked = Address::parse(address)
            .map_err(|e| CliError::Usage(format!("{address}: {e}")))?
            .to_string();
        let document = match self.server.directory(&asked).await {
            Err(ClientError::Api {
                status: 410, body, ..
            }) => return Err(self.departure(&asked, &body)),
            other => other?,
        };
        let verified = VerifiedIdentity::for_address(&asked, &document)?;
        let mut contacts = self.store.contacts()?;
        let offered = verified.account_key.to_string();
        let pin = Contact {
            account_key: offered.clone(),
            pinned_at: crate::time::now_ms(),
            device_list_version: verified.version,
            verified: None,
        };
        // Pinned under the address asked for, never under what the
        // answer says of itself.
        match contacts.get_mut(&asked) {
            Some(contact) if contact.account_key != offered && !trust_new_key => {
                return Err(CliError::KeyChanged {
                    address: asked,
                    pinned: fingerprint(&contact.account_key),
                    offered: fingerprint(&offered),
                    verified: contact.is_verified(),
                });
            }
            Some(contact) if contact.account_key == offered => {
                if verified.version < contact.device_list_version {
                    return Err(CliError::Rollback {
                        address: asked,
                        seen: contact.device_list_version,
                        offered: verified.version,
                    });
                }
                if verified.version > contact.device_list_version {
                    contact.device_list_version = verified.version;
                    self.store.save_contacts(&contacts)?;
                }
            }
            _ => {
                contacts.insert(asked, pin);
                self.store.save_contacts(&contacts)?;
            }
        }
        Ok(verified)
    }
}

impl Context {
    /// What a `410` answer for `address` means: believed only when the
    /// departure names that address and verifies with the key pinned for
    /// it (or, never having pinned one, with the key that signed it).
    fn departure(&self, address: &str, body: &Value) -> CliError {
        use homing_proto::documents::DepartureDocument;
        let Ok(document) = serde_json::from_value::<DepartureDocument>(body.clone()) else {
            return CliError::Untrusted(format!(
                "the home server says {address} is gone, without a departure to show for it"
            ));
        };
        let departure = &document.departure;
        let named = format!("{}@{}", departure.alias, departure.server);
        let names_it = Address::parse(&named)
            .map(|a| a.to_string())
            .ok()
            .as_deref()
            == Some(address);
        let pinned = self
            .store
            .contacts()
            .ok()
            .and_then(|contacts| contacts.get(address).map(|c| c.account_key.clone()));
        let key_matches = pinned.is_none_or(|pinned| pinned == departure.account_key.to_string());
        if !names_it || !key_matches || departure.verify(&document.signature).is_err() {
            return CliError::Untrusted(format!(
                "the home server says {address} left, but the departure it shows is not \
                 signed by {address}'s account key: not believing it"
            ));
        }
        CliError::Departed {
            address: address.to_string(),
            when: crate::time::format_rfc3339(departure.departed_at),
        }
    }
}

/// An identity whose device list verified with its account key.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub address: String,
    pub account_key: PublicKey,
    pub devices: Vec<DeviceCertificate>,
    pub version: u64,
}

impl VerifiedIdentity {
    /// Verifies `document` as the answer to a look-up of `asked` (a
    /// canonical address): a document naming any other address is
    /// refused, whatever its signatures say.
    pub fn for_address(asked: &str, document: &Value) -> Result<Self, CliError> {
        let verified = Self::from_document(document)?;
        let named = Address::parse(&verified.address).map(|a| a.to_string());
        if named.as_deref() != Ok(asked) {
            return Err(CliError::Untrusted(format!(
                "the home server answered a look-up of {asked} with the identity of {}: refusing it",
                verified.address
            )));
        }
        Ok(Self {
            address: asked.to_string(),
            ..verified
        })
    }

    /// Parses `document` and verifies its device list with the account
    /// key it carries.
    fn from_document(document: &Value) -> Result<Self, CliError> {
        let bad =
            |what: &str| CliError::Untrusted(format!("the identity document is invalid: {what}"));
        let address = document["address"]
            .as_str()
            .ok_or_else(|| bad("no address"))?
            .to_string();
        let account_key = PublicKey::parse(document["account_key"].as_str().unwrap_or_default())
            .map_err(|_| bad("account key"))?;
        let list: SignedDeviceList = serde_json::from_value(document["signed_device_list"].clone())
            .map_err(|_| bad("device list"))?;
        list.verify(&account_key).map_err(|e| {
            CliError::Untrusted(format!("the device list of {address} does not verify: {e}"))
        })?;
        Ok(Self {
            address,
            account_key,
            version: list.device_list.version,
            devices: list.device_list.devices,
        })
    }
}

/// A short, readable fingerprint of a key: groups of the SHA-256 in hex.
pub fn fingerprint(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    digest[..10]
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `value` as JSON, or `human` for people.
pub fn output(options: &Options, value: &Value, human: impl FnOnce()) {
    if options.json {
        out!("{value}");
    } else {
        human();
    }
}

#[cfg(test)]
mod fingerprint_tests {
    /// The test vector of federation-spec/identity.md, which the home page's
    /// script must match too.
    #[test]
    fn fingerprint_matches_the_spec() {
        assert_eq!(
            super::fingerprint("iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"),
            "a38d cb41 05bf c6b1 2cac"
        );
    }
}
