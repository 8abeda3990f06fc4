//! Several replicas of one server on one PostgreSQL database behave as one
//! server. (On SQLite there is one replica per database file; these tests
//! only run against PostgreSQL.)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::faults::{Fault, Proxy};
use crate::helpers::{message_to, spawn_app_with, spawn_replica, TestApp};

fn postgres(app: &TestApp) -> bool {
    if !app.database.is_postgres() {
        eprintln!("replica tests need PostgreSQL (HOMING_TEST_DATABASE_URL); checked on that run");
    }
    app.database.is_postgres()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_through_one_replica_notifies_a_device_on_another() {
    let a = spawn_app_with(vec![]).await;
    if !postgres(&a) {
        return;
    }
    let b = spawn_replica(&a, vec![]).await;
    let alice = a.register("alice").await;
    let bob = a.register("bob").await;
    // Bob's device is connected to replica B.
    let url = format!(
        "ws://{}/api/v1/gateway",
        b.address.trim_start_matches("http://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", bob.device(0).token).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = socket.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("HELLO"));

    let message = message_to(&a, &[(&bob, &[0])], b"cross-replica", "all");
    let sent = Instant::now();
    assert_eq!(
        a.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await
            .status(),
        202
    );
    let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("no DM_NOTIFY from the other replica")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(event["type"], "DM_NOTIFY");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    // And the device syncs it from the replica it is connected to.
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"][0]["message_id"], message["message_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_does_not_strand_a_destinations_queue() {
    // X has two replicas; Y sits behind a proxy that stalls at first.
    let proxy = Proxy::start().await;
    let y = spawn_app_with(vec![("HOMING__SERVER__NAME", proxy.address.as_str())]).await;
    *proxy.upstream.lock().unwrap() = y.address.trim_start_matches("http://").to_string();
    // X's name points at a pass-through proxy standing in for the load
    // balancer in front of its replicas.
    let balancer = Proxy::start().await;
    let lease = vec![
        ("HOMING__FEDERATION__RELAY_LEASE", "1s"),
        ("HOMING__SERVER__NAME", balancer.address.as_str()),
    ];
    let mut x1 = spawn_app_with(lease.clone()).await;
    if !postgres(&x1) {
        return;
    }
    *balancer.upstream.lock().unwrap() = x1.address.trim_start_matches("http://").to_string();
    let mut x2 = spawn_replica(&x1, vec![("HOMING__FEDERATION__RELAY_LEASE", "1s")]).await;
    let alice = x1.register("alice").await;
    let bob = y.register("bob").await;
    proxy.set(Fault::Stall);
    let mut message = message_to(&x1, &[(&bob, &[0])], b"held", "all");
    message["recipients"][0]["address"] = json!(format!("bob@{}", y.server_name));
    assert_eq!(
        x1.post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
            .await
            .status(),
        202
    );

    // Wait until one replica holds the lease (it is stuck on the stall).
    let owner = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            use diesel::prelude::*;
            use homing::storage::schema::destinations;
            let mut conn = x1.state.db.get().unwrap();
            let owner: Option<Option<String>> =
                homing::with_backend!(&mut *conn, c => destinations::table
                .select(destinations::lease_owner)
                .first(c)
                .optional())
                .unwrap();
            if let Some(Some(owner)) = owner {
                break owner;
            }
            assert!(Instant::now() < deadline, "no replica took the lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Kill the lease holder, then end the fault.
    let survivor = if owner == x1.state.replica_id {
        x1.stop().await;
        *balancer.upstream.lock().unwrap() = x2.address.trim_start_matches("http://").to_string();
        &x2
    } else {
        x2.stop().await;
        &x1
    };
    proxy.set(Fault::Pass);
    let deadline = Instant::now() + Duration::from_secs(20);
    while survivor.count("outbox") > 0 {
        survivor.state.relay.wake();
        if Instant::now() > deadline {
            let mut conn = survivor.state.db.get().unwrap();
            let rows = homing::admin::federation::destinations(&mut conn).unwrap();
            panic!(
                "the survivor never took over the queue: {rows:?}, owner was {owner}, survivor {}",
                survivor.state.replica_id
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(y.count("messages"), 1);
    assert_eq!(y.count("deliveries"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_on_one_replica_ends_the_token_and_its_session_on_another() {
    let a = spawn_app_with(vec![]).await;
    if !postgres(&a) {
        return;
    }
    let b = spawn_replica(&a, vec![]).await;
    let bob = a.register("bob").await;
    let token = bob.device(0).token.clone();
    // Replica B checks the token (and remembers it) and holds a session.
    assert_eq!(b.get_auth("/api/v1/account", &token).await.status(), 200);
    let url = format!(
        "ws://{}/api/v1/gateway",
        b.address.trim_start_matches("http://")
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = socket.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("HELLO"));

    assert_eq!(a.sign_out(&token).await, 204);

    let close = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return frame.map(|f| f.reason.to_string())
                }
                Some(Ok(_)) => continue,
                other => panic!("the session ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("replica B kept the signed-out session open");
    assert_eq!(close.as_deref(), Some("the token was revoked"));
    assert_eq!(b.get_auth("/api/v1/account", &token).await.status(), 401);
}
