//! `homing account`: leaving the home server for good.

use clap::Subcommand;
use serde_json::{json, Value};

use super::context::{output, CliError, Context, Options};
use crate::crypto::identity::DepartureStatement;

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Delete this account from its home server, with every device, the
    /// mail waiting for it and its address there (which nobody can take
    /// again). Asks you to type the address unless --yes.
    Delete {
        #[arg(long)]
        yes: bool,
    },
}

pub async fn account(options: &Options, command: AccountCommand) -> Result<(), CliError> {
    let AccountCommand::Delete { yes } = command;
    let context = Context::load(options).await?;
    let address = context.identity.address.clone();
    if !yes && !confirmed(&address)? {
        return Err(CliError::Usage(format!(
            "not confirmed: {address} was not deleted"
        )));
    }
    let (alias, server) = address.split_once('@').ok_or_else(|| {
        CliError::Usage(format!("stored address {address:?} is not ALIAS@SERVER"))
    })?;
    let account = context.account_keys()?;
    let departed_at = crate::time::now_ms();
    let signature = DepartureStatement::new(account.public(), alias, server, departed_at)
        .sign(&account.signing)
        .map_err(|e| CliError::Crypto(e.to_string()))?;
    let answer: Value = context
        .server
        .delete(
            "/api/v1/account",
            &json!({"departed_at": departed_at, "signature": signature.to_string()}),
        )
        .await?;
    output(options, &answer, || {
        out!(
            "{address} is deleted, with {} message(s) that were waiting for it",
            answer["pending_deliveries_removed"]
        )
    });
    Ok(())
}

/// Asks on the terminal; true when the person typed the address back.
fn confirmed(address: &str) -> Result<bool, CliError> {
    use std::io::Write as _;
    eprint!(
        "This deletes {address}, its devices and the mail waiting for it, for good.\n\
         Type the address to confirm: "
    );
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the confirmation: {e}")))?;
    Ok(line.trim() == address)
}
