//! Recalling mail that already went to another server: the sender's
//! server asks the recipient's (`PUT /federation/v1/recall/{message_id}`,
//! signed), which removes what its users have not acknowledged and says
//! so; and what a server that is not the sender's can do with that
//! request (nothing).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::federation::{forge, remote_message, send_forged_answer, status_of, wait_for_items};
use crate::helpers::{spawn_app, TestApp, TestUser};

async fn recall(app: &TestApp, user: &TestUser, message_id: &str) -> Value {
    let response = app
        .http
        .delete(app.url(&format!("/api/v1/dms/{message_id}")))
        .bearer_auth(&user.device(0).token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn wait_for_state(app: &TestApp, user: &TestUser, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = status_of(app, &user.device(0).token, id).await;
        if now == state {
            return;
        }
        assert!(Instant::now() < deadline, "still {now}, never {state}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Alice on A sends to Bob on B and waits until B has it.
async fn relayed(a: &TestApp, b: &TestApp, alice: &TestUser, bob: &TestUser) -> String {
    let message = remote_message(a, b, bob, b"sent too soon");
    let sent = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let id = message["message_id"].as_str().unwrap().to_string();
    wait_for_items(b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
    wait_for_state(a, alice, &id, "relayed").await;
    id
}

#[tokio::test]
async fn a_relayed_message_leaves_the_remote_mailbox_that_has_not_read_it() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let id = relayed(&a, &b, &alice, &bob).await;

    let answer = recall(&a, &alice, &id).await;
    assert_eq!(answer["recipients"][0]["state"], "recalling");
    wait_for_state(&a, &alice, &id, "recalled").await;
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"], json!([]));
    assert_eq!((b.count("deliveries"), b.count("messages")), (0, 0));
    assert_eq!(a.count("outbound_recalls"), 0);
    // The sender's feed has both steps, in order. On PostgreSQL a read
    // sees changes once every older transaction on the database server
    // has ended (other tests' included), so it may take a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let states = loop {
        let feed: Value = a
            .get_auth("/api/v1/dms/status", &alice.device(0).token)
            .await
            .json()
            .await
            .unwrap();
        let states: Vec<String> = feed["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect();
        if states.len() >= 4 || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(states, ["queued", "relayed", "recalling", "recalled"]);
    assert_eq!((a.orphans(), b.orphans()), (0, 0));
}

#[tokio::test]
async fn a_message_read_before_the_recall_stays_read() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let id = relayed(&a, &b, &alice, &bob).await;
    b.ack(&bob.device(0).token, &[&id]).await;

    recall(&a, &alice, &id).await;
    wait_for_state(&a, &alice, &id, "not_recalled").await;
    // Recalling again changes nothing and asks nobody.
    let again = recall(&a, &alice, &id).await;
    assert_eq!(again["recipients"][0]["state"], "not_recalled");
    assert_eq!(a.count("outbound_recalls"), 0);
}

#[tokio::test]
async fn only_the_origin_recalls_its_own_mail() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let mallory_server = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let id = relayed(&a, &b, &alice, &bob).await;
    let bob_address = format!("bob@{}", b.server_name);
    let path = format!("/federation/v1/recall/{id}");
    let body = |origin: &str, recipients: Vec<String>| {
        serde_json::to_vec(&json!({"origin": origin, "recipients": recipients})).unwrap()
    };
    let now = homing::time::now_ms() / 1000;

    // Another server, signing as itself, names Alice's message id: it
    // finds no message of its own by that id.
    let own = body(&mallory_server.server_name, vec![bob_address.clone()]);
    let (status, answer) =
        send_forged_answer(&forge(&mallory_server, &b, &path, &own, now, None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recipients"][0]["status"], "gone");
    // Signing as itself while the body names A: refused.
    let claimed = body(&a.server_name, vec![bob_address.clone()]);
    let (status, _) =
        send_forged_answer(&forge(&mallory_server, &b, &path, &claimed, now, None)).await;
    assert_eq!(status, 400);
    // Claiming to be A with its own key: the signature does not verify.
    let stolen = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let (status, _) = send_forged_answer(&forge(&a, &b, &path, &claimed, now, Some(&stolen))).await;
    assert_eq!(status, 401);
    // Unsigned.
    let unsigned = reqwest::Client::new()
        .put(b.url(&path))
        .header("Content-Type", "application/json")
        .body(claimed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // Too many recipients, or none.
    let many: Vec<String> = (0..101)
        .map(|i| format!("u{i}@{}", b.server_name))
        .collect();
    let (status, _) = send_forged_answer(&forge(
        &a,
        &b,
        &path,
        &body(&a.server_name, many),
        now,
        None,
    ))
    .await;
    assert_eq!(status, 413);
    let (status, _) = send_forged_answer(&forge(
        &a,
        &b,
        &path,
        &body(&a.server_name, vec![]),
        now,
        None,
    ))
    .await;
    assert_eq!(status, 400);

    // Bob's mail is still there, and new mail from Alice still arrives.
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    relayed_again(&a, &b, &alice, &bob).await;

    // A itself recalls, and a retry of the same request is answered the
    // same from the record, not `gone`.
    let (status, first) = send_forged_answer(&forge(&a, &b, &path, &claimed, now, None)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["recipients"][0]["status"], "recalled");
    let (status, retried) = send_forged_answer(&forge(&a, &b, &path, &claimed, now, None)).await;
    assert_eq!(status, 200);
    assert_eq!(retried, first);
    // The same id with another body is a reused record.
    let other = body(&a.server_name, vec![format!("carol@{}", b.server_name)]);
    let (status, _) = send_forged_answer(&forge(&a, &b, &path, &other, now, None)).await;
    assert_eq!(status, 409);
}

async fn relayed_again(a: &TestApp, b: &TestApp, alice: &TestUser, bob: &TestUser) {
    let message = remote_message(a, b, bob, b"still welcome");
    let sent = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    wait_for_items(b, &bob.device(0).token, 2, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_id_another_sender_reused_is_not_recalled_from_the_peer() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let mallory = a.register("mallory").await;
    let bob = b.register("bob").await;
    // Alice writes to Bob on B and to Mallory here: Mallory learns the id.
    let mut message = remote_message(&a, &b, &bob, b"for bob and mallory");
    let to_mallory = crate::helpers::message_to(&a, &[(&mallory, &[0])], b"x", "all");
    message["recipients"]
        .as_array_mut()
        .unwrap()
        .push(to_mallory["recipients"][0].clone());
    let sent = a
        .post_json("/api/v1/dms/send", &message, Some(&alice.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    let id = message["message_id"].as_str().unwrap().to_string();
    wait_for_items(&b, &bob.device(0).token, 1, Duration::from_secs(10)).await;
    a.ack(&mallory.device(0).token, &[&id]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.count("messages") > 0 {
        assert!(Instant::now() < deadline, "A kept Alice's message");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Mallory sends under the same id to Bob, then recalls it: B would
    // know only A's name and the id, and take back Alice's message.
    let mut copy = remote_message(&a, &b, &bob, b"decoy");
    copy["message_id"] = json!(id);
    let sent = a
        .post_json("/api/v1/dms/send", &copy, Some(&mallory.device(0).token))
        .await;
    assert_eq!(sent.status(), 202);
    wait_for_state(&a, &mallory, &id, "relayed").await;
    let answer = recall(&a, &mallory, &id).await;
    assert_eq!(answer["recipients"][0]["state"], "not_recalled", "{answer}");
    assert_eq!(a.count("outbound_recalls"), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = b.sync(&bob.device(0).token).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["items"][0]["body"], message["body"]);
}
