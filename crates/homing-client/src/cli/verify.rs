//! `verify`: the safety number of this account and a contact, to compare
//! in person or on a call, and the record that the user compared it.

use serde_json::json;

use super::context::{output, CliError, Context, Options};
use crate::address::Address;
use crate::crypto::safety_number::{grouped, safety_number};
use crate::store::Verification;

/// Shows the safety number of this account and `address` (pinning the
/// contact's key on first use, refusing a changed one); with `confirm`,
/// records that the user compared it and it matched.
pub async fn verify(options: &Options, address: &str, confirm: bool) -> Result<(), CliError> {
    let context = Context::load(options).await?;
    let ours = Address::parse(&context.identity.address)
        .map_err(|e| CliError::Usage(format!("{}: {e}", context.identity.address)))?
        .to_string();
    let our_key = context.account_key()?;
    // Checked against the pin: a changed key fails here with its warning,
    // so no number is ever shown for a key the user has not accepted.
    let identity = context.verified_identity(address, false).await?;
    if identity.address == ours {
        return Err(CliError::Usage(
            "that is your own address: compare safety numbers with someone else".into(),
        ));
    }
    let their_key = identity.account_key;
    let number = safety_number((&our_key, &ours), (&their_key, &identity.address));

    let mut contacts = context.store.contacts()?;
    let contact = contacts.get_mut(&identity.address).ok_or_else(|| {
        CliError::Untrusted(format!("{} is not pinned on this device", identity.address))
    })?;
    if confirm && !contact.is_verified() {
        contact.verified = Some(Verification {
            account_key: their_key.to_string(),
            verified_at: crate::time::now_ms(),
        });
    }
    let verification = contact.verified.clone().filter(|_| contact.is_verified());
    if confirm {
        context.store.save_contacts(&contacts)?;
    }

    let value = json!({
        "address": identity.address,
        "number": number,
        "your_address": ours,
        "your_key": our_key.to_string(),
        "their_key": their_key.to_string(),
        "verified": verification.is_some(),
        "verified_at": verification.as_ref().map(|v| v.verified_at),
    });
    output(options, &value, || {
        out!("Safety number of you ({ours}) and {}:\n", identity.address);
        for line in grouped(&number, 4).lines() {
            out!("    {line}");
        }
        out!("");
        if let Ok(qr) = qrcode::QrCode::new(number.as_bytes()) {
            out!(
                "{}",
                qr.render::<qrcode::render::unicode::Dense1x2>()
                    .quiet_zone(true)
                    .build()
            );
        }
        match &verification {
            Some(v) if confirm => out!(
                "Recorded: you compared this number with {} ({}).",
                identity.address,
                crate::time::format_rfc3339(v.verified_at)
            ),
            Some(v) => out!(
                "Verified: you compared this number with {} on {}.",
                identity.address,
                crate::time::format_rfc3339(v.verified_at)
            ),
            None => out!(
                "Compare it with the number {} sees (`homing verify {ours}`),\n\
                 in person or on a call. If every digit matches, run\n\n  \
                 homing verify {} --confirm",
                identity.address,
                identity.address
            ),
        }
    });
    Ok(())
}
