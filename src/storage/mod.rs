//! The database: one pool over SQLite or PostgreSQL, embedded migrations per
//! backend, and helpers that keep blocking database calls off the async
//! runtime.
//!
//! Queries are written once with diesel's DSL for both backends
//! (`with_backend!`) by the module that owns the tables. The mail tables
//! (messages, deliveries, receipts, the outbox and the relay's state) are
//! written only by `mail`, for both backends; the mailbox and federation
//! decide what to write and call it. `push` writes the Web Push
//! subscriptions and the wake-ups they are owed, for `identity` (a revoked
//! device's goes) and `push`. SQL text appears only where the DSL cannot
//! say it: `mail`'s one-statement batches on PostgreSQL, prepared through
//! `reusable`; `push`'s one correlated update; `LISTEN`/`NOTIFY` in
//! `gateway::cluster`; and the table copies of `admin::migrate_store`.
//!
//! `write_queue` is the group commit every hot write goes through: it
//! knows transactions, savepoints and retries, not what is written.

mod connection;
mod files;
pub mod mail;
#[cfg(test)]
mod migration_tests;
pub mod push;
mod reusable;
pub mod schema;
mod write_queue;

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{Pool, PooledConnection};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::config::{DatabaseSettings, DatabaseUrl, SqliteSynchronous};

pub use connection::DbConnection;
pub use reusable::Reusable;
pub use write_queue::{is_transient, Batched, Isolation, WriteFailure, WriteQueue, WriteTimings};

/// A connection checked out of the pool; it goes back when dropped.
pub type Pooled = PooledConnection<connection::Manager>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Serialises migrations when several replicas start against one PostgreSQL.
const MIGRATION_LOCK_ID: i64 = 0x486f_6d69_6e67; // "Homing"

/// Which backend a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A storage failure. `Unavailable` means the database could not be reached
/// (the client may retry); everything else is a bug or a broken database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A stored row that cannot be read back as what was written, or a
    /// row that must exist and does not.
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
    /// A value that cannot be encoded for storage or for a notification.
    #[error("cannot encode for the database: {0}")]
    Encode(String),
    #[error("database task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs `$body` with `$c` bound to the concrete connection of either
/// backend, so diesel's full DSL (upserts, `RETURNING`, locking clauses) is
/// available while the code is written once.
#[macro_export]
macro_rules! with_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::storage::DbConnection::Sqlite($c) => $body,
            $crate::storage::DbConnection::Postgres($c) => $body,
        }
    };
}

/// Runs `work` in a write transaction. On SQLite it begins with `BEGIN
/// IMMEDIATE`, so concurrent writers queue on the busy timeout instead of
/// failing when a read lock would have to be upgraded mid-transaction.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    let DbConnection::Sqlite(sqlite) = conn else {
        return conn.transaction(work);
    };
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    let result = work(conn);
    let DbConnection::Sqlite(sqlite) = conn else {
        // The backend of a connection cannot change while `work` runs.
        return Err(diesel::result::Error::BrokenTransactionManager.into());
    };
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(sqlite)?;
            Ok(value)
        }
        Err(error) => {
            AnsiTransactionManager::rollback_transaction(sqlite)?;
            Err(error)
        }
    }
}

/// The pool's occupancy at one moment.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

fn checkout(
    pool: &Pool<connection::Manager>,
    waits: &Histogram,
) -> Result<PooledConnection<connection::Manager>, StorageError> {
    let started = std::time::Instant::now();
    let conn = pool
        .get()
        .map_err(|e| StorageError::Unavailable(e.to_string()));
    waits.observe(started.elapsed().as_secs_f64());
    conn
}

