//! `devices`, `link` and `keys`: managing the devices of an identity.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Subcommand;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::context::{
    account_secret, device_secret, fingerprint, output, passphrase, save_secret, CliError, Context,
    Options, VerifiedIdentity,
};
use crate::address::Address;
use crate::api::{home_server_url, HomeServer};
use crate::crypto::canonical::to_canonical_bytes;
use crate::crypto::identity::DeviceId;
use crate::crypto::{b64, BoxPublicKey, PublicKey};
use crate::keys::{AccountKeys, DeviceKeys};
use crate::store::{Identity, Session, Store};

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List this account's devices.
    List,
    /// Revoke a device: its session ends and its pending mail is dropped.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        device_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// On the NEW device: ask to join ADDRESS; shows a code (and QR code).
    New {
        address: String,
        #[arg(long, default_value = "linked")]
        device: String,
    },
    /// On a device holding the account key: accept the code the new device shows.
    Accept {
        #[arg(allow_hyphen_values = true)]
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the account key, encrypted under a passphrase, for safekeeping.
    Export,
    /// Restore the account key from a backup file onto this device.
    Import { file: std::path::PathBuf },
}

pub async fn devices(options: &Options, command: DevicesCommand) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    match command {
        DevicesCommand::List => {
            let devices: Value = context.server.get("/api/v1/devices").await?;
            output(options, &devices, || {
                for device in devices["devices"].as_array().into_iter().flatten() {
                    let id = device["device_id"].as_str().unwrap_or("?");
                    let state = if device["revoked_at"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    };
                    let this = if id == context.identity.device_id {
                        " (this device)"
                    } else {
                        ""
                    };
                    out!("{id:<20} {state}{this}");
                }
            });
        }
        DevicesCommand::Revoke { device_id } => {
            let account = context.account_keys()?;
            let own = context
                .verified_identity(&context.identity.address, false)
                .await?;
            let remaining: Vec<_> = own
                .devices
                .into_iter()
                .filter(|d| d.device_id.as_str() != device_id)
                .collect();
            let list = account
                .device_list(own.version + 1, remaining)
                .map_err(|e| CliError::Crypto(e.to_string()))?;
            let answer: Value = context
                .server
                .post(
                    &format!("/api/v1/devices/{device_id}/revoke"),
                    &json!({ "device_list": list }),
                )
                .await?;
            output(options, &answer, || out!("device {device_id} revoked"));
        }
    }
    Ok(())
}

fn link_code(link_id: &str, request: &[u8]) -> String {
    format!("{link_id}.{}", b64(&Sha256::digest(request)[..16]))
}

pub async fn link(options: &Options, command: LinkCommand) -> Result<(), CliError> {
    match command {
        LinkCommand::New { address, device } => link_new(options, &address, &device).await,
        LinkCommand::Accept { code } => link_accept(options, &code).await,
    }
}

