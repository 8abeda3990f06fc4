//! `homingd admin …`: the command tree and its output, human by default and
//! JSON with `--json`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;

use super::{check, federation, invites, migrate_store, users};
use crate::address::ServerName;
use crate::config::Settings;
use crate::federation::policy::{self, Rule};
use crate::storage::Database;
use crate::time::{format_rfc3339, parse_duration};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Invite codes for `registration.policy = "invite"`.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Outbound queues per destination server.
    #[command(subcommand)]
    Destinations(DestinationCommand),
    /// Run-time federation rules (in addition to federation.allow/deny).
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Accounts on this server.
    #[command(subcommand)]
    Users(UserCommand),
    /// Server-wide figures: accounts, devices, pending and queued mail.
    Stats,
    /// Run the purge (expiry, inactivity, finished mail, bounces) now.
    Purge,
    /// Make a new server signing key; the old one stays valid for --grace.
    RotateKey {
        #[arg(long, default_value = "1d", value_parser = parse_duration)]
        grace: Duration,
    },
    /// Copy this server's database into an empty PostgreSQL database (stop homingd first).
    ///
    /// Copies every table of the configured database (normally SQLite) in
    /// one transaction, then checks that each table has as many rows in the
    /// target as in the source. Stop homingd before running it, and start it
    /// again only once database.url names the target: mail accepted in
    /// between would stay behind. The copy only reads the configured
    /// database, and refuses a target that already holds rows.
    MigrateStore {
        /// The target, an empty PostgreSQL database: postgres://USER@HOST[:PORT]/DATABASE.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
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
    Revoke {
        /// Ids are base64url, so one in 64 begins with `-`: it is still an
        /// id, not an option.
        #[arg(allow_hyphen_values = true)]
        invite_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Every account with its devices and pending mail.
    List,
    /// Stop an account: its sessions end and its identity is not served.
    Disable { alias: String },
    /// Undo `disable`.
    Enable { alias: String },
    /// Delete an account with its devices and pending mail.
    Delete { alias: String },
}

#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// Queue depth, oldest message, failures and next retry of each destination.
    List,
    /// Retry a destination now.
    Retry { server: String },
    /// Drop a destination's queue (senders see `dropped`).
    Drop { server: String },
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Federate with this server (once any allow rule exists, only allowed servers).
    Allow { server: String },
    /// Never federate with this server.
    Deny { server: String },
    /// Remove the rule for this server.
    Clear { server: String },
    /// List the rules.
    List,
    /// Check that mail to SERVER will flow: resolution, connection, TLS,
    /// its keys and a signed hello. Exits 1 when it will not.
    ///
    /// Resolution bypasses the caches, so the answer reflects DNS and the
    /// peer as they are now. Run it with the daemon's configuration: it
    /// signs with this server's key, and the peer fetches that key from the
    /// running daemon.
    Check { server: String },
}

fn server(text: &str) -> anyhow::Result<ServerName> {
    ServerName::parse(text).map_err(|e| anyhow::anyhow!("invalid server name {text:?}: {e}"))
}

fn print<T: Serialize>(json: bool, value: &T, human: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        human();
    }
    Ok(())
}

fn show_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".into(), format_rfc3339)
}

