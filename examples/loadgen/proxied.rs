//! `proxied`: sends through the TLS proxy Homing ships (Debian's `caddy`
//! running `deploy/Caddyfile`, `tls internal`, on 127.0.0.1:443) against
//! the same sends straight to the daemon, both from one client library
//! (reqwest, as the `homing` client uses), with the CPU each process
//! spent per message: Homing's own share of the cost beside the proxy's
//! and the client's.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::daemon::{cpu_ms, start, user, User};
use crate::scenarios::{percentile, Outgoing};

pub async fn proxied(
    postgres: Option<&str>,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let bob = user(&daemon, "bob", 2).await?;
    let upstream = daemon.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir()?;
    let (mut caddy, root) = start_caddy(dir.path(), &upstream).await?;
    let direct = reqwest::Client::builder().build()?;
    let through = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve("a.homing.test", "127.0.0.1:443".parse()?)
        .build()?;
    let pids = Pids {
        daemon: daemon.child.id(),
        caddy: caddy.id().unwrap_or(0),
    };
    let token = &alice.tokens[0];
    let run = |phase| measure(phase, token, &bob, duration, concurrency, pids);
    let straight = run(Phase::flat_out(&direct, &daemon.url)).await?;
    let proxied = run(Phase::flat_out(&through, "https://a.homing.test")).await?;
    // Straight again, paced to what went through Caddy: the daemon's cost
    // per message depends on the rate (a group commit of fewer sends costs
    // more per send), so this is the fair comparison for its CPU.
    let paced = run(Phase {
        client: &direct,
        base: &daemon.url,
        rate: proxied["send_per_s"].as_f64(),
    })
    .await?;
    let _ = caddy.kill().await;
    let ratio = |key: &str| match (straight[key].as_f64(), proxied[key].as_f64()) {
        (Some(a), Some(b)) if a > 0.0 => json!((b / a * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    Ok(json!({
        "direct": straight,
        "through_caddy": proxied,
        "direct_at_caddys_rate": paced,
        "through_to_direct": {
            "send_per_s": ratio("send_per_s"),
            "send_p50_ms": ratio("send_p50_ms"),
            "send_p99_ms": ratio("send_p99_ms"),
        },
    }))
}

#[derive(Clone, Copy)]
struct Pids {
    daemon: u32,
    caddy: u32,
}

/// Caddy with the shipped Caddyfile in front of `upstream`, once it serves
/// TLS; and the root certificate of its internal CA.
async fn start_caddy(dir: &Path, upstream: &str) -> anyhow::Result<(Child, reqwest::Certificate)> {
    let caddyfile = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/Caddyfile");
    let log = std::fs::File::create(dir.join("caddy.log"))?;
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config", caddyfile])
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("HOMING_PROXY_BIND", "127.0.0.1")
        .env("HOMING_PROXY_ADMIN", "off")
        .env("HOMING_A_UPSTREAM", upstream)
        .env("HOMING_B_UPSTREAM", upstream)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start caddy (apt-get install caddy): {e}"))?;
    let root_path = dir.join("data/caddy/pki/authorities/local/root.crt");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(pem) = std::fs::read(&root_path) {
            let root = reqwest::Certificate::from_pem(&pem)?;
            let client = reqwest::Client::builder()
                .add_root_certificate(root.clone())
                .resolve("a.homing.test", "127.0.0.1:443".parse()?)
                .build()?;
            let url = "https://a.homing.test/.well-known/homing/server-info";
            if let Ok(response) = client.get(url).send().await {
                anyhow::ensure!(
                    response.status() == 200,
                    "server-info through Caddy: {}",
                    response.status()
                );
                return Ok((child, root));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Caddy did not serve TLS within a minute: {}",
            std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where a phase sends, and at what rate (messages per second, spread
/// over the senders) if not as fast as it can.
struct Phase<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    rate: Option<f64>,
}

impl<'a> Phase<'a> {
    fn flat_out(client: &'a reqwest::Client, base: &'a str) -> Self {
        Self {
            client,
            base,
            rate: None,
        }
    }
}

/// `concurrency` senders against the phase's server for `duration`; the
/// throughput, latencies, HTTP version and each process's CPU per message.
async fn measure(
    phase: Phase<'_>,
    token: &str,
    to: &User,
    duration: Duration,
    concurrency: usize,
    pids: Pids,
) -> anyhow::Result<Value> {
    let Phase { client, base, rate } = phase;
    let url = Arc::new(format!("{base}/api/v1/dms/send"));
    // Each sender's time between sends when paced, the senders staggered.
    let gap = rate
        .filter(|rate| *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(concurrency as f64 / rate));
    let outgoing = Arc::new(Outgoing::to(to));
    let before = (cpu_ms(pids.daemon), cpu_ms(pids.caddy), cpu_ms(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|sender| {
            let (client, url, outgoing, token) = (
                client.clone(),
                url.clone(),
                outgoing.clone(),
                token.to_string(),
            );
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies, mut version) =
                    (0u64, 0u64, Vec::new(), None);
                let mut next =
                    gap.map(|gap| started + gap.mul_f64(sender as f64 / concurrency as f64));
                while Instant::now() < deadline {
                    if let (Some(at), Some(gap)) = (next.as_mut(), gap) {
                        tokio::time::sleep_until((*at).into()).await;
                        *at += gap;
                    }
                    let (_, body) = outgoing.message();
                    let sent = Instant::now();
                    let answer = client
                        .post(url.as_str())
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status() == 202 => {
                            version = Some(format!("{:?}", response.version()));
                            let _ = response.bytes().await;
                            ok += 1;
                            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (ok, errors, latencies, version)
            })
        })
        .collect();
    let (mut ok, mut errors, mut latencies, mut version) = (0u64, 0u64, Vec::new(), None);
    for task in tasks {
        let (o, e, l, v) = task.await?;
        ok += o;
        errors += e;
        latencies.extend(l);
        version = version.or(v);
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        ok > 0,
        "no send was accepted through {base} ({errors} failed)"
    );
    let after = (cpu_ms(pids.daemon), cpu_ms(pids.caddy), cpu_ms(0));
    let per_message = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!(((b - a) * 1000.0 / ok as f64).round()),
        _ => Value::Null,
    };
    Ok(json!({
        "send_per_s": (ok as f64 / elapsed).round(),
        "send_p50_ms": percentile(&mut latencies, 0.50),
        "send_p99_ms": percentile(&mut latencies, 0.99),
        "errors": errors,
        "http_version": version,
        "cpu_us_per_message": {
            "homingd": per_message(before.0, after.0),
            "caddy": if base.starts_with("https") { per_message(before.1, after.1) } else { json!(0) },
            "client": per_message(before.2, after.2),
        },
    }))
}
