//! `homing verify`: safety numbers two people compare, the record that
//! they did, and the louder warning when a verified key changes.

use std::path::Path;

use serde_json::Value;

use crate::cli::{homing, inbox, init, ok};
use crate::helpers::{spawn_app, TestApp};

async fn verify_json(home: &Path, address: &str) -> Value {
    let out = ok(homing(home, &["--json", "verify", address]).await);
    serde_json::from_str(out.trim()).expect("verify JSON")
}

async fn whois_json(home: &Path, address: &str) -> Value {
    let out = ok(homing(home, &["--json", "whois", address]).await);
    serde_json::from_str(out.trim()).expect("whois JSON")
}

/// Replaces `alias`'s identity on `app` (lost keys, or an attack): the
/// account is deleted and the address registered again from `home`.
async fn replace_identity(app: &TestApp, alias: &str, home: &Path) {
    {
        use diesel::prelude::*;
        use homing::storage::schema::accounts;
        let mut conn = app.state.db.get().unwrap();
        homing::with_backend!(&mut *conn, c => diesel::delete(accounts::table.filter(accounts::alias.eq(alias))).execute(c)).unwrap();
    }
    init(home, &format!("{alias}@{}", app.server_name)).await;
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn both_sides_of_a_conversation_see_the_same_safety_number() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    let alice_address = format!("alice@{}", a.server_name);
    let bob_address = format!("bob@{}", b.server_name);
    init(&alice, &alice_address).await;
    init(&bob, &bob_address).await;
    ok(homing(
        &alice,
        &["send", &bob_address, "--text", "shall we compare?"],
    )
    .await);

    let seen_by_alice = verify_json(&alice, &bob_address).await;
    let seen_by_bob = verify_json(&bob, &alice_address).await;
    let number = seen_by_alice["number"].as_str().unwrap();
    assert_eq!(number.len(), 60, "{seen_by_alice}");
    assert!(number.bytes().all(|b| b.is_ascii_digit()), "{number}");
    assert_eq!(seen_by_alice["number"], seen_by_bob["number"]);
    assert_eq!(seen_by_alice["address"], bob_address);
    assert_eq!(seen_by_alice["your_address"], alice_address);
    assert_eq!(seen_by_alice["your_key"], seen_by_bob["their_key"]);
    assert_eq!(seen_by_alice["their_key"], seen_by_bob["your_key"]);
    assert_eq!(seen_by_alice["verified"], false);

    // For people: the digits in groups of five, and a QR code of them.
    let shown = ok(homing(&bob, &["verify", &alice_address]).await);
    assert!(shown.contains(&number[..5]), "{shown}");
    assert!(shown.contains(&format!("{} {}", &number[5..10], &number[10..15])));
    assert!(
        shown.contains('█') || shown.contains('▀'),
        "no QR code: {shown}"
    );
    assert!(shown.contains("--confirm"), "{shown}");
}

#[tokio::test]
async fn the_safety_number_changes_with_the_key_and_trust_clears_the_verification() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let home = |name: &str| dir.path().join(name);
    let (alice, bob, carol, bob_again) = (home("alice"), home("bob"), home("carol"), home("bob2"));
    let bob_address = format!("bob@{}", app.server_name);
    init(&alice, &format!("alice@{}", app.server_name)).await;
    init(&carol, &format!("carol@{}", app.server_name)).await;
    init(&bob, &bob_address).await;
    ok(homing(
        &carol,
        &["send", &bob_address, "--text", "pinned, not verified"],
    )
    .await);

    let before = verify_json(&alice, &bob_address).await;
    let confirmed = ok(homing(&alice, &["--json", "verify", &bob_address, "--confirm"]).await);
    let confirmed: Value = serde_json::from_str(confirmed.trim()).unwrap();
    assert_eq!(confirmed["verified"], true);
    assert_eq!(confirmed["number"], before["number"]);
    let whois = whois_json(&alice, &bob_address).await;
    assert_eq!(whois["verified"], true, "{whois}");
    let shown = ok(homing(&alice, &["whois", &bob_address]).await);
    assert!(shown.contains("verified     yes"), "{shown}");

    replace_identity(&app, "bob", &bob_again).await;
    // Alice verified the old key: the loud warning, from verify and send.
    for args in [
        vec!["verify", bob_address.as_str()],
        vec!["send", bob_address.as_str(), "--text", "still you?"],
    ] {
        let refused = homing(&alice, &args).await;
        assert!(!refused.status.success());
        let said = stderr(&refused);
        assert!(said.contains("THAT YOU VERIFIED CHANGED"), "{said}");
        assert!(said.contains("in person or on a call"), "{said}");
    }
    // Carol never verified: the ordinary warning.
    let refused = homing(&carol, &["send", &bob_address, "--text", "still you?"]).await;
    let said = stderr(&refused);
    assert!(
        said.contains("WARNING") && said.contains("changed"),
        "{said}"
    );
    assert!(!said.contains("VERIFIED"), "{said}");
    let whois = whois_json(&alice, &bob_address).await;
    assert_eq!(whois["key_changed"], true, "{whois}");

    let trusted = ok(homing(&alice, &["trust", &bob_address]).await);
    assert!(trusted.contains("homing verify"), "{trusted}");
    assert_eq!(whois_json(&alice, &bob_address).await["verified"], false);
    let after = verify_json(&alice, &bob_address).await;
    assert_eq!(after["verified"], false);
    assert_ne!(after["number"], before["number"]);
    assert_ne!(after["their_key"], before["their_key"]);
    let seen_by_new_bob = verify_json(&bob_again, &format!("alice@{}", app.server_name)).await;
    assert_eq!(after["number"], seen_by_new_bob["number"]);
}

#[tokio::test]
async fn mail_under_a_changed_verified_key_is_held_with_the_louder_warning() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_again, bob) = (
        dir.path().join("alice"),
        dir.path().join("alice2"),
        dir.path().join("bob"),
    );
    let alice_address = format!("alice@{}", app.server_name);
    let bob_address = format!("bob@{}", app.server_name);
    init(&alice, &alice_address).await;
    init(&bob, &bob_address).await;
    ok(homing(&bob, &["verify", &alice_address, "--confirm"]).await);
    replace_identity(&app, "alice", &alice_again).await;
    ok(homing(
        &alice_again,
        &["send", &bob_address, "--text", "new keys, trust me"],
    )
    .await);

    let first = homing(&bob, &["--json", "inbox"]).await;
    let said = stderr(&first);
    assert!(said.contains("THAT YOU VERIFIED CHANGED"), "{said}");
    let shown: Vec<Value> = serde_json::from_str(ok(first).trim()).unwrap();
    assert!(shown.is_empty(), "{shown:?}");
    let kept = ok(homing(&bob, &["inbox", "--quarantine"]).await);
    assert!(kept.contains("THAT YOU VERIFIED CHANGED"), "{kept}");

    ok(homing(&bob, &["trust", &alice_address]).await);
    let shown = inbox(&bob).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(whois_json(&bob, &alice_address).await["verified"], false);
}
