//! Crash safety: a stream of sends while the daemon is killed with SIGKILL
//! at random moments and restarted. Every message that got a 202 must be
//! delivered after the restarts, exactly once, and nothing half-written may
//! be visible. The counts are written to `target/crash-report-*.json`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homing::crypto::b64;
use homing::crypto::identity::DeviceId;
use homing_client::api::HomeServer;
use homing_client::keys::{AccountKeys, DeviceKeys};
use rand::Rng;
use serde_json::{json, Value};

use crate::daemon::{free_port, start, Daemon};
use crate::helpers::TestDatabase;

const CYCLES: usize = 12;
const SENDERS: usize = 4;

fn body_for(id: &str) -> String {
    b64(format!("sealed:{id}:{}", "x".repeat(200)).as_bytes())
}

async fn person(url: &str, server: &str, alias: &str) -> (String, DeviceKeys) {
    let account = AccountKeys::generate();
    let device = DeviceKeys::generate(DeviceId::parse("d1").unwrap());
    let plain = HomeServer::new(url);
    plain
        .register(&account.registration(alias, server, &device, None).unwrap())
        .await
        .unwrap();
    let (token, _) = plain
        .sign_in(server, &account.public(), &device)
        .await
        .unwrap();
    (token, device)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(dir.path()).await;
    let port = free_port();
    let name = format!("127.0.0.1:{port}");
    let env = [
        ("HOMING__SERVER__BIND", name.clone()),
        ("HOMING__SERVER__NAME", name.clone()),
        ("HOMING__SERVER__DATA_DIR", dir.path().display().to_string()),
        ("HOMING__DATABASE__URL", database.url.clone()),
        ("HOMING__RATE_LIMITS__SEND_PER_DEVICE", "1000000/s".into()),
        // One sender fills bob's mailbox here, beyond one sender's share.
        ("HOMING__LIMITS__MAX_PENDING_SHARE_PER_ORIGIN", "1".into()),
        ("HOMING__LOG__FILTER", "error".into()),
    ];
    let url = format!("http://{name}");
    let mut daemon: Daemon = start(&env, port).await;
    let (alice_token, _) = person(&url, &name, "alice").await;
    let (bob_token, bob_device) = person(&url, &name, "bob").await;

    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut attempted = 0usize;
    for _ in 0..CYCLES {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut senders = Vec::new();
        for _ in 0..SENDERS {
            let (url, token, name) = (url.clone(), alice_token.clone(), name.clone());
            let (acked, stop) = (acknowledged.clone(), stop.clone());
            let device_id = bob_device.device_id.to_string();
            senders.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut tried = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = b64(&rand::random::<[u8; 18]>());
                    let request = json!({
                        "message_id": id,
                        "body": body_for(&id),
                        "recipients": [{"address": format!("bob@{name}"),
                                        "devices": [{"device_id": device_id, "key_wrap": b64(&[7u8; 80])}]}],
                    });
                    tried += 1;
                    let sent = http
                        .post(format!("{url}/api/v1/dms/send"))
                        .bearer_auth(&token)
                        .json(&request)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 202 => acked.lock().unwrap().push(id),
                        Ok(response) => panic!("unexpected answer {}", response.status()),
                        Err(_) => break,
                    }
                }
                tried
            }));
        }
        let delay = rand::thread_rng().gen_range(30..300);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.child.kill().unwrap();
        daemon.child.wait().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for sender in senders {
            attempted += sender.await.unwrap();
        }
        daemon = start(&env, port).await;
    }

    // Everything bob's device can sync, after all the kills.
    let bob = HomeServer::new(&url).with_token(&bob_token);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cursor = 0;
    loop {
        let page = bob.sync(cursor, 500).await.unwrap();
        for item in &page.items {
            // A stored message is whole: its body is the one sent.
            assert_eq!(
                item.body,
                body_for(&item.message_id),
                "half-written message {}",
                item.message_id
            );
            *seen.entry(item.message_id.clone()).or_default() += 1;
        }
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let report: Value = json!({
        "backend": if database.is_postgres() { "postgres" } else { "sqlite" },
        "kills": CYCLES,
        "sent": attempted,
        "acknowledged": acknowledged.len(),
        "delivered": seen.len(),
        "duplicates": duplicates,
        "lost": lost.len(),
    });
    let report_path = format!(
        "{}/target/crash-report-{}.json",
        env!("CARGO_MANIFEST_DIR"),
        report["backend"].as_str().unwrap()
    );
    let _ = std::fs::write(&report_path, report.to_string());
    eprintln!("crash test: {report}");
    assert!(
        acknowledged.len() >= 100,
        "too few messages to mean anything: {report}"
    );
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {lost:?} ({report})"
    );
    assert_eq!(duplicates, 0, "{report}");
    drop(daemon);
}
