//! The connection type over both backends and its r2d2 manager. The manager
//! picks the backend from the configured URL instead of guessing by trying
//! each one, so a typo never silently creates a SQLite file.

use diesel::r2d2::{ManageConnection, R2D2Connection};
use diesel::{PgConnection, SqliteConnection};

use crate::config::{DatabaseUrl, SqliteSynchronous};

/// A live connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

/// Why a connection could not be opened or checked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

/// Opens connections for the pool.
pub struct Manager {
    url: DatabaseUrl,
    synchronous: SqliteSynchronous,
}

impl Manager {
    pub fn new(url: DatabaseUrl, synchronous: SqliteSynchronous) -> Self {
        Self { url, synchronous }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConnection, ConnectError> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => super::open_sqlite(path, self.synchronous)
                .map(DbConnection::Sqlite)
                .map_err(ConnectError),
            DatabaseUrl::Postgres(url) => super::open_postgres(url)
                .map(DbConnection::Postgres)
                .map_err(ConnectError),
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectError> {
        conn.ping().map_err(|e| ConnectError(e.to_string()))
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}