/// Runs one admin command against the configured database. The exit code
/// is a failure when the command found a problem (`federation check`).
pub fn run(settings: &Settings, json: bool, command: AdminCommand) -> anyhow::Result<ExitCode> {
    let db = Database::connect(&settings.database)?;
    db.run_migrations()?;
    let mut conn = db.get()?;
    let conn = &mut *conn;
    let done = match command {
        AdminCommand::Invite(InviteCommand::Create { uses, expires }) => {
            let invite = invites::create(conn, uses, expires)?;
            print(json, &invite, || {
                println!("invite {} created: code {}", invite.invite_id, invite.code);
                println!(
                    "uses: {}, expires: {}",
                    invite.max_uses,
                    show_time(invite.expires_at)
                );
                println!("the code is shown only now; give it to the person you invite");
            })
        }
        AdminCommand::Invite(InviteCommand::List) => {
            let list = invites::list(conn)?;
            print(json, &list, || {
                println!("{:<10} {:>9} {:<24} status", "id", "uses", "expires");
                for invite in &list {
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
            })
        }
        AdminCommand::Invite(InviteCommand::Revoke { invite_id }) => {
            if !invites::revoke(conn, &invite_id)? {
                anyhow::bail!("no active invite with id {invite_id}");
            }
            print(json, &serde_json::json!({ "revoked": invite_id }), || {
                println!("invite {invite_id} revoked")
            })
        }
        AdminCommand::Destinations(DestinationCommand::List) => {
            let list = federation::destinations(conn)?;
            print(json, &list, || {
                println!(
                    "{:<32} {:>7} {:>8} {:<24} {:<24} last error",
                    "destination", "queued", "failures", "next retry", "last failure"
                );
                for d in &list {
                    println!(
                        "{:<32} {:>7} {:>8} {:<24} {:<24} {}",
                        d.server_name,
                        d.queued,
                        d.failures,
                        show_time(Some(d.next_attempt_at)),
                        show_time(d.last_failure_at),
                        d.last_error.as_deref().unwrap_or("-")
                    );
                }
            })
        }
        AdminCommand::Destinations(DestinationCommand::Retry { server: name }) => {
            let name = server(&name)?;
            if !federation::retry(conn, name.as_str())? {
                anyhow::bail!("no destination {name}");
            }
            print(json, &serde_json::json!({ "retry": name.as_str() }), || {
                println!("{name} will be retried at once")
            })
        }
        AdminCommand::Destinations(DestinationCommand::Drop { server: name }) => {
            let name = server(&name)?;
            let dropped = federation::drop_queue(conn, name.as_str())?;
            print(json, &serde_json::json!({ "dropped": dropped }), || {
                println!("dropped {dropped} queued messages for {name}")
            })
        }
        AdminCommand::Federation(command) => {
            return federation_command(settings, &db, conn, json, command)
        }
        AdminCommand::Users(command) => user_command(conn, json, command),
        AdminCommand::Stats => {
            let stats = users::stats(conn)?;
            print(json, &stats, || {
                println!(
                    "accounts              {} ({} disabled)",
                    stats.accounts, stats.disabled_accounts
                );
                println!("active devices        {}", stats.active_devices);
                println!("messages held         {}", stats.messages_held);
                println!("pending deliveries    {}", stats.pending_deliveries);
                println!("queued for relay      {}", stats.queued_remote);
                println!("destinations failing  {}", stats.destinations_failing);
            })
        }
        AdminCommand::Purge => {
            let purge = crate::mailbox::PurgeSettings {
                max_pending_age: settings.retention.max_pending_age,
                device_inactivity: settings.retention.device_inactivity,
                batch: 100_000,
            };
            let report = crate::mailbox::purge_once(conn, &purge, crate::time::now_ms())?;
            let value = serde_json::json!({
                "expired_deliveries": report.expired_deliveries,
                "inactive_deliveries": report.inactive_deliveries,
                "finished_messages": report.finished_messages,
                "bounced": report.bounced,
                "bookkeeping_rows": report.bookkeeping_rows,
            });
            print(json, &value, || println!("purged: {value}"))
        }
        AdminCommand::MigrateStore { to } => {
            let report =
                migrate_store::migrate(conn, &settings.database.url, &to, &mut |table, rows| {
                    if !json {
                        eprintln!("copied {table}: {rows} rows");
                    }
                })?;
            print(json, &report, || print_migration(&report))
        }
        AdminCommand::RotateKey { grace } => {
            let key_id = crate::server_key::rotate(conn, grace)?;
            print(
                json,
                &serde_json::json!({ "current_key_id": key_id }),
                || {
                    println!(
                        "new signing key {key_id}; the previous key stays valid for {}s",
                        grace.as_secs()
                    )
                },
            )
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn print_migration(report: &migrate_store::MigrateReport) {
    println!("copied {} to {}", report.source, report.target);
    println!("{:<20} {:>12} {:>12}", "table", "source", "target");
    for count in &report.tables {
        println!(
            "{:<20} {:>12} {:>12}",
            count.table, count.source_rows, count.target_rows
        );
    }
    println!(
        "{:<20} {:>12} {:>12}",
        "total", report.total_rows, report.total_rows
    );
    println!(
        "every table matches ({} rows in {:.1}s); set database.url to the target and start homingd",
        report.total_rows,
        report.elapsed_ms as f64 / 1000.0
    );
}

fn user_command(
    conn: &mut crate::storage::DbConnection,
    json: bool,
    command: UserCommand,
) -> anyhow::Result<()> {
    match command {
        UserCommand::List => {
            let list = users::list(conn)?;
            print(json, &list, || {
                println!("{:<24} {:>8} {:>8}  status", "alias", "devices", "pending");
                for user in &list {
                    let status = if user.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<24} {:>8} {:>8}  {status}",
                        user.alias, user.active_devices, user.pending_deliveries
                    );
                }
            })
        }
        UserCommand::Disable { alias } => {
            if !users::set_disabled(conn, &alias, true)? {
                anyhow::bail!("no account {alias}");
            }
            print(json, &serde_json::json!({ "disabled": alias }), || {
                println!("{alias} disabled")
            })
        }
        UserCommand::Enable { alias } => {
            if !users::set_disabled(conn, &alias, false)? {
                anyhow::bail!("no account {alias}");
            }
            print(json, &serde_json::json!({ "enabled": alias }), || {
                println!("{alias} enabled")
            })
        }
        UserCommand::Delete { alias } => {
            let Some(removed) = users::delete(conn, &alias)? else {
                anyhow::bail!("no account {alias}");
            };
            print(
                json,
                &serde_json::json!({ "deleted": alias, "pending_dropped": removed }),
                || println!("{alias} deleted with {removed} pending deliveries"),
            )
        }
    }
}

fn federation_command(
    settings: &Settings,
    db: &Database,
    conn: &mut crate::storage::DbConnection,
    json: bool,
    command: FederationCommand,
) -> anyhow::Result<ExitCode> {
    let done = match command {
        FederationCommand::Check { server: name } => {
            return federation_check(settings, db, json, &server(&name)?)
        }
        FederationCommand::Allow { server: name } => {
            policy::set_rule(conn, &server(&name)?, Rule::Allow)?;
            print(json, &serde_json::json!({ "allow": name }), || {
                println!("allowing {name}")
            })
        }
        FederationCommand::Deny { server: name } => {
            policy::set_rule(conn, &server(&name)?, Rule::Deny)?;
            print(json, &serde_json::json!({ "deny": name }), || {
                println!("denying {name}")
            })
        }
        FederationCommand::Clear { server: name } => {
            if !policy::clear_rule(conn, &server(&name)?)? {
                anyhow::bail!("no rule for {name}");
            }
            print(json, &serde_json::json!({ "cleared": name }), || {
                println!("rule for {name} removed")
            })
        }
        FederationCommand::List => {
            let rules = policy::list_rules(conn)?;
            print(json, &rules, || {
                for (name, rule) in &rules {
                    println!("{rule:<6} {name}");
                }
            })
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// `federation check`: the report, then an exit code that says whether
/// mail will flow.
fn federation_check(
    settings: &Settings,
    db: &Database,
    json: bool,
    server: &ServerName,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(check::check(settings, db, server))?;
    print(json, &report, || {
        println!("checking mail from {} to {}", report.origin, report.server);
        for step in &report.steps {
            let mark = if step.ok { "ok" } else { "FAIL" };
            println!("  {mark:<4} {:<10} {}", step.step, step.detail);
        }
        println!("{}", report.verdict.summary);
    })?;
    Ok(if report.verdict.mail_flows {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{AdminCommand, InviteCommand};

    #[derive(Parser)]
    struct Admin {
        #[command(subcommand)]
        command: AdminCommand,
    }

    #[test]
    fn an_invite_id_may_begin_with_a_hyphen() {
        let parsed = Admin::try_parse_from(["admin", "invite", "revoke", "-bXy2Q_"]).unwrap();
        assert!(matches!(
            parsed.command,
            AdminCommand::Invite(InviteCommand::Revoke { invite_id }) if invite_id == "-bXy2Q_"
        ));
    }
}
