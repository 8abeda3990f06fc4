//! The measurements. Each returns a JSON object with its figures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use homing::crypto::b64;
use homing_client::api::HomeServer;
use serde_json::{json, Value};

use crate::daemon::{start, user, User};
use crate::http1::Connection;

const SEND_PATH: &str = "/api/v1/dms/send";

pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    (samples[index] * 1000.0).round() / 1000.0
}

/// Message ids as Homing's client makes them (time-ordered), unless
/// `LOADGEN_RANDOM_IDS=1` asks for random ones, as another client may send.
fn random_ids() -> bool {
    std::env::var("LOADGEN_RANDOM_IDS").is_ok_and(|v| v == "1")
}

/// Send requests to every device of one user, each with a fresh random
/// 1 KiB body. Their recipients part is the same in every
/// request, so it is serialised once; the rest is written around it (ids
/// and base64 need no JSON escapes), which cost the load generator a
/// tenth of what serialising each request whole did.
pub struct Outgoing {
    recipients: String,
}

impl Outgoing {
    pub fn to(to: &User) -> Self {
        #[derive(serde::Serialize)]
        struct Device<'a> {
            device_id: &'a str,
            key_wrap: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Recipient<'a> {
            address: &'a str,
            devices: Vec<Device<'a>>,
        }
        let key_wrap = b64(&[9u8; 80]);
        let recipients = [Recipient {
            address: &to.address,
            devices: to
                .device_ids
                .iter()
                .map(|device_id| Device {
                    device_id,
                    key_wrap: &key_wrap,
                })
                .collect(),
        }];
        Self {
            recipients: serde_json::to_string(&recipients).unwrap_or_default(),
        }
    }

    /// A new message with its own id and random body: (id, JSON request).
    pub fn message(&self) -> (String, Vec<u8>) {
        let id = if random_ids() {
            b64(&rand::random::<[u8; 18]>())
        } else {
            homing_client::new_message_id()
        };
        // One call fills the body: a draw per byte cost the load generator
        // more CPU than the rest of the request did.
        let mut body = [0u8; 1024];
        rand::Rng::fill(&mut rand::thread_rng(), &mut body[..]);
        let json = format!(
            r#"{{"message_id":"{id}","body":"{}","recipients":{}}}"#,
            b64(&body),
            self.recipients
        );
        (id, json.into_bytes())
    }
}

/// A JSON send request of `body` to `url`'s send endpoint.
pub fn post_send(
    http: &reqwest::Client,
    send_url: &str,
    token: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    http.post(send_url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
}

/// Sends from `concurrency` tasks, each on its own keep-alive connection,
/// for `duration`; returns (accepted, latencies in ms, errors).
pub async fn blast(
    url: &str,
    token: &str,
    to: &User,
    duration: Duration,
    concurrency: usize,
) -> (u64, Vec<f64>, u64) {
    let deadline = Instant::now() + duration;
    let outgoing = Arc::new(Outgoing::to(to));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (outgoing, token) = (outgoing.clone(), token.to_string());
            let mut connection = Connection::new(url);
            tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let (_, request) = outgoing.message();
                    let started = Instant::now();
                    match connection.post_json(SEND_PATH, &token, &request).await {
                        Ok(202) => {
                            ok += 1;
                            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (ok, latencies, errors)
            })
        })
        .collect();
    let (mut ok, mut latencies, mut errors) = (0, Vec::new(), 0);
    for task in tasks {
        if let Ok((o, l, e)) = task.await {
            ok += o;
            errors += e;
            latencies.extend(l);
        }
    }
    (ok, latencies, errors)
}

pub async fn send(
    postgres: Option<&str>,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let bob = user(&daemon, "bob", 2).await?;
    let started = Instant::now();
    let (accepted, mut latencies, errors) =
        blast(&daemon.url, &alice.tokens[0], &bob, duration, concurrency).await;
    anyhow::ensure!(accepted > 0, "no send was accepted ({errors} failed)");
    let elapsed = started.elapsed().as_secs_f64();
    let writes = write_timings(&daemon.url).await;
    Ok(json!({
        "send_per_s": (accepted as f64 / elapsed).round(),
        "writes": writes,
        "send_p50_ms": percentile(&mut latencies, 0.50),
        "send_p99_ms": percentile(&mut latencies, 0.99),
        "accepted": accepted,
        "errors": errors,
        "concurrency": concurrency,
        "seconds": elapsed,
    }))
}

