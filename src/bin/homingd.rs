//! `homingd`: the Homing home-server daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use homing::admin::cli::AdminCommand;
use homing::config::Settings;
use homing::startup::Application;

/// The Homing home server.
#[derive(Debug, Parser)]
#[command(name = "homingd", version, about)]
struct Cli {
    /// TOML configuration file (settings there override the defaults;
    /// HOMING__SECTION__KEY environment variables override both).
    #[arg(long, short, global = true, env = "HOMING_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Check the configuration and print the effective settings.
    CheckConfig,
    /// Administer the server's database directly (no running daemon needed).
    Admin {
        /// Machine-readable output.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("homingd: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!(
                "configuration ok: server {} on {}, database {}, registration {:?}",
                settings.server_name,
                settings.bind,
                settings.database.url.describe(),
                settings.registration_policy,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { json, command } => homing::admin::cli::run(&settings, json, command),
        Command::Run => {
            homing::telemetry::init(settings.log_format, &settings.log_filter);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await?;
                tracing::info!("homingd stopped");
                Ok::<_, anyhow::Error>(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
