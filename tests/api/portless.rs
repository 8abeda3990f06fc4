//! Servers whose names carry no port, reached on Homing's default port 443
//! as people deploy them: 127.0.0.2 and 127.0.0.3 bound on :443 (the suite
//! runs as root; without root these tests say so and skip). The servers
//! speak plain HTTP here; TLS on 443 behind the shipped proxy is the
//! `deployed` test's.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::federation::{remote_message, status_of, wait_for_items};
use crate::helpers::{spawn_app_at, TestApp};

/// Two servers named by bare IP literals, or `None` when port 443 of
/// those addresses cannot be bound.
async fn portless_pair(a: &str, b: &str) -> Option<(TestApp, TestApp)> {
    let a = spawn_app_at(&format!("{a}:443"), Vec::new()).await?;
    let b = spawn_app_at(&format!("{b}:443"), Vec::new()).await?;
    Some((a, b))
}

async fn wait_until_relayed(app: &TestApp, token: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(app, token, id).await != "relayed" {
        assert!(
            Instant::now() < deadline,
            "{} never recorded custody of {id}",
            app.server_name
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn servers_named_without_a_port_federate_both_ways_on_port_443() {
    let Some((a, b)) = portless_pair("127.0.0.2", "127.0.0.3").await else {
        return;
    };
    assert_eq!(a.server_name, "127.0.0.2");
    assert_eq!(b.server_name, "127.0.0.3");
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;

    let to_bob = remote_message(&a, &b, &bob, b"to bob on a portless name");
    let sent = a
        .post_json("/api/v1/dms/send", &to_bob, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let page = wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
    assert_eq!(page["items"][0]["message_id"], to_bob["message_id"]);
    assert_eq!(page["items"][0]["origin"], "127.0.0.2");
    let id = to_bob["message_id"].as_str().unwrap();
    wait_until_relayed(&a, &alice.device(0).token, id).await;

    let to_alice = remote_message(&b, &a, &alice, b"and back");
    let sent = b
        .post_json("/api/v1/dms/send", &to_alice, Some(&bob.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let page = wait_for_items(&a, &alice.device(0).token, 1, Duration::from_secs(10)).await;
    assert_eq!(page["items"][0]["message_id"], to_alice["message_id"]);
    let id = to_alice["message_id"].as_str().unwrap();
    wait_until_relayed(&b, &bob.device(0).token, id).await;

    // No attempt failed on the way: nothing was refused and retried.
    for app in [&a, &b] {
        let mut conn = app.state.db.get().unwrap();
        for destination in homing::admin::federation::destinations(&mut conn).unwrap() {
            assert_eq!(destination.failures, 0, "{destination:?}");
            assert_eq!(destination.last_error, None, "{destination:?}");
        }
    }
}

#[tokio::test]
async fn a_portless_server_answers_a_directory_lookup_from_another() {
    let Some((a, b)) = portless_pair("127.0.0.4", "127.0.0.5").await else {
        return;
    };
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let found: Value = a
        .get_auth("/api/v1/directory/bob@127.0.0.5", &alice.device(0).token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["account_key"], bob.account.public().to_string());
    assert_eq!(found["address"], "bob@127.0.0.5");
}
