//! Homing's load generator: starts `homingd` daemons (built with
//! `cargo build --release --bins`), registers its own users, drives real
//! HTTP and WebSocket traffic, and prints one JSON object.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release --example loadgen -- --scenario send --database sqlite --duration 10
//! ```
//!
//! Scenarios: `send`, `e2e`, `federation`, `fanout`, `backlog`, `scale`,
//! `proxied` (see
//! BENCHMARKS.md). PostgreSQL comes from `--database-url` or
//! `HOMING_TEST_DATABASE_URL`; each run uses a fresh database there.

mod daemon;
mod fanout;
mod fanout_cluster;
mod http1;
mod proxied;
mod scale;
mod scenarios;

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    Send,
    E2e,
    Federation,
    Fanout,
    Backlog,
    Scale,
    Proxied,
    /// Holds sessions for `fanout --replicas` (run by it, not by hand).
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Measure a Homing server.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "send")]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "sqlite")]
    database: Backend,
    /// PostgreSQL server for `--database postgres` (a fresh database is made on it).
    #[arg(long, env = "HOMING_TEST_DATABASE_URL")]
    database_url: Option<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Concurrent senders (`send`, `federation`).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Messages per second (`e2e`).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Idle gateway connections (`fanout`).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Replicas of the server on one PostgreSQL database (`fanout`), each
    /// with its share of the sessions held by a process of its own.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The daemon a `hold` process connects to.
    #[arg(long, default_value = "")]
    url: String,
    /// Pending deliveries for other devices (`backlog`), e.g. 1000,1000000.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    backlog: Vec<u64>,
    /// Filler accounts (`scale`).
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Devices per filler account (`scale`).
    #[arg(long, default_value_t = 3)]
    devices_per_account: u64,
    /// Filler pending deliveries, ten per message (`scale`).
    #[arg(long, default_value_t = 10_000_000)]
    pending: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let duration = Duration::from_secs(args.duration.max(1));
    let postgres = match args.database {
        Backend::Sqlite => None,
        Backend::Postgres => Some(args.database_url.clone().ok_or_else(|| {
            anyhow::anyhow!("--database postgres needs --database-url or HOMING_TEST_DATABASE_URL")
        })?),
    };
    let result = match args.scenario {
        Scenario::Send => scenarios::send(postgres.as_deref(), duration, args.concurrency).await?,
        Scenario::E2e => scenarios::e2e(postgres.as_deref(), duration, args.rate).await?,
        Scenario::Federation => {
            scenarios::federation(postgres.as_deref(), duration, args.concurrency).await?
        }
        Scenario::Fanout if args.replicas > 1 => {
            fanout_cluster::fanout_cluster(postgres.as_deref(), args.connections, args.replicas)
                .await?
        }
        Scenario::Fanout => fanout::fanout(postgres.as_deref(), args.connections).await?,
        Scenario::Hold => fanout_cluster::hold(&args.url, args.connections).await?,
        Scenario::Backlog => scenarios::backlog(postgres.as_deref(), &args.backlog).await?,
        Scenario::Scale => {
            let sizes = scale::Sizes {
                accounts: args.accounts,
                devices_per_account: args.devices_per_account,
                pending: args.pending,
            };
            scale::scale(postgres.as_deref(), duration, args.concurrency, sizes).await?
        }
        Scenario::Proxied => {
            proxied::proxied(postgres.as_deref(), duration, args.concurrency).await?
        }
    };
    let mut result = result;
    result["scenario"] = serde_json::json!(format!("{:?}", args.scenario).to_lowercase());
    result["database"] = serde_json::json!(format!("{:?}", args.database).to_lowercase());
    println!("{result}");
    Ok(())
}
