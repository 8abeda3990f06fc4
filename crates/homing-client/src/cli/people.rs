//! `whois`, `trust` and `server-info`.

use serde_json::{json, Value};

use super::context::{fingerprint, output, CliError, Context, Options};
use crate::address::{Address, ServerName};
use crate::api::{home_server_url, HomeServer};

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
        .as_ref()
        .filter(|c| c.account_key == key)
        .map_or(0, |c| c.device_list_version);
    let rolled_back = identity.version < seen_version;
    let verified = contact.as_ref().is_some_and(|c| c.is_verified());
    let pin = match &pinned {
        None => "not pinned yet (pinned on first message)",
        Some(p) if *p == key => "matches the pinned key",
        Some(_) if verified => "DIFFERS FROM THE KEY YOU VERIFIED",
        Some(_) => "DIFFERS FROM THE PINNED KEY",
    };
    let verified_at = contact
        .as_ref()
        .filter(|c| c.is_verified())
        .and_then(|c| c.verified.as_ref())
        .map(|v| v.verified_at);
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
        "verified": verified,
        "verified_at": verified_at,
        "devices": devices,
    });
    output(options, &value, || {
        out!("{}", identity.address);
        out!("  account key  {}  ({pin})", fingerprint(&key));
        match verified_at {
            Some(at) => out!(
                "  verified     yes: safety number compared on {}",
                crate::time::format_rfc3339(at)
            ),
            None => out!(
                "  verified     no (compare safety numbers: `homing verify {}`)",
                identity.address
            ),
        }
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
    let before = Address::parse(address)
        .ok()
        .map(|a| a.to_string())
        .and_then(|a| context.store.contacts().ok()?.get(&a).cloned());
    // Pins the key the address now presents, with its list version; a new
    // key replaces the pin and with it any verification of the old one.
    let identity = context.verified_identity(address, true).await?;
    let key = identity.account_key.to_string();
    let unverified = before
        .as_ref()
        .is_some_and(|c| c.is_verified() && c.account_key != key);
    let verified = before
        .as_ref()
        .is_some_and(|c| c.is_verified() && c.account_key == key);
    output(
        options,
        &json!({
            "address": identity.address,
            "account_key": key,
            "verified": verified,
            "verification_cleared": unverified,
        }),
        || {
            out!(
                "{} is now pinned to {}",
                identity.address,
                fingerprint(&key)
            );
            if unverified {
                out!(
                    "The key you had verified is replaced: this one is not verified. \
                     Compare safety numbers again with `homing verify {}`.",
                    identity.address
                );
            }
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