async fn link_new(options: &Options, address: &str, device: &str) -> Result<(), CliError> {
    let address =
        Address::parse(address).map_err(|e| CliError::Usage(format!("{address}: {e}")))?;
    let store = Store::locate(options.home.clone());
    if store.exists() {
        return Err(CliError::Usage(format!(
            "{} already holds an identity",
            store.dir().display()
        )));
    }
    let keys =
        DeviceKeys::generate(DeviceId::parse(device).map_err(|e| CliError::Usage(e.to_string()))?);
    let request = json!({
        "type": "homing.link_request.v1",
        "address": address.to_string(),
        "device_id": keys.device_id,
        "sign_key": keys.sign_key(),
        "box_key": keys.box_key(),
    });
    let request = to_canonical_bytes(&request).map_err(|e| CliError::Crypto(e.to_string()))?;
    let server_url = home_server_url(
        address.server(),
        options.server_url.as_deref(),
        options.insecure_http,
        &options.network,
    )
    .await;
    let server = HomeServer::reached_through(&server_url, &options.network);
    let link: Value = server
        .post("/api/v1/links", &json!({ "blob": b64(&request) }))
        .await?;
    let link_id = link["link_id"].as_str().unwrap_or_default().to_string();
    let code = link_code(&link_id, &request);
    if options.json {
        out!("{}", json!({ "code": code }));
    } else {
        out!("On a device of {address} that holds the account key, run:\n\n  homing link accept {code}\n");
        if let Ok(qr) = qrcode::QrCode::new(code.as_bytes()) {
            out!(
                "{}",
                qr.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build()
            );
        }
        eprintln!("waiting for the other device (10 minutes at most) …");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let response = loop {
        let current: Value = server.get(&format!("/api/v1/links/{link_id}")).await?;
        if let Some(response) = current["response"].as_str() {
            break response.to_string();
        }
        if Instant::now() > deadline {
            return Err(CliError::Usage(
                "the link expired before it was accepted".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sealed = URL_SAFE_NO_PAD
        .decode(response)
        .map_err(|_| CliError::Crypto("the link answer is not base64url".into()))?;
    let opened = keys
        .box_secret
        .unseal(&sealed)
        .map_err(|_| CliError::Crypto("the link answer was not sealed to this device".into()))?;
    let answer: Value =
        serde_json::from_slice(&opened).map_err(|e| CliError::Crypto(e.to_string()))?;
    let seed = answer["account_seed"]
        .as_str()
        .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| CliError::Crypto("the link answer holds no account key".into()))?;
    let account = AccountKeys {
        signing: SigningKey::from_bytes(&seed),
    };
    let account_key = account.public();
    let published = check_handed_key(&server, &address, &account_key, &keys).await?;
    let (token, expires_at) = server
        .sign_in(address.server().as_str(), &account_key, &keys)
        .await?;
    save_secret(&store, "account.key", &account_secret(&account))?;
    save_secret(&store, "device.key", &device_secret(&keys))?;
    store.save_session(&Session { token, expires_at })?;
    store.save_identity(&Identity {
        address: address.to_string(),
        server_url,
        account_key: account_key.to_string(),
        device_id: keys.device_id.to_string(),
    })?;
    super::init::pin_own(&store, &address, &account_key, published.version)?;
    output(
        options,
        &json!({ "address": address.to_string(), "device_id": keys.device_id }),
        || {
            out!("This device is now {address} ({}).", keys.device_id);
            out!(
                "Account key fingerprint: {} (compare it with `homing whois {address}` on the other device)",
                fingerprint(&account_key.to_string())
            );
        },
    );
    Ok(())
}

/// Before the new device trusts the account key it was handed: it must be
/// the account key published for `address`, and that key must have signed
/// a device list holding this very device. Otherwise whoever answered (a
/// stranger who saw the code, or the server) would make this device theirs.
async fn check_handed_key(
    server: &HomeServer,
    address: &Address,
    account_key: &PublicKey,
    keys: &DeviceKeys,
) -> Result<VerifiedIdentity, CliError> {
    let document: Value = server
        .get(&format!("/.well-known/homing/identity/{}", address.alias()))
        .await?;
    let published = VerifiedIdentity::for_address(&address.to_string(), &document)?;
    if published.account_key != *account_key {
        return Err(CliError::Untrusted(format!(
            "the account key handed over ({}) is not the account key of {address} ({}): refusing it",
            fingerprint(&account_key.to_string()),
            fingerprint(&published.account_key.to_string())
        )));
    }
    let listed = published.devices.iter().any(|device| {
        device.device_id == keys.device_id
            && device.sign_key == keys.sign_key()
            && device.box_key == keys.box_key()
    });
    if !listed {
        return Err(CliError::Untrusted(format!(
            "the device list of {address} does not hold this device: refusing the answer"
        )));
    }
    Ok(published)
}

async fn link_accept(options: &Options, code: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let (link_id, hash) = code
        .split_once('.')
        .ok_or_else(|| CliError::Usage("a link code looks like ID.CHECK".into()))?;
    let link: Value = context
        .server
        .get(&format!("/api/v1/links/{link_id}"))
        .await?;
    let request = link["request"]
        .as_str()
        .and_then(|r| URL_SAFE_NO_PAD.decode(r).ok())
        .ok_or_else(|| CliError::Crypto("the link request is damaged".into()))?;
    // The code came from the new device's screen: it pins the request, so
    // the server cannot swap in keys of its own.
    if link_code(link_id, &request) != format!("{link_id}.{hash}") {
        return Err(CliError::Crypto(
            "the link request does not match the code: refusing".into(),
        ));
    }
    let request: Value =
        serde_json::from_slice(&request).map_err(|e| CliError::Crypto(e.to_string()))?;
    if request["type"] != "homing.link_request.v1"
        || request["address"] != context.identity.address.as_str()
    {
        return Err(CliError::Crypto(
            "the link request is for another address".into(),
        ));
    }
    let device_id = DeviceId::parse(request["device_id"].as_str().unwrap_or_default())
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let sign_key = PublicKey::parse(request["sign_key"].as_str().unwrap_or_default())
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let box_key = BoxPublicKey::parse(request["box_key"].as_str().unwrap_or_default())
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let account = context.account_keys()?;
    let certificate = crate::crypto::identity::DeviceCertificate::new(
        account.public(),
        device_id.clone(),
        sign_key,
        box_key,
        crate::time::now_ms(),
    )
    .sign(&account.signing)
    .map_err(|e| CliError::Crypto(e.to_string()))?;
    let own = context
        .verified_identity(&context.identity.address, false)
        .await?;
    let mut devices = own.devices;
    devices.push(certificate.certificate.clone());
    let list = account
        .device_list(own.version + 1, devices)
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let _: Value = context
        .server
        .post(
            "/api/v1/devices",
            &json!({ "device_certificate": certificate, "device_list": list }),
        )
        .await?;
    let answer = json!({ "account_seed": b64(&account.signing.to_bytes()) });
    let plaintext = serde_json::to_vec(&answer).map_err(|e| CliError::Crypto(e.to_string()))?;
    let sealed = crypto_box::PublicKey::from(box_key.0)
        .seal(&mut rand::rngs::OsRng, &plaintext)
        .map_err(|_| CliError::Crypto("sealing the answer failed".into()))?;
    let _: Value = context
        .server
        .put(
            &format!("/api/v1/links/{link_id}/response"),
            &json!({ "blob": b64(&sealed) }),
        )
        .await?;
    output(options, &json!({ "linked": device_id }), || {
        out!(
            "linked device {device_id} ({})",
            fingerprint(&sign_key.to_string())
        );
    });
    Ok(())
}

pub async fn keys(options: &Options, command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Export => {
            let store = Store::locate(options.home.clone());
            let identity = store.identity()?;
            let secret = super::context::load_secret(&store, "account.key")?.ok_or_else(|| {
                CliError::Usage("this device does not hold the account key".into())
            })?;
            let seed = secret["seed"]
                .as_str()
                .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| CliError::Crypto("account.key is damaged".into()))?;
            let passphrase = passphrase("backup passphrase: ")?;
            if passphrase.chars().count() < 8 {
                return Err(CliError::Usage(
                    "use a passphrase of at least 8 characters".into(),
                ));
            }
            let document = crate::crypto::backup::export(&seed, &passphrase)
                .map_err(|e| CliError::Crypto(e.to_string()))?;
            out!("{document}");
            eprintln!(
                "backup of {} written; keep it and the passphrase apart and safe",
                identity.address
            );
        }
        KeysCommand::Import { file } => {
            let store = Store::locate(options.home.clone());
            let identity = store.identity()?;
            let document = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let passphrase = passphrase("backup passphrase: ")?;
            let seed = crate::crypto::backup::import(document.trim(), &passphrase)
                .map_err(|e| CliError::Crypto(e.to_string()))?;
            let account = AccountKeys {
                signing: SigningKey::from_bytes(&seed),
            };
            if account.public().to_string() != identity.account_key {
                return Err(CliError::Crypto(format!(
                    "this backup is not the account key of {}",
                    identity.address
                )));
            }
            save_secret(&store, "account.key", &account_secret(&account))?;
            output(options, &json!({ "imported": identity.address }), || {
                out!(
                    "account key of {} restored on this device",
                    identity.address
                )
            });
        }
    }
    Ok(())
}
