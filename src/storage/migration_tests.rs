//! Migrations that rebuild tables keep their rows.

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::MigrationHarness;

use super::SQLITE_MIGRATIONS;

#[derive(QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Parent {
    #[diesel(sql_type = Text)]
    table: String,
}

/// How many migrations come before the one whose name contains `name`.
fn position_of(name: &str) -> usize {
    MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE_MIGRATIONS)
        .expect("migrations")
        .iter()
        .position(|m| m.name().to_string().contains(name))
        .expect("the migration exists")
}

fn number(c: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Number>(c)
        .expect("a number")
        .n
}

fn parents(c: &mut SqliteConnection, table: &str) -> Vec<String> {
    diesel::sql_query("SELECT \"table\" FROM pragma_foreign_key_list(?)")
        .bind::<Text, _>(table)
        .load::<Parent>(c)
        .expect("foreign keys")
        .into_iter()
        .map(|p| p.table)
        .collect()
}

/// The rebuild that drops the foreign keys of `deliveries` and `outbox`
/// keeps their rows, and the delivery ids stay above every id handed out
/// before, even one whose row was purged: devices hold them as cursors.
/// The migration after it keeps an open relay transaction, and from then
/// on no outbox id comes back once its row is gone: open transactions name
/// rows by id.
#[test]
fn references_by_construction_keep_rows_and_the_delivery_sequence() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = SqliteConnection::establish(&dir.path().join("m.db").to_string_lossy())
        .expect("open SQLite");
    c.batch_execute("PRAGMA foreign_keys = ON").expect("pragma");
    for _ in 0..position_of("references_by_construction") {
        c.run_next_migration(SQLITE_MIGRATIONS).expect("migrate");
    }
    assert_eq!(parents(&mut c, "deliveries"), ["devices", "messages"]);
    c.batch_execute(
        "INSERT INTO accounts (account_key, alias, created_at, device_list_version, device_list, \
         device_list_signature) VALUES ('k', 'alice', 0, 1, x'00', x'00');
         INSERT INTO devices (id, account_key, device_id, sign_key, box_key, certificate, \
         certificate_signature, created_at, last_seen_at) \
         VALUES (7, 'k', 'd', x'01', x'02', x'03', x'04', 0, 0), \
         (8, 'k', 'e', x'11', x'12', x'13', x'14', 0, 0);
         INSERT INTO messages (id, origin, message_id, request_digest, body, delivery_mode, \
         created_at, expires_at) VALUES (3, 'here', 'm', x'05', x'06', 'all', 0, 9);
         INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, body_bytes, \
         created_at, expires_at) VALUES (3, 7, 'k', x'07', 1, 0, 9), (3, 8, 'k', x'08', 1, 0, 9);
         INSERT INTO outbox (message_row, destination, recipients, created_at, txn_id) \
         VALUES (3, 'there.example', '[]', 0, 't');",
    )
    .unwrap_or_else(|e| panic!("rows at the version before: {e}"));
    // The newest delivery is purged: its id stays taken.
    let newest = number(&mut c, "SELECT MAX(id) AS n FROM deliveries");
    c.batch_execute(&format!("DELETE FROM deliveries WHERE id = {newest}"))
        .expect("purge");

    c.run_next_migration(SQLITE_MIGRATIONS)
        .expect("the rebuild");
    assert!(parents(&mut c, "deliveries").is_empty());
    assert!(parents(&mut c, "outbox").is_empty());
    assert_eq!(number(&mut c, "SELECT COUNT(*) AS n FROM deliveries"), 1);
    assert_eq!(
        number(
            &mut c,
            "SELECT COUNT(*) AS n FROM outbox WHERE txn_id = 't'"
        ),
        1
    );
    c.batch_execute(
        "INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, \
         body_bytes, created_at, expires_at) VALUES (3, 8, 'k', x'09', 1, 0, 9)",
    )
    .expect("a new delivery");
    assert!(number(&mut c, "SELECT MAX(id) AS n FROM deliveries") > newest);
    let indexes = number(
        &mut c,
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name IN \
         ('deliveries_device', 'deliveries_expiry', 'outbox_destination', 'outbox_unsent', \
         'outbox_sent')",
    );
    assert_eq!(indexes, 5);

    // The next migration moves the open transaction into `outbox_txns`.
    assert_eq!(
        position_of("outbox_txns"),
        position_of("references_by_construction") + 1
    );
    c.run_next_migration(SQLITE_MIGRATIONS)
        .expect("outbox_txns");
    let outbox_row = number(&mut c, "SELECT id AS n FROM outbox");
    assert_eq!(
        number(
            &mut c,
            &format!("SELECT COUNT(*) AS n FROM outbox_txns WHERE txn_id = 't' AND outbox_rows = '[{outbox_row}]'")
        ),
        1
    );
    // The newest outbox row bounces; a new row takes a new id.
    c.batch_execute(&format!(
        "DELETE FROM outbox WHERE id = {outbox_row};
         INSERT INTO outbox (message_row, destination, recipients, created_at) \
         VALUES (3, 'elsewhere.example', '[]', 0);"
    ))
    .expect("bounce and queue");
    assert!(number(&mut c, "SELECT MAX(id) AS n FROM outbox") > outbox_row);
    assert!(parents(&mut c, "outbox").is_empty());

    // And back down: the transaction's id is on its row again.
    c.revert_last_migration(SQLITE_MIGRATIONS)
        .expect("outbox_txns down");
    c.batch_execute(
        "INSERT INTO outbox (message_row, destination, recipients, created_at, txn_id) \
         VALUES (3, 'third.example', '[]', 0, 'u')",
    )
    .expect("the schema before");
    assert_eq!(
        number(
            &mut c,
            "SELECT COUNT(*) AS n FROM outbox WHERE txn_id = 'u'"
        ),
        1
    );
}

/// Receipts kept from before the purge went by creation take their last
/// change as their creation, so none goes sooner than it would have; and
/// the migration reverts.
#[test]
fn receipts_by_age_keep_each_receipts_time() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut c = SqliteConnection::establish(&dir.path().join("m.db").to_string_lossy())
        .expect("open SQLite");
    for _ in 0..position_of("receipts_by_age") {
        c.run_next_migration(SQLITE_MIGRATIONS)
            .expect("earlier migrations");
    }
    c.batch_execute(
        "INSERT INTO delivery_receipts (sender_account, message_id, recipient, state, updated_at) \
         VALUES ('a', 'm', 'b@example.org', 'relayed', 1234)",
    )
    .expect("a receipt");
    c.run_next_migration(SQLITE_MIGRATIONS)
        .expect("receipts_by_age");
    assert_eq!(
        number(&mut c, "SELECT created_at AS n FROM delivery_receipts"),
        1234
    );
    let index_on = |c: &mut SqliteConnection, name: &str| {
        number(
            c,
            &format!(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = '{name}'"
            ),
        )
    };
    assert_eq!(index_on(&mut c, "delivery_receipts_created"), 1);
    assert_eq!(index_on(&mut c, "delivery_receipts_age"), 0);

    c.revert_last_migration(SQLITE_MIGRATIONS)
        .expect("receipts_by_age down");
    assert_eq!(index_on(&mut c, "delivery_receipts_created"), 0);
    assert_eq!(index_on(&mut c, "delivery_receipts_age"), 1);
    assert_eq!(
        number(&mut c, "SELECT updated_at AS n FROM delivery_receipts"),
        1234
    );
}
