//! `src/storage/schema.rs` must describe exactly the tables and columns the
//! migrations create, on both backends.

use std::collections::{BTreeMap, BTreeSet};

use diesel::prelude::*;
use diesel::sql_types::Text;
use homing::storage::schema;
use homing::storage::DbConnection;

use crate::helpers::spawn_app;

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Column names diesel would select for each table, read from the SQL it
/// generates for `SELECT all_columns`.
macro_rules! diesel_tables {
    ($($table:ident),* $(,)?) => {{
        let mut tables = BTreeMap::new();
        $(
            let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
                &schema::$table::table.select(schema::$table::all_columns),
            )
            .to_string();
            tables.insert(stringify!($table).to_string(), columns_in_select(&sql));
        )*
        tables
    }};
}

fn columns_in_select(sql: &str) -> BTreeSet<String> {
    let list = sql
        .trim_start_matches("SELECT ")
        .split(" FROM ")
        .next()
        .unwrap_or_default();
    list.split(", ")
        .map(|qualified| {
            qualified
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .trim_matches(|c| c == '`' || c == '"')
                .to_string()
        })
        .collect()
}

fn names(
    conn: &mut DbConnection,
    sqlite: &str,
    postgres: &str,
    bind: Option<&str>,
) -> BTreeSet<String> {
    let rows: Vec<Name> = match conn {
        DbConnection::Sqlite(c) => match bind {
            Some(value) => diesel::sql_query(sqlite).bind::<Text, _>(value).load(c),
            None => diesel::sql_query(sqlite).load(c),
        },
        DbConnection::Postgres(c) => match bind {
            Some(value) => diesel::sql_query(postgres).bind::<Text, _>(value).load(c),
            None => diesel::sql_query(postgres).load(c),
        },
    }
    .expect("catalogue query");
    rows.into_iter().map(|row| row.name).collect()
}

#[tokio::test]
async fn schema_rs_matches_the_migrated_database() {
    let app = spawn_app().await;
    let expected = diesel_tables!(
        accounts,
        devices,
        auth_challenges,
        auth_tokens,
        invites,
        device_links,
        messages,
        deliveries,
        delivery_receipts,
        outbox,
        outbox_txns,
        destinations,
        inbound_txns,
        federation_nonces,
        server_keys,
        peer_keys,
        resolution_cache,
        remote_identities,
        federation_rules,
        send_idempotency,
        auth_revocations,
        departed_accounts,
        status_feed,
        push_subscriptions,
        push_keys,
        outbound_recalls,
    );
    let mut conn = app.state.db.get().expect("connection");
    let tables = names(
        &mut conn,
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
        None,
    );
    let expected_tables: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(
        tables, expected_tables,
        "tables in the database vs schema.rs"
    );
    for (table, columns) in &expected {
        let actual = names(
            &mut conn,
            "SELECT name FROM pragma_table_info(?)",
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1",
            Some(table),
        );
        assert_eq!(
            &actual, columns,
            "columns of `{table}` in the database vs schema.rs"
        );
    }
}

#[test]
fn column_parser_reads_diesel_select_lists() {
    let sql = "SELECT `a`.`x`, `a`.`y_z` FROM `a` -- binds: []";
    let columns = columns_in_select(sql);
    assert_eq!(
        columns,
        BTreeSet::from(["x".to_string(), "y_z".to_string()])
    );
}
