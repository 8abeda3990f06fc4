//! Directory look-ups of remote addresses are limited per account, and what
//! they leave behind is bounded: documents expire, pins stay small.

use diesel::prelude::*;
use homing::federation::directory::cache::{self as identity_cache, PIN_UNUSED};
use homing::storage::schema::remote_identities;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn remote_look_ups_are_limited_per_account() {
    let a = spawn_app_with(vec![("HOMING__RATE_LIMITS__DIRECTORY_PER_ACCOUNT", "5/m")]).await;
    let b = spawn_app().await;
    let mallory = a.register("mallory").await;
    let alice = a.register("alice").await;
    b.register("bob").await;
    let look_up = |token: String, address: String| {
        let a = &a;
        async move {
            a.get_auth(&format!("/api/v1/directory/{address}"), &token)
                .await
        }
    };
    for n in 0..5 {
        let made_up = format!("nobody{n}@{}", b.server_name);
        let answer = look_up(mallory.device(0).token.clone(), made_up).await;
        assert_eq!(answer.status(), 404);
    }
    let limited = look_up(
        mallory.device(0).token.clone(),
        format!("bob@{}", b.server_name),
    )
    .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    // Local look-ups fetch nothing from elsewhere and are not limited here.
    let local = look_up(
        mallory.device(0).token.clone(),
        format!("alice@{}", a.server_name),
    )
    .await;
    assert_eq!(local.status(), 200);
    // Another account has its own budget.
    let honest = look_up(
        alice.device(0).token.clone(),
        format!("bob@{}", b.server_name),
    )
    .await;
    assert_eq!(honest.status(), 200);
}

#[tokio::test]
async fn expired_documents_are_emptied_and_unused_pins_forgotten() {
    let a = spawn_app().await;
    let b = spawn_app().await;
    let alice = a.register("alice").await;
    let bob = b.register("bob").await;
    let carol = b.register("carol").await;
    for user in [&bob, &carol] {
        let path = format!("/api/v1/directory/{}@{}", user.alias, b.server_name);
        assert_eq!(
            a.get_auth(&path, &alice.device(0).token).await.status(),
            200
        );
    }
    let bob_address = format!("bob@{}", b.server_name);
    let carol_address = format!("carol@{}", b.server_name);
    let mut conn = a.state.db.get().unwrap();
    let now = homing::time::now_ms();

    // Nothing has expired yet: the purge leaves both alone.
    let purged = identity_cache::purge(&mut conn, now, 100).unwrap();
    assert_eq!((purged.documents, purged.pins), (0, 0));

    // Both documents expire; carol's pin was last used long ago.
    homing::with_backend!(&mut *conn, c => diesel::update(remote_identities::table)
        .set(remote_identities::expires_at.eq(now - 1))
        .execute(c))
    .unwrap();
    let long_ago = now - homing::time::duration_ms(PIN_UNUSED) - 1;
    homing::with_backend!(&mut *conn, c => diesel::update(
        remote_identities::table.filter(remote_identities::address.eq(&carol_address)))
        .set(remote_identities::fetched_at.eq(long_ago))
        .execute(c))
    .unwrap();
    let purged = identity_cache::purge(&mut conn, now, 100).unwrap();
    assert_eq!((purged.documents, purged.pins), (2, 1));
    let left: Vec<(String, String, String)> = homing::with_backend!(&mut *conn, c => remote_identities::table
        .select((remote_identities::address, remote_identities::document, remote_identities::pinned_account_key))
        .load(c))
    .unwrap();
    assert_eq!(
        left,
        vec![(
            bob_address.clone(),
            String::new(),
            bob.account.public().to_string()
        )]
    );
    drop(conn);

    // The pin still answers: a fresh look-up reports no key change.
    let found: Value = a
        .get_auth(
            &format!("/api/v1/directory/{bob_address}"),
            &alice.device(0).token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["key_changed"], false);
    assert_eq!(
        found["pinned_account_key"],
        bob.account.public().to_string()
    );
}
