//! The database dropping the server's connections (a PostgreSQL restart, a
//! proxy or an admin ending them). The group commit's writer keeps its
//! connection from one batch to the next, so these pin that it lets go of
//! a dead one and no send fails for it.

use diesel::connection::SimpleConnection;
use diesel::Connection;

use crate::helpers::{message_to, spawn_app};

#[tokio::test]
async fn sends_go_on_after_the_database_drops_every_connection() {
    let app = spawn_app().await;
    if !app.database.is_postgres() {
        eprintln!("needs PostgreSQL (HOMING_TEST_DATABASE_URL); checked on that run");
        return;
    }
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let send = |body: &'static [u8]| {
        let message = message_to(&app, &[(&bob, &[0])], body, "all");
        let token = alice.device(0).token.clone();
        let app = &app;
        async move {
            app.post_json("/api/v1/dms/send", &message, Some(&token))
                .await
                .status()
        }
    };
    assert_eq!(send(b"before").await, 202);

    let url = app.database.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut admin = diesel::PgConnection::establish(&url).expect("connect");
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .expect("terminate the server's connections");
    })
    .await
    .unwrap();

    assert_eq!(send(b"after").await, 202);
    let synced = app.sync(&bob.device(0).token).await;
    assert_eq!(
        synced["items"].as_array().map(Vec::len),
        Some(2),
        "{synced}"
    );
}