pub async fn e2e(postgres: Option<&str>, duration: Duration, rate: u64) -> anyhow::Result<Value> {
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let bob = user(&daemon, "bob", 1).await?;
    let bob_server = HomeServer::new(&daemon.url).with_token(&bob.tokens[0]);
    let mut socket = bob_server.gateway(0).await?;
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let notify_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let receiver = {
        let (sent_at, notify_ms) = (sent_at.clone(), notify_ms.clone());
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
                    continue;
                };
                let event: Value = serde_json::from_str(&text).unwrap_or_default();
                let Some(id) = event["message"]["message_id"].as_str() else {
                    continue;
                };
                if let Some(at) = sent_at.lock().map(|mut m| m.remove(id)).ok().flatten() {
                    if let Ok(mut samples) = notify_ms.lock() {
                        samples.push(at.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        })
    };
    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let deadline = Instant::now() + duration;
    let mut sends = Vec::new();
    let mut sync_ms = Vec::new();
    let mut count = 0u64;
    let to_bob = Outgoing::to(&bob);
    while Instant::now() < deadline {
        ticker.tick().await;
        let (id, request) = to_bob.message();
        sent_at
            .lock()
            .map(|mut m| m.insert(id, Instant::now()))
            .ok();
        let (http, url, token) = (http.clone(), daemon.url.clone(), alice.tokens[0].clone());
        sends.push(tokio::spawn(async move {
            let started = Instant::now();
            let answer = post_send(&http, &format!("{url}/api/v1/dms/send"), &token, request)
                .send()
                .await;
            answer
                .ok()
                .filter(|response| response.status().is_success())
                .map(|_| started.elapsed().as_secs_f64() * 1000.0)
        }));
        count += 1;
        // Every 100th message, time a full sync as well.
        if count.is_multiple_of(100) {
            let started = Instant::now();
            if bob_server.sync(0, 100).await.is_ok() {
                sync_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let mut send_ms = Vec::new();
    for send in sends {
        if let Ok(Some(ms)) = send.await {
            send_ms.push(ms);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.abort();
    let mut samples = notify_ms.lock().map(|s| s.clone()).unwrap_or_default();
    let received = samples.len();
    let writes = write_timings(&daemon.url).await;
    Ok(json!({
        "rate": rate,
        "writes": writes,
        "sent": count,
        "notified": received,
        "e2e_p50_ms": percentile(&mut samples, 0.50),
        "e2e_p99_ms": percentile(&mut samples, 0.99),
        "e2e_max_ms": percentile(&mut samples, 1.0),
        "send_p50_ms": percentile(&mut send_ms, 0.50),
        "send_p99_ms": percentile(&mut send_ms, 0.99),
        "sync_p50_ms": percentile(&mut sync_ms, 0.50),
        "sync_p99_ms": percentile(&mut sync_ms, 0.99),
    }))
}

/// One of the daemon's histograms, as the upper bounds (ms) of the buckets
/// that hold its median, its 99th percentile and its largest sample, and
/// the whole bucket list: where a slow send's time went.
async fn histogram_ms(url: &str, name: &str) -> Value {
    let Ok(response) = reqwest::get(format!("{url}/metrics")).await else {
        return Value::Null;
    };
    let text = response.text().await.unwrap_or_default();
    histogram_summary(&text, name)
}

fn histogram_summary(text: &str, name: &str) -> Value {
    let prefix = format!("{name}_bucket{{le=\"");
    // Cumulative counts by upper bound, in the order the daemon lists them.
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |&(_, count)| count);
    let bound = |quantile: f64| {
        buckets
            .iter()
            .find(|&&(_, count)| total > 0.0 && count >= (quantile * total).ceil())
            .map(|&(le, _)| bound_ms(le))
    };
    let mut previous = 0.0;
    let counts: Vec<Value> = buckets
        .iter()
        .filter_map(|&(le, count)| {
            let here = count - previous;
            previous = count;
            (here > 0.0).then(|| json!([bound_ms(le), here]))
        })
        .collect();
    json!({
        "count": total,
        "p50_le_ms": bound(0.50),
        "p99_le_ms": bound(0.99),
        "max_le_ms": bound(1.0),
        "buckets_le_ms_count": counts,
    })
}

/// A bucket's upper bound in milliseconds, to the microsecond.
fn bound_ms(le_seconds: f64) -> Value {
    if le_seconds.is_finite() {
        json!((le_seconds * 1e6).round() / 1e3)
    } else {
        json!("inf")
    }
}

/// The writers' histograms: time in the queue, time to commit.
pub async fn write_timings(url: &str) -> Value {
    json!({
        "queue_wait": histogram_ms(url, "homing_write_queue_wait_seconds").await,
        "commit": histogram_ms(url, "homing_write_commit_seconds").await,
    })
}

async fn metric(url: &str, name: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("{url}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub async fn federation(
    postgres: Option<&str>,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Value> {
    let a = start(postgres, &[]).await?;
    let b = start(postgres, &[]).await?;
    let alice = user(&a, "alice", 1).await?;
    let bob = user(&b, "bob", 2).await?;
    let started = Instant::now();
    let (accepted, mut latencies, errors) =
        blast(&a.url, &alice.tokens[0], &bob, duration, concurrency).await;
    anyhow::ensure!(accepted > 0, "no send was accepted ({errors} failed)");
    // Wait until B holds everything A accepted.
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(&b.url, "homing_inbound_messages_total").await < accepted as f64 {
        anyhow::ensure!(Instant::now() < deadline, "B never received everything");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "fed_per_s": (accepted as f64 / elapsed).round(),
        "accepted": accepted,
        "errors": errors,
        "seconds_to_custody": elapsed,
        "send_p50_ms": percentile(&mut latencies, 0.50),
        "send_p99_ms": percentile(&mut latencies, 0.99),
    }))
}

pub async fn backlog(postgres: Option<&str>, sizes: &[u64]) -> anyhow::Result<Value> {
    let daemon = start(postgres, &[]).await?;
    let alice = user(&daemon, "alice", 1).await?;
    let bob = user(&daemon, "bob", 1).await?;
    let carol = user(&daemon, "carol", 1).await?;
    let http = reqwest::Client::new();
    let send_url = format!("{}/api/v1/dms/send", daemon.url);
    // Bob has a few messages of his own.
    let to_bob = Outgoing::to(&bob);
    for _ in 0..10 {
        let (_, request) = to_bob.message();
        post_send(&http, &send_url, &alice.tokens[0], request)
            .send()
            .await?;
    }
    let bob_server = HomeServer::new(&daemon.url).with_token(&bob.tokens[0]);
    let mut results = Vec::new();
    let mut filled = 0u64;
    for &size in sizes {
        crate::daemon::fill_backlog(&daemon, postgres, &carol, size - filled.min(size)).await?;
        filled = size.max(filled);
        let mut samples = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            let page = bob_server.sync(0, 100).await?;
            anyhow::ensure!(
                page.items.len() == 10,
                "bob should see exactly his own 10 messages"
            );
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        results.push(json!({
            "pending_for_others": size,
            "sync_p50_ms": percentile(&mut samples, 0.50),
            "sync_p99_ms": percentile(&mut samples, 0.99),
        }));
    }
    let first = results
        .first()
        .and_then(|r| r["sync_p50_ms"].as_f64())
        .unwrap_or(0.0);
    let last = results
        .last()
        .and_then(|r| r["sync_p50_ms"].as_f64())
        .unwrap_or(0.0);
    Ok(json!({
        "results": results,
        "ratio_largest_to_smallest": if first > 0.0 { (last / first * 100.0).round() / 100.0 } else { 0.0 },
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn histogram_summary_names_the_buckets_of_the_quantiles() {
        let text = "\
# TYPE homing_write_commit_seconds histogram
homing_write_commit_seconds_sum 1.5
homing_write_commit_seconds_count 100
homing_write_commit_seconds_bucket{le=\"0.001\"} 90
homing_write_commit_seconds_bucket{le=\"0.002\"} 99
homing_write_commit_seconds_bucket{le=\"0.004\"} 99
homing_write_commit_seconds_bucket{le=\"+Inf\"} 100
";
        let summary = super::histogram_summary(text, "homing_write_commit_seconds");
        assert_eq!(summary["count"], json!(100.0));
        assert_eq!(summary["p50_le_ms"], json!(1.0));
        assert_eq!(summary["p99_le_ms"], json!(2.0));
        assert_eq!(summary["max_le_ms"], json!("inf"));
        assert_eq!(
            summary["buckets_le_ms_count"],
            json!([[1.0, 90.0], [2.0, 9.0], ["inf", 1.0]])
        );
    }
}
