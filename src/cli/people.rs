//! `whois`, `trust` and `server-info`.

use serde_json::{json, Value};

use super::context::{fingerprint, output, CliError, Context, Options};
use crate::address::{Address, ServerName};
use crate::client::api::{home_server_url, HomeServer};

pub async fn whois(options: &Options, address: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let address = Address::parse(address)
        .map_err(|e| CliError::Usage(format!("{address}: {e}")))?
        .to_string();
    let contact = context.store.contacts()?.get(&address).cloned();
    let pinned = contact.as_ref().map(|c| c.account_key.clone());
    let document = context.server.directory(&address).await?;
    let identity = super::context::VerifiedIdentity::for_address(&address, &document)?;
    let key = identity.account_key.to_string();
    // Shown, not refused: whois is how people look at what is wrong.
    let seen_version = contact
        .filter(|c| c.account_key == key)
        .map_or(0, |c| c.device_list_version);
    let rolled_back = identity.version < seen_version;
    let pin = match &pinned {
        None => "not pinned yet (pinned on first message)",
        Some(p) if *p == key => "matches the pinned key",
        Some(_) => "DIFFERS FROM THE PINNED KEY",
    };
    let devices: Vec<Value> = identity
        .devices
        .iter()
        .map(|d| json!({ "device_id": d.device_id, "sign_key": d.sign_key, "created_at": d.created_at }))
        .collect();
    let value = json!({
        "address": identity.address,
        "server": identity.address.split_once('@').map(|(_, s)| s),
        "account_key": key,
        "fingerprint": fingerprint(&key),
        "pinned": pinned.as_deref() == Some(key.as_str()),
        "key_changed": pinned.is_some() && pinned.as_deref() != Some(key.as_str()),
        "device_list_version": identity.version,
        "highest_version_seen": seen_version.max(identity.version),
        "rolled_back": rolled_back,
        "devices": devices,
    });
    output(options, &value, || {
        out!("{}", identity.address);
        out!("  account key  {}  ({pin})", fingerprint(&key));
        out!(
            "  devices      {} (list version {})",
            identity.devices.len(),
            identity.version
        );
        if rolled_back {
            out!(
                "  WARNING      version {} was seen before: this list is older",
                seen_version
            );
        }
        for device in &identity.devices {
            out!(
                "    {}  {}",
                device.device_id,
                fingerprint(&device.sign_key.to_string())
            );
        }
    });
    Ok(())
}

/// Accepts the account key an address now presents.
pub async fn trust(options: &Options, address: &str) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    // Pins the key the address now presents, with its list version.
    let identity = context.verified_identity(address, true).await?;
    let key = identity.account_key.to_string();
    output(
        options,
        &json!({ "address": identity.address, "account_key": key }),
        || {
            out!(
                "{} is now pinned to {}",
                identity.address,
                fingerprint(&key)
            );
        },
    );
    Ok(())
}

pub async fn server_info(options: &Options, server: &str) -> Result<(), CliError> {
    let name = ServerName::parse(server).map_err(|e| CliError::Usage(format!("{server}: {e}")))?;
    let url = home_server_url(
        &name,
        options.server_url.as_deref(),
        options.insecure_http,
        &options.network,
    )
    .await;
    let info = HomeServer::reached_through(&url, &options.network)
        .server_info()
        .await?;
    output(options, &info, || {
        out!(
            "{} (Homing {})",
            info["server_name"].as_str().unwrap_or(server),
            info["version"].as_str().unwrap_or("?")
        );
        out!(
            "  registration       {}",
            info["registration"].as_str().unwrap_or("?")
        );
        out!(
            "  largest message    {} bytes",
            info["limits"]["max_message_bytes"]
        );
        out!(
            "  pending per device {} messages",
            info["limits"]["max_pending_messages_per_device"]
        );
        let days = |v: &Value| {
            v.as_u64()
                .map_or("?".to_string(), |s| format!("{} days", s / 86_400))
        };
        out!(
            "  unread mail kept   {}",
            days(&info["retention"]["max_pending_age_secs"])
        );
        out!(
            "  longest keep       {}",
            days(&info["retention"]["max_keep_secs"])
        );
        out!(
            "  idle device limit  {}",
            days(&info["retention"]["device_inactivity_secs"])
        );
    });
    Ok(())
}