/// A pooled handle on the database, cheap to clone.
#[derive(Clone)]
pub struct Database {
    pool: Pool<connection::Manager>,
    backend: Backend,
    url: DatabaseUrl,
    /// Seconds each checkout waited for a free connection: the pool's
    /// saturation, which an operator pages on before requests time out.
    pool_wait: Histogram,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Database {
    /// Opens the pool (creating the SQLite file and its folder if needed) and
    /// checks that the database answers. Blocks; call before serving.
    pub fn connect(settings: &DatabaseSettings) -> Result<Self, StorageError> {
        let backend = match &settings.url {
            DatabaseUrl::Sqlite(path) => {
                files::prepare_sqlite(path)?;
                Backend::Sqlite
            }
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        };
        let manager = connection::Manager::new(settings.url.clone(), settings.sqlite_synchronous);
        // Fail fast with the real cause when the database cannot be reached,
        // rather than r2d2's generic time-out after retrying in a loop.
        {
            use diesel::r2d2::ManageConnection;
            manager
                .connect()
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        }
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(1))
            .connection_timeout(settings.connect_timeout)
            .build(manager)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            backend,
            url: settings.url.clone(),
            pool_wait: Histogram::new(exponential_buckets(0.00001, 4.0, 10)),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL URL, for connections outside the pool (LISTEN).
    pub fn postgres_url(&self) -> Option<String> {
        match &self.url {
            DatabaseUrl::Postgres(url) => Some(url.clone()),
            DatabaseUrl::Sqlite(_) => None,
        }
    }

    /// A connection for blocking code (the admin CLI, migrations).
    pub fn get(&self) -> Result<PooledConnection<connection::Manager>, StorageError> {
        checkout(&self.pool, &self.pool_wait)
    }

    /// The checkout wait histogram, for the metrics registry.
    pub fn pool_wait_histogram(&self) -> Histogram {
        self.pool_wait.clone()
    }

    /// Connections open and idle, and the most the pool opens.
    pub fn pool_state(&self) -> PoolState {
        let state = self.pool.state();
        PoolState {
            open: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// Runs `work` on a pooled connection on the blocking thread pool, so the
    /// async runtime never waits on the database.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        let (pool, waits) = (self.pool.clone(), self.pool_wait.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = checkout(&pool, &waits)?;
            work(&mut conn)
        })
        .await
        .map_err(StorageError::from)?
    }

    /// Applies every pending migration of this backend.
    pub fn run_migrations(&self) -> Result<(), StorageError> {
        let mut conn = self.get()?;
        match &mut *conn {
            DbConnection::Sqlite(c) => apply(c, SQLITE_MIGRATIONS),
            DbConnection::Postgres(c) => migrate_postgres(c),
        }
    }

    /// True when the database answers and no migration is pending.
    pub async fn is_ready(&self) -> Result<bool, StorageError> {
        self.run(|conn| {
            let pending = match conn {
                DbConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
                DbConnection::Postgres(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
            };
            pending
                .map(|pending| !pending)
                .map_err(|e| StorageError::Migration(e.to_string()))
        })
        .await
    }
}

/// Applies every pending PostgreSQL migration on `conn`, under a lock so
/// that replicas starting together (or `migrate-store` preparing a target)
/// do not race.
pub fn migrate_postgres(conn: &mut PgConnection) -> Result<(), StorageError> {
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))?;
    let applied = apply(conn, POSTGRES_MIGRATIONS);
    conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))?;
    applied
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<(), StorageError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    conn.run_pending_migrations(migrations)
        .map(|_| ())
        .map_err(|e| StorageError::Migration(e.to_string()))
}

/// SQLite settings applied to every new connection. The WAL is folded back
/// into the database every 4,000 pages (16 MiB) rather than SQLite's 1,000:
/// under a steady send load the checkpoints, which run on the committing
/// writer, were a sixth of its time (measured in BENCHMARKS.md).
fn sqlite_pragmas(synchronous: SqliteSynchronous) -> String {
    let synchronous = match synchronous {
        SqliteSynchronous::Normal => "NORMAL",
        SqliteSynchronous::Full => "FULL",
    };
    format!(
        "PRAGMA busy_timeout = {};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 4000;",
        Duration::from_secs(10).as_millis()
    )
}

pub(crate) fn open_sqlite(
    path: &Path,
    synchronous: SqliteSynchronous,
) -> Result<SqliteConnection, String> {
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|e| format!("cannot open SQLite database {}: {e}", path.display()))?;
    conn.batch_execute(&sqlite_pragmas(synchronous))
        .map_err(|e| format!("cannot configure SQLite database {}: {e}", path.display()))?;
    Ok(conn)
}

pub fn open_postgres(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| {
        format!(
            "cannot connect to PostgreSQL at {}: {}",
            crate::config::redact_url(url),
            one_line(&e.to_string())
        )
    })
}

/// libpq reports errors over several lines; logs and CLI errors want one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True when `error` is a unique-constraint violation (a lost race or a
/// duplicate), which callers turn into a conflict rather than a 500.
pub fn is_unique_violation(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A migrated SQLite database under `dir`, for unit tests.
#[cfg(test)]
pub(crate) fn migrated_test_sqlite(dir: &Path, pool_size: u32) -> Database {
    let db = Database::connect(&DatabaseSettings {
        url: DatabaseUrl::Sqlite(dir.join("homing.db")),
        pool_size,
        connect_timeout: Duration::from_secs(5),
        sqlite_synchronous: SqliteSynchronous::Normal,
        writers: 1,
    })
    .expect("open SQLite");
    db.run_migrations().expect("migrate SQLite");
    db
}
