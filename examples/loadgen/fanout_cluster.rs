//! `fanout --replicas N`: more idle sessions than one process may open.
//!
//! A process here may hold at most 20,000 open files, so 100,000 sessions
//! need several daemons and several holders. This starts a server of N
//! replicas on one PostgreSQL database (as replicas are deployed: one
//! name, one database, a port each), and for each replica a child load
//! generator (`--scenario hold`) that opens its share of the sessions, all
//! of one device, and reports when each frame reached its socket. One
//! message then reaches every session: those on the replica that stored
//! it through its hub, the rest through PostgreSQL's `LISTEN/NOTIFY`.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::daemon::{cpu_ms, replica, rss_kib, start, user, Daemon};
use crate::fanout::{figures, gather, open_sessions, spawn_readers};
use crate::scenarios::{post_send, Outgoing};

/// Sessions one holder may open: its own files are capped at 20,000.
const MAX_PER_HOLDER: usize = 19_000;

pub async fn fanout_cluster(
    postgres: Option<&str>,
    connections: usize,
    replicas: usize,
) -> anyhow::Result<Value> {
    let postgres =
        postgres.ok_or_else(|| anyhow::anyhow!("replicas share a PostgreSQL database"))?;
    let replicas = replicas.max(1);
    let per_replica = connections.div_ceil(replicas);
    anyhow::ensure!(
        per_replica <= MAX_PER_HOLDER,
        "{per_replica} sessions per replica: use at least {} replicas",
        connections.div_ceil(MAX_PER_HOLDER)
    );
    let primary = start(Some(postgres), &[]).await?;
    let mut daemons = vec![primary];
    for _ in 1..replicas {
        let next = replica(&daemons[0], &[]).await?;
        daemons.push(next);
    }
    let alice = user(&daemons[0], "alice", 1).await?;
    let bob = user(&daemons[0], "bob", 1).await?;
    let pids: Vec<u32> = daemons.iter().map(|d| d.child.id()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: u64 = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();

    let mut holders = Vec::with_capacity(replicas);
    let mut remaining = connections;
    for daemon in &daemons {
        let share = remaining.min(per_replica);
        remaining -= share;
        holders.push(Holder::start(daemon, &bob.tokens[0], share).await?);
    }
    for holder in &mut holders {
        holder.ready().await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: u64 = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();

    let (_, request) = Outgoing::to(&bob).message();
    let http = reqwest::Client::new();
    let send_url = format!("{}/api/v1/dms/send", daemons[0].url);
    let daemon_cpu: Vec<Option<f64>> = pids.iter().map(|pid| cpu_ms(*pid)).collect();
    let sent_at = SystemTime::now();
    let since_epoch = sent_at.duration_since(SystemTime::UNIX_EPOCH)?.as_nanos();
    for holder in &mut holders {
        holder
            .stdin
            .write_all(format!("{since_epoch}\n").as_bytes())
            .await?;
        holder.stdin.flush().await?;
    }
    post_send(&http, &send_url, &alice.tokens[0], request)
        .send()
        .await?;
    let (mut arrived, mut read) = (Vec::new(), Vec::new());
    for holder in &mut holders {
        let report = holder.report().await?;
        let numbers = |key: &str| -> Vec<f64> {
            report[key]
                .as_array()
                .map(|values| values.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        arrived.extend(numbers("notify_ms"));
        read.extend(numbers("read_ms"));
    }
    let daemon_cpu_ms: f64 = pids
        .iter()
        .zip(&daemon_cpu)
        .filter_map(|(pid, then)| Some(cpu_ms(*pid)? - (*then)?))
        .sum();
    for mut holder in holders {
        let _ = holder.child.kill().await;
    }
    drop(daemons);
    let mut result = figures(connections, (before, after), arrived, read)?;
    result["replicas"] = json!(replicas);
    result["daemon_cpu_ms"] = json!(daemon_cpu_ms);
    Ok(result)
}

/// A child load generator holding one replica's sessions.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Holder {
    async fn start(daemon: &Daemon, token: &str, connections: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--scenario", "hold", "--url", &daemon.url])
            .args(["--connections", &connections.to_string()])
            .env("LOADGEN_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn line(&mut self) -> anyhow::Result<Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .ok_or_else(|| anyhow::anyhow!("a holder ended early"))?;
        Ok(serde_json::from_str(&line)?)
    }

    async fn ready(&mut self) -> anyhow::Result<()> {
        let line = self.line().await?;
        anyhow::ensure!(line["ready"].is_u64(), "a holder failed: {line}");
        Ok(())
    }

    async fn report(&mut self) -> anyhow::Result<Value> {
        self.line().await
    }
}

/// `--scenario hold` (run by `fanout --replicas`): opens `connections`
/// sessions on `url` with the token in `LOADGEN_TOKEN`, says it is ready,
/// takes the send's time (nanoseconds since the epoch) from standard
/// input, and prints each session's notification times after it.
pub async fn hold(url: &str, connections: usize) -> anyhow::Result<Value> {
    let token = std::env::var("LOADGEN_TOKEN")?;
    let address = url.trim_start_matches("http://");
    let sessions = open_sessions(address, &token, connections).await?;
    let readers = spawn_readers(sessions, Duration::from_secs(60));
    println!("{}", json!({ "ready": connections }));
    // The send's time: read on a blocking thread (tokio's standard input
    // is not built in).
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    let nanos: u64 = line.trim().parse()?;
    let sent_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let (arrived, read, open) = gather(readers, sent_at).await;
    // The sessions stay open until the parent ends this process: closed
    // now, their teardown would load the daemons while other holders'
    // sessions are still being measured.
    std::mem::forget(open);
    Ok(json!({ "notify_ms": arrived, "read_ms": read }))
}
