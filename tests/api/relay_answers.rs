//! What a remote server's answer to a relayed transaction may change on
//! the sender's side: only the receipts of the recipients that transaction
//! carried, whatever else the answer names; a carried recipient the answer
//! leaves out bounces.

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::federation::{receipt_states, wait_for_outbox};
use crate::helpers::{new_message_id, spawn_app, TestApp};

/// How a fake remote answers for one message's recipients.
#[derive(Clone)]
enum Answer {
    /// Accepts them all and claims this address as accepted too.
    AlsoClaim(String),
    /// Accepts all but the last, about which it says nothing.
    OmitLast,
}

/// A remote that answers 200 to every transaction, as `how` says.
async fn fake_remote(how: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, how.clone()));
        }
    });
    address
}

async fn answer(mut stream: TcpStream, how: Answer) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let body = loop {
        let Ok(read) = stream.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..read]);
        let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if request.len() >= end + 4 + length {
            break request[end + 4..end + 4 + length].to_vec();
        }
    };
    let transaction: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let results: Vec<Value> = transaction["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|message| {
            let mut recipients: Vec<Value> = message["recipients"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|r| json!({"address": r["address"], "status": "accepted"}))
                .collect();
            match &how {
                Answer::AlsoClaim(extra) => {
                    recipients.push(json!({"address": extra, "status": "accepted"}))
                }
                Answer::OmitLast => {
                    recipients.pop();
                }
            }
            json!({"message_id": message["message_id"], "recipients": recipients})
        })
        .collect();
    let answer = json!({ "results": results }).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
}

/// Sends a message to remote `addresses` (one device each); it is accepted.
async fn send(app: &TestApp, token: &str, addresses: [String; 2]) -> Value {
    let recipients = addresses.map(|address| {
        json!({
            "address": address,
            "devices": [{"device_id": "phone", "key_wrap": homing::crypto::b64(&[7u8; 80])}],
        })
    });
    let message = json!({
        "message_id": new_message_id(),
        "body": homing::crypto::b64(b"sealed"),
        "delivery": "all",
        "recipients": recipients,
    });
    let response = app
        .post_json("/api/v1/dms/send", &message, Some(token))
        .await;
    assert_eq!(response.status(), 202);
    message
}

#[tokio::test]
async fn an_answer_cannot_mark_a_recipient_it_was_not_sent() {
    let a = spawn_app().await;
    let alice = a.register("alice").await;
    // Dave's server does not answer, so his receipt must stay queued
    // whatever bob's server claims about him.
    let dave = "dave@127.0.0.1:9".to_string();
    let remote = fake_remote(Answer::AlsoClaim(dave.clone())).await;
    let token = &alice.device(0).token;
    let message = send(&a, token, [format!("bob@{remote}"), dave]).await;
    // Two outbox rows, one per server; bob's server answers for its own.
    wait_for_outbox(&a, 1).await;
    assert_eq!(
        receipt_states(&a, token, &message).await,
        [
            ("bob".to_string(), "relayed".to_string()),
            ("dave".to_string(), "queued".to_string())
        ]
    );
}

#[tokio::test]
async fn a_recipient_the_answer_leaves_out_bounces() {
    let a = spawn_app().await;
    let alice = a.register("alice").await;
    let remote = fake_remote(Answer::OmitLast).await;
    let token = &alice.device(0).token;
    let message = send(
        &a,
        token,
        [format!("bob@{remote}"), format!("carol@{remote}")],
    )
    .await;
    wait_for_outbox(&a, 0).await;
    assert_eq!(
        receipt_states(&a, token, &message).await,
        [
            ("bob".to_string(), "relayed".to_string()),
            ("carol".to_string(), "bounced".to_string())
        ]
    );
}
