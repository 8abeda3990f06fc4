//! The tables `migrate-store` copies, in foreign-key order, and the code that
//! streams each one from the source into PostgreSQL in bounded batches.
//!
//! The list is checked from both sides: at compile time each table's column
//! list must equal its `all_columns` in `schema.rs`, and a test compares the
//! table list (and its order) with the tables the migrations create.

use diesel::connection::DefaultLoadingMode;
use diesel::pg::PgRowByRowLoadingMode;
use diesel::prelude::*;
use diesel::sql_types;
use diesel::PgConnection;

use crate::storage::schema;
use crate::storage::DbConnection;

/// Rows per INSERT. 500 rows of the widest table (12 columns) stay far below
/// PostgreSQL's 65535 bind parameters.
const BATCH_ROWS: usize = 500;

/// Flush a batch early once its values reach this many bytes, so a run of
/// large message bodies does not hold hundreds of megabytes at once.
const BATCH_BYTES: usize = 8 << 20;

/// The Rust type a column's SQL type is read into. A new SQL type in the
/// schema fails to compile here until someone decides how to copy it.
pub(super) trait RustType {
    type Rust: Weight;
}

impl RustType for sql_types::Text {
    type Rust = String;
}
impl RustType for sql_types::Binary {
    type Rust = Vec<u8>;
}
impl RustType for sql_types::BigInt {
    type Rust = i64;
}
impl RustType for sql_types::Integer {
    type Rust = i32;
}
impl RustType for sql_types::Bool {
    type Rust = bool;
}
impl<T: RustType> RustType for sql_types::Nullable<T> {
    type Rust = Option<T::Rust>;
}

/// The Rust value of column `C`.
type ColumnValue<C> = <<C as Expression>::SqlType as RustType>::Rust;

