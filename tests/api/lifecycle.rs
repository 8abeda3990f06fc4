//! A stopped daemon leaves nothing of itself running: background loops,
//! relay attempts, the group commit's writers, the cluster publisher and
//! listener all end with it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::helpers::spawn_app_with;
use crate::tarpits::{tarpits, to_server};

#[tokio::test]
async fn stopping_ends_every_task_even_a_relay_attempt_in_flight() {
    let (names, accepted) = tarpits(1).await;
    // Long enough that the attempt would outlive the test if left running.
    let mut app = spawn_app_with(vec![("HOMING__FEDERATION__REQUEST_TIMEOUT", "120s")]).await;
    let alice = app.register("alice").await;
    let message = to_server(&app, &alice, &names[0]);
    let sent = app
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the relay never tried the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let tasks = app.state.tasks.clone();
    let write_queue = app.state.write_queue.clone();
    // Purge, revocation watch, relay loop, the attempt and the writer (the
    // greeting ends once peers are greeted); on PostgreSQL also the
    // cluster publisher and its listener thread.
    assert!(tasks.running() >= 5, "{} running", tasks.running());
    assert!(!tasks.stopping());

    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert!(tasks.stopping());
    assert_eq!(tasks.running(), 0, "tasks or threads outlived the daemon");
    // No writer is left to take a write.
    let late = write_queue
        .run(|_, _| Ok::<_, homing::storage::StorageError>(()))
        .await;
    assert!(
        matches!(late, Err(homing::storage::StorageError::Unavailable(_))),
        "{late:?}"
    );
}
