//! `homing init ALIAS@SERVER`: make keys, register, sign in.

use serde_json::json;

use super::context::{
    account_secret, device_secret, fingerprint, output, save_secret, CliError, Options,
};
use crate::address::Address;
use crate::api::{home_server_url, HomeServer};
use crate::crypto::identity::DeviceId;
use crate::crypto::PublicKey;
use crate::keys::{AccountKeys, DeviceKeys};
use crate::store::{Contact, Identity, Session, Store};

pub async fn init(
    options: &Options,
    address: &str,
    invite: Option<&str>,
    device: &str,
) -> Result<(), CliError> {
    let address =
        Address::parse(address).map_err(|e| CliError::Usage(format!("{address}: {e}")))?;
    let device_id = DeviceId::parse(device).map_err(|e| CliError::Usage(e.to_string()))?;
    let store = Store::locate(options.home.clone());
    if store.exists() {
        return Err(CliError::Usage(format!(
            "{} already holds an identity; use another --home",
            store.dir().display()
        )));
    }
    let server_url = home_server_url(
        address.server(),
        options.server_url.as_deref(),
        options.insecure_http,
        &options.network,
    )
    .await;
    let server = HomeServer::reached_through(&server_url, &options.network);
    eprintln!("registering {address} at {server_url} …");
    let account = AccountKeys::generate();
    let keys = DeviceKeys::generate(device_id);
    let body = account
        .registration(
            address.alias().as_str(),
            address.server().as_str(),
            &keys,
            invite,
        )
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    server.register(&body).await?;
    let account_key = account.public();
    let (token, expires_at) = server
        .sign_in(address.server().as_str(), &account_key, &keys)
        .await?;
    save_secret(&store, "account.key", &account_secret(&account))?;
    save_secret(&store, "device.key", &device_secret(&keys))?;
    store.save_session(&Session { token, expires_at })?;
    store.save_identity(&Identity {
        address: address.to_string(),
        server_url: server_url.clone(),
        account_key: account_key.to_string(),
        device_id: keys.device_id.to_string(),
    })?;
    // This account's own key is known, not learnt: pinned now, the server
    // never gets a first contact in which to swap it (and read what this
    // account sends to its own other devices).
    pin_own(&store, &address, &account_key, 1)?;
    let value = json!({
        "address": address.to_string(),
        "account_key": account_key.to_string(),
        "device_id": keys.device_id,
        "home": store.dir().display().to_string(),
    });
    output(options, &value, || {
        out!("You are {address}.");
        out!(
            "Account key fingerprint: {}",
            fingerprint(&account_key.to_string())
        );
        out!(
            "Keys are in {} (readable only by you).",
            store.dir().display()
        );
        out!();
        out!("Your identity is your account key. If you lose every device and have no");
        out!("backup, it is gone for good and nobody can restore it. Make a backup now:");
        out!("  homing keys export > homing-backup.json");
    });
    Ok(())
}

/// Pins this account's own key under its address, with the device list
/// version known to be current.
pub fn pin_own(
    store: &Store,
    address: &Address,
    account_key: &PublicKey,
    version: u64,
) -> Result<(), CliError> {
    let mut contacts = store.contacts()?;
    contacts.insert(
        address.to_string(),
        Contact {
            account_key: account_key.to_string(),
            pinned_at: crate::time::now_ms(),
            device_list_version: version,
            verified: None,
        },
    );
    Ok(store.save_contacts(&contacts)?)
}
