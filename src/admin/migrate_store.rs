//! `homingd admin migrate-store --to postgres://…`: moves a server to
//! PostgreSQL by copying every table of its configured database (normally
//! SQLite) into an empty PostgreSQL database, in one transaction, then
//! comparing the row count of every table on both sides.
//!
//! The daemon must be stopped while this runs: the copy reads one snapshot
//! of the source, so anything written after it starts would be missing from
//! the target (the final count check reports it rather than hiding it).

mod tables;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use serde::Serialize;

use crate::config::{redact_url, DatabaseUrl};
use crate::storage::{migrate_postgres, open_postgres, DbConnection};

pub use tables::TABLES;

/// One table's row count on both sides after the copy.
#[derive(Debug, Clone, Serialize)]
pub struct TableCount {
    pub table: &'static str,
    pub source_rows: i64,
    pub target_rows: i64,
}

/// What `migrate-store` did.
#[derive(Debug, Clone, Serialize)]
pub struct MigrateReport {
    /// The source and target, without passwords.
    pub source: String,
    pub target: String,
    pub tables: Vec<TableCount>,
    pub total_rows: i64,
    pub elapsed_ms: u64,
}

/// Copies everything in `source` (the configured database, already
/// migrated) into the empty PostgreSQL database at `target_url`, verifies
/// the row counts and reports them. `progress` hears each table as it is
/// copied, with its row count.
pub fn migrate(
    source: &mut DbConnection,
    source_url: &DatabaseUrl,
    target_url: &str,
    progress: &mut dyn FnMut(&str, u64),
) -> anyhow::Result<MigrateReport> {
    let started = Instant::now();
    let target_url = target_url.trim();
    if !(target_url.starts_with("postgres://") || target_url.starts_with("postgresql://")) {
        bail!(
            "--to must be a postgres:// URL, not {:?}: migrate-store moves a server to PostgreSQL",
            redact_url(target_url)
        );
    }
    let shown_target = redact_url(target_url);
    if matches!(source_url, DatabaseUrl::Postgres(url) if url.trim() == target_url) {
        bail!("the target {shown_target} is the configured database itself");
    }
    let mut target = DbConnection::Postgres(
        open_postgres(target_url).map_err(|e| anyhow!("target database: {e}"))?,
    );
    if same_postgres_database(source, &mut target)
        .context("checking whether the target is the configured database")?
    {
        bail!("the target {shown_target} is the configured database itself");
    }
    refuse_unknown_tables(source, "the configured database")?;
    // Before the migrations, so that another application's database is
    // refused without Homing's tables being created in it.
    refuse_unknown_tables(&mut target, "the target database")?;
    if let DbConnection::Postgres(pg) = &mut target {
        migrate_postgres(pg).context("preparing the target database")?;
    }

    copy_everything(source, &mut target, progress)?;

    // Counted again after the commit, outside the copy's snapshot: a
    // daemon that kept writing to the source shows up here.
    let mut counts = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        counts.push(TableCount {
            table,
            source_rows: count(source, table).context("counting rows in the source")?,
            target_rows: count(&mut target, table).context("counting rows in the target")?,
        });
    }
    let differing: Vec<String> = counts
        .iter()
        .filter(|c| c.source_rows != c.target_rows)
        .map(|c| {
            format!(
                "{} (source {}, target {})",
                c.table, c.source_rows, c.target_rows
            )
        })
        .collect();
    if !differing.is_empty() {
        bail!(
            "row counts differ after the copy: {}. Was homingd still running? \
             Stop it, drop and re-create the target database, and run migrate-store again",
            differing.join(", ")
        );
    }
    Ok(MigrateReport {
        source: source_url.describe(),
        target: shown_target,
        total_rows: counts.iter().map(|c| c.source_rows).sum(),
        tables: counts,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The copy proper: one read snapshot of the source, one write transaction
/// on the target, so the target ends with all of the source or none of it.
fn copy_everything(
    source: &mut DbConnection,
    target: &mut DbConnection,
    progress: &mut dyn FnMut(&str, u64),
) -> anyhow::Result<()> {
    source.transaction(|source| {
        if let DbConnection::Postgres(c) = source {
            // A PostgreSQL source needs REPEATABLE READ for one snapshot
            // across tables; SQLite's read transaction already is one.
            c.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        }
        target.transaction(|target| {
            refuse_non_empty(target)?;
            let DbConnection::Postgres(pg) = target else {
                bail!("the target connection is not PostgreSQL");
            };
            for &table in TABLES {
                let copied = tables::copy_table(table, source, pg)
                    .ok_or_else(|| anyhow!("no copy code for table {table}"))?
                    .with_context(|| format!("copying table {table}"))?;
                progress(table, copied);
            }
            let high_water = id_high_water(source).context("reading the source's id counters")?;
            advance_sequences(pg, &high_water).context("advancing the target's id sequences")
        })
    })
}

fn count(conn: &mut DbConnection, table: &str) -> anyhow::Result<i64> {
    tables::count_rows(conn, table)
        .ok_or_else(|| anyhow!("no count for table {table}"))?
        .with_context(|| format!("counting table {table}"))
}

/// Refuses a target that holds any row: copying over existing data would
/// mix two servers, or double an earlier partial attempt.
fn refuse_non_empty(target: &mut DbConnection) -> anyhow::Result<()> {
    let mut filled = Vec::new();
    for &table in TABLES {
        let rows = count(target, table)?;
        if rows > 0 {
            filled.push(format!("{table}: {rows}"));
        }
    }
    if !filled.is_empty() {
        bail!(
            "the target database is not empty (rows in {}); migrate-store only copies into a new, \
             empty database: create one and run it again",
            filled.join(", ")
        );
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Refuses a database holding a table this version does not know: in the
/// source the copy would silently leave it behind, and a target holding one
/// is not a database made for this server.
fn refuse_unknown_tables(conn: &mut DbConnection, which: &str) -> anyhow::Result<()> {
    let names: Vec<Name> = match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
        )
        .load(c),
        DbConnection::Postgres(c) => diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             AND table_name <> '__diesel_schema_migrations'",
        )
        .load(c),
    }
    .with_context(|| format!("listing the tables of {which}"))?;
    let unknown: Vec<String> = names
        .into_iter()
        .map(|n| n.name)
        .filter(|name| !TABLES.contains(&name.as_str()))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{which} has tables this homingd does not know ({}): is it another \
             application's database, or one written by a newer homingd?",
            unknown.join(", ")
        );
    }
    Ok(())
}

