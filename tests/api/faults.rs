//! Network faults between two servers: a small fault-injecting TCP proxy
//! sits in front of B. With each fault, A's messages reach B exactly once
//! and A's outbox drains once the fault ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{message_to, spawn_app_with, TestApp};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Close every connection at once.
    Drop,
    /// Accept and never answer.
    Stall,
    /// Forward the request, let B commit and answer, but never pass the
    /// answer on: "the remote committed, but its 200 never arrived".
    CutResponse,
    /// Forward after a delay.
    Delay(Duration),
}

pub struct Proxy {
    pub address: String,
    fault: Arc<Mutex<Fault>>,
    pub upstream: Arc<Mutex<String>>,
    /// Connections held open unanswered so far (`Stall`).
    stalled: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let upstream = Arc::new(Mutex::new(String::new()));
        let stalled = Arc::new(AtomicUsize::new(0));
        let (shared, target, counter) = (fault.clone(), upstream.clone(), stalled.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                let mode = *shared.lock().unwrap();
                let upstream = target.lock().unwrap().clone();
                match mode {
                    Fault::Drop => drop(client),
                    Fault::Stall => {
                        held.push(client);
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    Fault::Pass => {
                        tokio::spawn(forward(client, upstream, Duration::ZERO));
                    }
                    Fault::Delay(delay) => {
                        tokio::spawn(forward(client, upstream, delay));
                    }
                    Fault::CutResponse => {
                        tokio::spawn(cut_response(client, upstream));
                    }
                }
            }
        });
        Self {
            address,
            fault,
            upstream,
            stalled,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }
}

async fn forward(mut client: TcpStream, upstream: String, delay: Duration) {
    tokio::time::sleep(delay).await;
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Passes the request on; as soon as the answer starts (so B has
/// committed), hangs up on A without passing a byte of it.
async fn cut_response(client: TcpStream, upstream: String) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut first = [0u8; 1];
    let _ = server_read.read(&mut first).await;
    drop(client_write);
    let _ = server_read.read_to_end(&mut Vec::new()).await;
}

struct Pair {
    a: TestApp,
    b: TestApp,
    proxy: Proxy,
}

/// A and B, with B's server name pointing at the proxy in front of it.
async fn pair() -> Pair {
    pair_timing_out_after("1s").await
}

async fn pair_timing_out_after(request_timeout: &str) -> Pair {
    let a = spawn_app_with(vec![(
        "HOMING__FEDERATION__REQUEST_TIMEOUT",
        request_timeout,
    )])
    .await;
    let proxy = Proxy::start().await;
    let b = spawn_app_with(vec![("HOMING__SERVER__NAME", proxy.address.as_str())]).await;
    *proxy.upstream.lock().unwrap() = b.address.trim_start_matches("http://").to_string();
    Pair { a, b, proxy }
}

async fn run_fault(fault: Fault) {
    let Pair { a, b, proxy } = pair().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    proxy.set(fault);
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let mut message = message_to(&a, &[(&bob, &[0])], &[i; 64], "all");
        message["recipients"][0]["address"] = json!(format!("bob@{}", b.server_name));
        assert_eq!(
            a.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
                .await
                .status(),
            202
        );
        ids.push(message["message_id"].as_str().unwrap().to_string());
    }
    // Let the fault bite at least once: wait until A recorded a failure.
    if !matches!(fault, Fault::Delay(_) | Fault::Pass) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let destinations = {
                let mut conn = a.state.db.get().unwrap();
                homing::admin::federation::destinations(&mut conn).unwrap()
            };
            if destinations.iter().any(|d| d.failures > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "{fault:?} never made A fail");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            a.count("outbox") > 0,
            "{fault:?} should have kept the mail queued"
        );
    }
    if fault == Fault::CutResponse {
        // B commits mail whose answer never reaches A (A may also have
        // given up on a slow answer first, so wait for B's commit).
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.count("messages") == 0 {
            assert!(
                Instant::now() < deadline,
                "B never committed behind the cut"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(a.count("outbox") > 0, "A must still hold what B committed");
    }
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.count("outbox") > 0 {
        // The fault is over: retry now rather than after the back-off.
        {
            let mut conn = a.state.db.get().unwrap();
            homing::storage::mail::outbox::retry_now(&mut conn, &b.server_name).unwrap();
        }
        a.state.relay.wake();
        assert!(
            Instant::now() < deadline,
            "A's outbox never drained after {fault:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.count("messages"), 5, "exactly once after {fault:?}");
    assert_eq!(b.count("deliveries"), 5, "exactly once after {fault:?}");
    let page = b.sync(&bob.device(0).token).await;
    let mut got: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["message_id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_deliver_exactly_once_after_the_fault() {
    run_fault(Fault::Drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_deliver_exactly_once_after_the_fault() {
    run_fault(Fault::Stall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_200_after_the_remote_committed_is_not_stored_twice() {
    run_fault(Fault::CutResponse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_connections_still_deliver_exactly_once() {
    run_fault(Fault::Delay(Duration::from_millis(300))).await;
}

/// Makes A send what it holds for B now instead of after its back-off.
fn retry_now(a: &TestApp, b: &TestApp) {
    let mut conn = a.state.db.get().unwrap();
    homing::storage::mail::outbox::retry_now(&mut conn, &b.server_name).unwrap();
    a.state.relay.wake();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_goes_out_as_several_transactions_at_once_and_arrives_once() {
    let Pair { a, b, proxy } = pair_timing_out_after("3s").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    proxy.set(Fault::Stall);
    // More than two transactions' worth (100 messages each), queued while
    // B does not answer.
    let messages: Vec<_> = (0..250u16)
        .map(|i| {
            let mut message = message_to(&a, &[(&bob, &[0])], &i.to_be_bytes(), "all");
            message["recipients"][0]["address"] = json!(format!("bob@{}", b.server_name));
            message
        })
        .collect();
    let token = &alice.device(0).token;
    for chunk in messages.chunks(25) {
        let sent = futures_util::future::join_all(
            chunk
                .iter()
                .map(|m| a.post_json("/api/v1/dms/send", m, Some(token))),
        )
        .await;
        let statuses: Vec<u16> = sent.iter().map(|r| r.status().as_u16()).collect();
        assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    }
    // Whatever A has in flight now waits for its timeout; once the
    // destination is retried, the backlog leaves as several transactions
    // at once, long before one of them could time out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.count("outbox") > 0 && proxy.stalled.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "A never tried B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failed = || {
        let mut conn = a.state.db.get().unwrap();
        homing::admin::federation::destinations(&mut conn).unwrap()[0].failures
    };
    while failed() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled attempt never timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = proxy.stalled.load(Ordering::SeqCst);
    retry_now(&a, &b);
    let started = Instant::now();
    while proxy.stalled.load(Ordering::SeqCst) < before + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "A sent {} transactions at once, not 3",
            proxy.stalled.load(Ordering::SeqCst) - before
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.count("outbox") > 0 {
        retry_now(&a, &b);
        assert!(Instant::now() < deadline, "A's outbox never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.count("messages"), 250, "each message stored once");
    assert_eq!(b.count("deliveries"), 250, "each message delivered once");
}
