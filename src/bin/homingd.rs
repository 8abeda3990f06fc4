//! `homingd`: the Homing home-server daemon.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
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

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Invite codes for `registration.policy = "invite"`.
    #[command(subcommand)]
    Invite(InviteCommand),
}

#[derive(Debug, Subcommand)]
enum InviteCommand {
    /// Create an invite code (shown once).
    Create {
        /// How many registrations the code allows.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
        uses: i32,
        /// Expire after this long (e.g. 7d); default never.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// List invites (without their codes).
    List,
    /// Revoke an invite by id.
    Revoke { invite_id: String },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    homing::time::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("homingd: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
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
            Ok(())
        }
        Command::Admin { json, command } => admin(&settings, json, command),
        Command::Run => {
            homing::telemetry::init(settings.log_format, &settings.log_filter);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await?;
                tracing::info!("homingd stopped");
                Ok(())
            })
        }
    }
}

fn admin(settings: &Settings, json: bool, command: AdminCommand) -> anyhow::Result<()> {
    use homing::admin::invites;
    let db = homing::storage::Database::connect(&settings.database)?;
    db.run_migrations()?;
    let mut conn = db.get()?;
    match command {
        AdminCommand::Invite(InviteCommand::Create { uses, expires }) => {
            let invite = invites::create(&mut conn, uses, expires)?;
            if json {
                println!("{}", serde_json::to_string(&invite)?);
            } else {
                println!("invite {} created: code {}", invite.invite_id, invite.code);
                println!(
                    "uses: {}, expires: {}",
                    invite.max_uses,
                    show_time(invite.expires_at)
                );
                println!("the code is shown only now; give it to the person you invite");
            }
        }
        AdminCommand::Invite(InviteCommand::List) => {
            let list = invites::list(&mut conn)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no invites");
            } else {
                println!("{:<10} {:>9} {:<24} status", "id", "uses", "expires");
                for invite in list {
                    let status = if invite.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<10} {:>4}/{:<4} {:<24} {status}",
                        invite.invite_id,
                        invite.uses,
                        invite.max_uses,
                        show_time(invite.expires_at)
                    );
                }
            }
        }
        AdminCommand::Invite(InviteCommand::Revoke { invite_id }) => {
            if !invites::revoke(&mut conn, &invite_id)? {
                anyhow::bail!("no active invite with id {invite_id}");
            }
            if json {
                println!("{}", serde_json::json!({ "revoked": invite_id }));
            } else {
                println!("invite {invite_id} revoked");
            }
        }
    }
    Ok(())
}

fn show_time(ms: Option<i64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) => homing::time::format_rfc3339(ms),
    }
}
