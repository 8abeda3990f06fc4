//! `homing`: the Homing client. Commands arrive with the client library; this
//! is the command tree they plug into.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// End-to-end encrypted direct messages, addressed like email.
#[derive(Debug, Parser)]
#[command(name = "homing", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what a home server offers: policy, limits, retention.
    ServerInfo {
        /// Server name, e.g. example.org or 127.0.0.1:8008.
        server: String,
        /// Use plain HTTP (local testing only).
        #[arg(long)]
        insecure_http: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ServerInfo {
            server,
            insecure_http,
        } => server_info(&server, insecure_http),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("homing: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn server_info(server: &str, insecure_http: bool) -> anyhow::Result<()> {
    let name = homing::address::ServerName::parse(server)?;
    let scheme = if insecure_http { "http" } else { "https" };
    let url = format!("{scheme}://{name}/.well-known/homing/server-info");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info: serde_json::Value = runtime.block_on(async {
        let response = reqwest::get(&url).await?.error_for_status()?;
        response.json().await
    })?;
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
