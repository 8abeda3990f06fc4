//! Sends committed together: on PostgreSQL a group of sends is written by
//! one statement outside any explicit transaction, so these pin that a
//! group whose write fails leaves nothing behind and still answers each
//! send on its own.

use serde_json::Value;

use crate::helpers::{message_to, spawn_app};

#[tokio::test]
async fn a_group_whose_write_fails_stores_none_of_it_and_answers_each_send() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let carol = app.register("carol").await;
    let bob = app.register("bob").await;
    // Carol's message takes an id first; Alice then sends it again among
    // ten others, so the write of the group that carries it fails on the
    // taken id (which no check before the write can see).
    let taken = message_to(&app, &[(&bob, &[0])], b"carol", "all");
    let first = app
        .post_json("/api/v1/dms/send", &taken, Some(&carol.device(0).token))
        .await;
    assert_eq!(first.status(), 202);
    let mut burst: Vec<Value> = (0..10u8)
        .map(|i| message_to(&app, &[(&bob, &[0])], &[i], "all"))
        .collect();
    let mut again = message_to(&app, &[(&bob, &[0])], b"alice", "all");
    again["message_id"] = taken["message_id"].clone();
    burst.push(again);
    let token = alice.device(0).token.as_str();
    let answers = futures_util::future::join_all(
        burst
            .iter()
            .map(|message| app.post_json("/api/v1/dms/send", message, Some(token))),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    assert!(statuses[..10].iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(statuses[10], 409, "{statuses:?}");
    assert_eq!(app.count("messages"), 11);
    assert_eq!(app.count("deliveries"), 11);
    let page = app.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(11), "{page}");
}