/// True when both connections reach the same PostgreSQL database. URLs can
/// name one database in many ways (host aliases, sockets, ports), so ask the
/// server: advisory locks are per database, and a lock the target holds
/// under a random key cannot also be taken by the source if they share one.
fn same_postgres_database(
    source: &mut DbConnection,
    target: &mut DbConnection,
) -> QueryResult<bool> {
    let (DbConnection::Postgres(source), DbConnection::Postgres(target)) = (source, target) else {
        return Ok(false);
    };
    let key: i64 = rand::random();
    let lock = format!("pg_try_advisory_lock({key})");
    let unlock = format!("SELECT pg_advisory_unlock({key})");
    if !diesel::select(diesel::dsl::sql::<Bool>(&lock)).get_result::<bool>(target)? {
        // Someone else holds this random key: no conclusion, and no harm,
        // since the emptiness check still protects a database in use.
        return Ok(false);
    }
    let taken_by_source =
        diesel::select(diesel::dsl::sql::<Bool>(&lock)).get_result::<bool>(source);
    target.batch_execute(&unlock)?;
    let taken_by_source = taken_by_source?;
    if taken_by_source {
        source.batch_execute(&unlock)?;
    }
    Ok(!taken_by_source)
}

#[derive(QueryableByName)]
struct SerialColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct IdCounter {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    last_id: i64,
}

/// The largest id each table of the source ever handed out, which can be
/// above the largest id it still holds: delivery ids are clients' sync
/// cursors, so the target must not hand out again an id of mail that was
/// already purged (a device holding that cursor would skip the new mail).
fn id_high_water(source: &mut DbConnection) -> QueryResult<HashMap<String, i64>> {
    let counters: Vec<IdCounter> = match source {
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name AS table_name, CAST(seq AS BIGINT) AS last_id FROM sqlite_sequence",
        )
        .load(c)?,
        DbConnection::Postgres(c) => diesel::sql_query(
            "SELECT table_name::text AS table_name, COALESCE(pg_sequence_last_value(\
             pg_get_serial_sequence(quote_ident(table_name), column_name)::regclass), 0) \
             AS last_id FROM information_schema.columns WHERE table_schema = current_schema() \
             AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
        )
        .load(c)?,
    };
    Ok(counters
        .into_iter()
        .map(|counter| (counter.table_name, counter.last_id))
        .collect())
}

/// Rows were inserted with their ids, which does not move the sequences
/// behind `BIGSERIAL` columns: set each past both the largest copied id and
/// the source's own counter, so the daemon's next insert neither collides
/// nor reuses a purged id. Read from the catalogue so a serial column added
/// later is covered too.
fn advance_sequences(pg: &mut PgConnection, high_water: &HashMap<String, i64>) -> QueryResult<()> {
    let columns: Vec<SerialColumn> = diesel::sql_query(
        "SELECT table_name::text AS table_name, column_name::text AS column_name \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
    )
    .load(pg)?;
    for SerialColumn {
        table_name,
        column_name,
    } in columns
    {
        let table = quote_ident(&table_name);
        let column = quote_ident(&column_name);
        let source_counter = high_water.get(&table_name).copied().unwrap_or(0);
        // is_called = false: the next nextval() returns exactly this value.
        diesel::sql_query(format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), \
             GREATEST(COALESCE((SELECT MAX({column}) FROM {table}), 0), $3) + 1, false)"
        ))
        .bind::<Text, _>(&table)
        .bind::<Text, _>(&column_name)
        .bind::<diesel::sql_types::BigInt, _>(source_counter)
        .execute(pg)?;
    }
    Ok(())
}

/// A PostgreSQL identifier in double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests;
