//! A local user cannot stall the relay for everyone else by queueing mail
//! for made-up servers that accept connections and never answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::federation::{remote_message, wait_for_items};
use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp, TestUser};

/// `count` servers on 127.0.0.1 that accept every connection and never
/// answer; the number of connections they accepted so far.
pub async fn tarpits(count: usize) -> (Vec<String>, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut names = Vec::new();
    for _ in 0..count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        names.push(listener.local_addr().unwrap().to_string());
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    (names, accepted)
}

/// A message from `user` on `app` to `ghost@server`.
pub fn to_server(app: &TestApp, user: &TestUser, server: &str) -> Value {
    let mut message = message_to(app, &[(user, &[0])], b"to a tarpit", "all");
    message["recipients"][0]["address"] = json!(format!("ghost@{server}"));
    message
}

#[tokio::test]
async fn tarpits_do_not_delay_mail_to_a_server_that_answers() {
    // Enough tarpits to take every relay worker of the build before.
    let (tarpit_names, accepted) = tarpits(70).await;
    let a = spawn_app_with(vec![
        (
            "HOMING__RATE_LIMITS__NEW_DESTINATIONS_PER_ACCOUNT",
            "1000/h",
        ),
        ("HOMING__FEDERATION__REQUEST_TIMEOUT", "30s"),
    ])
    .await;
    let b = spawn_app().await;
    let mallory = a.register("mallory").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    // b has answered a before: it is a peer that works.
    let first = remote_message(&a, &b, &bob, b"before");
    let sent = a
        .post_json("/api/v1/dms/send", &first, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;

    for server in &tarpit_names {
        let message = to_server(&a, &mallory, server);
        let sent = a
            .post_json("/api/v1/dms/send", &message, Some(&mallory.device(0).token))
            .await;
        assert_eq!(sent.status(), 202, "{server}");
    }
    // The relay is now holding connections to tarpits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) < 8 {
        assert!(
            Instant::now() < deadline,
            "the relay never tried the tarpits"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let second = remote_message(&a, &b, &bob, b"during the attack");
    let started = Instant::now();
    let sent = a
        .post_json("/api/v1/dms/send", &second, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    wait_for_items(&b, &bob.device(0).token, 2, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "mail to a working peer took {:?} behind the tarpits",
        started.elapsed()
    );
    // The tarpits hold at most a quarter of the relay's workers.
    assert!(accepted.load(Ordering::SeqCst) <= 16);
}

#[tokio::test]
async fn one_account_adds_a_bounded_number_of_new_destinations() {
    let (tarpit_names, _accepted) = tarpits(4).await;
    let a = spawn_app_with(vec![(
        "HOMING__RATE_LIMITS__NEW_DESTINATIONS_PER_ACCOUNT",
        "3/h",
    )])
    .await;
    let b = spawn_app().await;
    let mallory = a.register("mallory").await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    for server in &tarpit_names[..3] {
        let message = to_server(&a, &mallory, server);
        let sent = a
            .post_json("/api/v1/dms/send", &message, Some(&mallory.device(0).token))
            .await;
        assert_eq!(sent.status(), 202);
    }
    let fourth = to_server(&a, &mallory, &tarpit_names[3]);
    let refused = a
        .post_json("/api/v1/dms/send", &fourth, Some(&mallory.device(0).token))
        .await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("new destination"),
        "{body}"
    );
    assert_eq!(a.count("destinations"), 3);

    // Mail to a server that is already a destination costs nothing more.
    let again = to_server(&a, &mallory, &tarpit_names[0]);
    let sent = a
        .post_json("/api/v1/dms/send", &again, Some(&mallory.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    // Another account has its own budget.
    let honest = remote_message(&a, &b, &bob, b"hello bob");
    let sent = a
        .post_json("/api/v1/dms/send", &honest, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn messages_sent_at_once_to_one_new_server_pay_for_it_once() {
    let (tarpit_names, _accepted) = tarpits(1).await;
    let a = spawn_app_with(vec![(
        "HOMING__RATE_LIMITS__NEW_DESTINATIONS_PER_ACCOUNT",
        "2/h",
    )])
    .await;
    let alice = a.register("alice").await;
    // Ten sends race to the same server before any has committed its
    // destination row: one new destination, not ten.
    let message = to_server(&a, &alice, &tarpit_names[0]);
    let token = &alice.device(0).token;
    let app = &a;
    let copies: Vec<Value> = (0..10)
        .map(|_| {
            let mut copy = message.clone();
            copy["message_id"] = json!(crate::helpers::new_message_id());
            copy
        })
        .collect();
    let sent = futures_util::future::join_all(
        copies
            .iter()
            .map(|copy| app.post_json("/api/v1/dms/send", copy, Some(token))),
    )
    .await;
    let statuses: Vec<u16> = sent.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
    assert_eq!(a.count("destinations"), 1);
    // The budget still holds one more new server.
    let (others, _) = tarpits(2).await;
    let second = to_server(&a, &alice, &others[0]);
    let sent = a.post_json("/api/v1/dms/send", &second, Some(token)).await;
    assert_eq!(sent.status(), 202);
    let third = to_server(&a, &alice, &others[1]);
    let refused = a.post_json("/api/v1/dms/send", &third, Some(token)).await;
    assert_eq!(refused.status(), 429);
}
