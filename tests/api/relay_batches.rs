//! Which outbox rows a relay transaction carries: an open transaction keeps
//! its rows and its id until it is answered, a new one takes only rows no
//! open one holds, and one whose rows all bounced is forgotten. And a
//! queue of many transactions drains with several of them out at once.

use std::time::Duration;

use homing::storage::mail::outbox::{self, Batch};
use serde_json::json;

use crate::federation::wait_for_items;
use crate::helpers::{message_to, spawn_app, spawn_app_with, TestApp, TestUser};
use crate::mailbox::purge_at;

/// Nothing listens here; the test holds the destination's lease, so the
/// daemon's own relay never tries it.
const DESTINATION: &str = "127.0.0.1:1";

/// Queues `count` messages for `like`'s alias at `destination`; their ids,
/// in order.
async fn queue_to(
    app: &TestApp,
    destination: &str,
    like: &TestUser,
    token: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let mut message = message_to(app, &[(like, &[0])], b"queued", "all");
        message["recipients"][0]["address"] = json!(format!("{}@{destination}", like.alias));
        let response = app
            .post_json("/api/v1/dms/send", &message, Some(token))
            .await;
        assert_eq!(response.status(), 202);
        ids.push(message["message_id"].as_str().unwrap().to_string());
    }
    ids
}

async fn queue(app: &TestApp, like: &TestUser, token: &str, count: usize) -> Vec<String> {
    queue_to(app, DESTINATION, like, token, count).await
}

/// Holds (or frees) `destination`'s relay lease on `app`, as another
/// replica would.
fn hold_lease(app: &TestApp, destination: &str, held: bool) {
    let mut conn = app.state.db.get().unwrap();
    if held {
        outbox::ensure_destination(&mut conn, destination).unwrap();
        let hour = Duration::from_secs(3_600);
        let now = homing::time::now_ms();
        assert!(outbox::claim(&mut conn, destination, "test", now, hour).unwrap());
    } else {
        outbox::release(&mut conn, destination, "test").unwrap();
    }
}

fn next(app: &TestApp, in_flight: &[&Batch], resend: bool) -> Option<Batch> {
    next_after(app, in_flight, resend, None)
}

fn next_after(
    app: &TestApp,
    in_flight: &[&Batch],
    resend: bool,
    after: Option<i64>,
) -> Option<Batch> {
    let mut conn = app.state.db.get().unwrap();
    let in_flight: Vec<String> = in_flight.iter().map(|b| b.txn_id.clone()).collect();
    let origin = &app.server_name;
    outbox::next_batch(&mut conn, origin, DESTINATION, &in_flight, resend, after).unwrap()
}

/// An app whose relay leaves `DESTINATION` alone, the user the queued
/// messages are sealed for, and the sender's token.
async fn held_off() -> (TestApp, TestUser, String) {
    let app = spawn_app().await;
    hold_lease(&app, DESTINATION, true);
    let alice = app.register("alice").await;
    let like = app.register("like").await;
    let token = alice.device(0).token.clone();
    (app, like, token)
}

fn message_ids(batch: &Batch) -> Vec<String> {
    batch.rows.iter().map(|row| row.2.clone()).collect()
}

#[tokio::test]
async fn open_transactions_keep_their_rows_and_ids_until_answered() {
    let (app, like, token) = held_off().await;

    let first = queue(&app, &like, &token, 3).await;
    let one = next(&app, &[], true).expect("a transaction");
    assert!(!one.resent);
    assert_eq!(message_ids(&one), first);

    let second = queue(&app, &like, &token, 2).await;
    let two = next(&app, &[&one], false).expect("a second transaction");
    assert_ne!(two.txn_id, one.txn_id);
    assert_eq!(
        message_ids(&two),
        second,
        "only rows no open transaction holds"
    );
    assert!(next(&app, &[&one, &two], false).is_none());

    // A new attempt (the first never heard back) sends the open one again,
    // under its id, and a new transaction only after it.
    let again = next(&app, &[&two], true).expect("the open transaction again");
    assert!(again.resent);
    assert_eq!(again.txn_id, one.txn_id);
    assert_eq!(message_ids(&again), first);
    assert_eq!(app.count("outbox_txns"), 2);

    // Past their expiry the messages bounce; open transactions left without
    // rows are forgotten instead of being sent empty.
    purge_at(&app, homing::time::now_ms() + 400 * 24 * 3_600 * 1_000);
    assert_eq!(app.count("outbox"), 0);
    assert!(next(&app, &[], true).is_none());
    assert_eq!(app.count("outbox_txns"), 0);
}

/// A new transaction read past a given row leaves the rows up to it to a
/// later read from the start.
#[tokio::test]
async fn a_transaction_read_past_a_row_takes_only_the_rows_after_it() {
    let (app, like, token) = held_off().await;
    let queued = queue(&app, &like, &token, 3).await;

    let all = next(&app, &[], false).expect("a transaction");
    assert_eq!(message_ids(&all), queued);
    // Forget it, as if it had never been made, and read past its first row.
    {
        use diesel::prelude::*;
        use homing::storage::schema::outbox_txns;
        let mut conn = app.state.db.get().unwrap();
        let forgotten = homing::with_backend!(&mut *conn, c => diesel::delete(
            outbox_txns::table.find(&all.txn_id)
        )
        .execute(c))
        .unwrap();
        assert_eq!(forgotten, 1);
    }
    let first_row = all.rows[0].0;
    let later = next_after(&app, &[], false, Some(first_row)).expect("the rows after");
    assert_eq!(message_ids(&later), queued[1..]);
    let from_start = next_after(&app, &[&later], false, None).expect("the first row");
    assert_eq!(message_ids(&from_start), queued[..1]);
}

/// Ten transactions' worth of mail queued while another replica held the
/// lease: once it is free the relay sends them several at a time, and
/// recording one answer never waits on reading the next batch (or the
/// other way round) until everything is at the remote.
#[tokio::test]
async fn a_long_queue_drains_with_several_transactions_out_at_once() {
    let unlimited = vec![("HOMING__RATE_LIMITS__SEND_PER_DEVICE", "1000000/s")];
    let a = spawn_app_with(unlimited).await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let token = alice.device(0).token.clone();
    hold_lease(&a, &b.server_name, true);
    let count = 10 * homing::federation::wire::MAX_TXN_MESSAGES;
    let senders = (0..10).map(|_| queue_to(&a, &b.server_name, &bob, &token, count / 10));
    futures_util::future::join_all(senders).await;
    assert_eq!(a.count("outbox"), count as i64);

    hold_lease(&a, &b.server_name, false);
    // One more send wakes the relay for the destination.
    queue_to(&a, &b.server_name, &bob, &token, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while a.count("outbox") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} messages still queued",
            a.count("outbox"),
            count + 1
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(a.count("outbox_txns"), 0);
    assert_eq!(b.count("messages"), count as i64 + 1);
    wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(1)).await;
}
