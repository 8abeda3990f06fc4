use std::collections::BTreeSet;

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::*;
use crate::storage::Database;

fn migrated_sqlite(dir: &std::path::Path) -> Database {
    crate::storage::migrated_test_sqlite(dir, 1)
}

#[derive(QueryableByName)]
struct Parent {
    #[diesel(sql_type = Text)]
    parent: String,
}

/// A table added to the migrations but not to the copy list would be left
/// behind by every migration; this catches it, and a list that copies a
/// table before the tables its foreign keys point at.
#[test]
fn the_copy_list_is_every_table_in_foreign_key_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = migrated_sqlite(dir.path());
    let mut conn = db.get().expect("connection");
    let DbConnection::Sqlite(c) = &mut *conn else {
        panic!("expected SQLite");
    };
    let names: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
    )
    .load(c)
    .expect("tables");
    let in_database: BTreeSet<String> = names.into_iter().map(|n| n.name).collect();
    let listed: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
    assert_eq!(listed, in_database, "TABLES vs the migrated database");
    assert_eq!(listed.len(), TABLES.len(), "a table is listed twice");

    for (position, table) in TABLES.iter().enumerate() {
        let parents: Vec<Parent> =
            diesel::sql_query("SELECT \"table\" AS parent FROM pragma_foreign_key_list(?)")
                .bind::<Text, _>(*table)
                .load(c)
                .expect("foreign keys");
        for Parent { parent } in parents {
            let parent_position = TABLES.iter().position(|t| *t == parent);
            assert!(
                parent_position.is_some_and(|p| p < position),
                "{table} refers to {parent}, which must come before it in TABLES"
            );
        }
    }
}

#[test]
fn only_a_postgres_target_is_accepted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = migrated_sqlite(dir.path());
    let mut conn = db.get().expect("connection");
    let source = DatabaseUrl::Sqlite(dir.path().join("homing.db"));
    for target in [
        "sqlite:///tmp/other.db",
        "mysql://root:secret@db/homing",
        "",
    ] {
        let error = migrate(&mut conn, &source, target, &mut |_, _| {})
            .expect_err("a non-PostgreSQL target is refused");
        let text = error.to_string();
        assert!(text.contains("postgres://"), "{text}");
        assert!(!text.contains("secret"), "the password is shown: {text}");
    }
}

#[test]
fn identifiers_are_quoted() {
    assert_eq!(quote_ident("devices"), "\"devices\"");
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
}