/// Roughly how many bytes a value holds, for [`BATCH_BYTES`].
pub(super) trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for String {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weight for Vec<u8> {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl Weight for i64 {
    fn weight(&self) -> usize {
        8
    }
}
impl Weight for i32 {
    fn weight(&self) -> usize {
        4
    }
}
impl Weight for bool {
    fn weight(&self) -> usize {
        1
    }
}
impl<T: Weight> Weight for Option<T> {
    fn weight(&self) -> usize {
        self.as_ref().map_or(1, Weight::weight)
    }
}

/// Reads `rows` to the end, inserting them into the target in batches.
/// Returns how many rows were inserted.
fn copy_rows<R>(
    rows: impl Iterator<Item = QueryResult<R>>,
    weight: impl Fn(&R) -> usize,
    target: &mut PgConnection,
    insert: impl Fn(&mut PgConnection, Vec<R>) -> QueryResult<usize>,
) -> QueryResult<u64> {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut bytes = 0;
    let mut copied = 0u64;
    for row in rows {
        let row = row?;
        bytes += weight(&row);
        batch.push(row);
        if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            copied += insert(target, std::mem::take(&mut batch))? as u64;
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        copied += insert(target, batch)? as u64;
    }
    Ok(copied)
}

/// Defines [`TABLES`], [`copy_table`] and [`count_rows`] from one list of
/// tables with all their columns.
macro_rules! tables {
    ($($table:ident ($($column:ident),+ $(,)?);)+) => {
        /// Every table of the schema, each after the tables its foreign keys
        /// point at.
        pub const TABLES: &[&str] = &[$(stringify!($table)),+];

        // Compile-time check: each list names every column of its table, in
        // the schema's order, so a column added later cannot be skipped.
        $(
            const _: fn() = || {
                let _: <schema::$table::table as diesel::Table>::AllColumns =
                    ($(schema::$table::$column,)+);
            };
        )+

        /// Copies one table from `source` into `target`, in primary-key
        /// order, and returns how many rows it inserted; `None` when `table`
        /// is not in [`TABLES`].
        pub(super) fn copy_table(
            table: &str,
            source: &mut DbConnection,
            target: &mut PgConnection,
        ) -> Option<QueryResult<u64>> {
            let copied = match table {
                $(stringify!($table) => {
                    type Row = ($(ColumnValue<schema::$table::$column>,)+);
                    let query = schema::$table::table
                        .select(($(schema::$table::$column,)+))
                        .order(schema::$table::table.primary_key());
                    let weight = |row: &Row| {
                        let ($($column,)+) = row;
                        0 $(+ $column.weight())+
                    };
                    let insert = |pg: &mut PgConnection, rows: Vec<Row>| {
                        let values: Vec<_> = rows
                            .into_iter()
                            .map(|($($column,)+)| ($(schema::$table::$column.eq($column),)+))
                            .collect();
                        diesel::insert_into(schema::$table::table)
                            .values(values)
                            .execute(pg)
                    };
                    // Both loading modes stream row by row, so memory holds
                    // one batch however large the table is.
                    match source {
                        DbConnection::Sqlite(c) => query
                            .load_iter::<Row, DefaultLoadingMode>(c)
                            .and_then(|rows| copy_rows(rows, weight, target, insert)),
                        DbConnection::Postgres(c) => query
                            .load_iter::<Row, PgRowByRowLoadingMode>(c)
                            .and_then(|rows| copy_rows(rows, weight, target, insert)),
                    }
                })+
                _ => return None,
            };
            Some(copied)
        }

        /// Rows in `table`, or `None` when it is not in [`TABLES`].
        pub(super) fn count_rows(
            conn: &mut DbConnection,
            table: &str,
        ) -> Option<QueryResult<i64>> {
            match table {
                $(stringify!($table) => Some(crate::with_backend!(conn, c =>
                    schema::$table::table.count().get_result::<i64>(c))),)+
                _ => None,
            }
        }
    };
}

tables! {
    accounts(
        account_key, alias, created_at, disabled_at, retention_keep_ms,
        device_list_version, device_list, device_list_signature,
    );
    devices(
        id, account_key, device_id, sign_key, box_key, certificate,
        certificate_signature, created_at, last_seen_at, revoked_at,
        pending_messages, pending_bytes,
    );
    auth_challenges(nonce, expires_at);
    auth_tokens(token_hash, device_row, created_at, expires_at);
    auth_revocations(id, epoch);
    invites(invite_id, code_hash, max_uses, uses, created_at, expires_at, revoked_at);
    device_links(link_id, request, response, created_at, expires_at);
    messages(
        id, origin, message_id, sender_account, sender_device, request_digest,
        body, delivery_mode, created_at, expires_at,
    );
    deliveries(
        id, message_row, device_row, recipient_account, key_wrap, body_bytes,
        created_at, expires_at,
    );
    delivery_receipts(
        sender_account, message_id, recipient, state, detail, updated_at, created_at,
    );
    outbox(id, message_row, destination, recipients, created_at);
    outbox_txns(txn_id, destination, outbox_rows, created_at);
    destinations(
        server_name, failures, next_attempt_at, last_error, last_success_at,
        lease_owner, lease_expires_at, last_failure_at,
    );
    inbound_txns(origin, txn_id, request_digest, response, received_at);
    federation_nonces(origin, nonce, expires_at);
    server_keys(key_id, public_key, secret_key, is_current, created_at, expires_at);
    peer_keys(server_name, key_id, public_key, valid_until, fetched_at);
    resolution_cache(server_name, target, error, resolved_at, expires_at);
    remote_identities(
        address, account_key, document, pinned_account_key, key_changed_at,
        fetched_at, expires_at, pinned_version,
    );
    federation_rules(server_name, rule, created_at);
    send_idempotency(sender_account, message_id, request_digest, response, created_at);
    departed_accounts(alias, account_key, departed_at, signature);
    status_feed(id, xid, sender_account, message_id, recipient, state, detail, created_at);
    push_subscriptions(
        device_row, endpoint, p256dh, auth, created_at, due_at, attempts, last_push_at,
        pushed_cursor, lease_until,
    );
    push_keys(id, secret_key, public_key, created_at);
    outbound_recalls(destination, message_id, sender_account, recipients, created_at);
}
