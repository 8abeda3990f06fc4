//! The delivery feed: every change of a sent message's receipts, per
//! sending account, in an order readers can resume from (see the
//! `status_feed` migrations for why the cursor is (transaction, id) on
//! PostgreSQL). Rows are appended here by whatever changes a receipt, in
//! the same transaction.

use diesel::prelude::*;

use crate::storage::schema::status_feed;
use crate::storage::{DbConnection, StorageError};
use crate::with_backend;

/// One change to append: (sender, message id, recipient, state, detail).
pub type FeedChange<'a> = (&'a str, &'a str, &'a str, &'a str, Option<&'a str>);

/// Appends `changes` made at `now`.
pub fn append(
    conn: &mut DbConnection,
    changes: &[FeedChange<'_>],
    now: i64,
) -> Result<(), StorageError> {
    for chunk in changes.chunks(super::insert::ROWS_PER_STATEMENT) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|&(sender, message_id, recipient, state, detail)| {
                (
                    status_feed::sender_account.eq(sender),
                    status_feed::message_id.eq(message_id),
                    status_feed::recipient.eq(recipient),
                    status_feed::state.eq(state),
                    status_feed::detail.eq(detail),
                    status_feed::created_at.eq(now),
                )
            })
            .collect();
        with_backend!(conn, c => diesel::insert_into(status_feed::table)
            .values(&rows)
            .execute(c))?;
    }
    Ok(())
}

/// A position in one account's feed: past (transaction, id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub xid: i64,
    pub id: i64,
}

impl FeedCursor {
    /// `XID-ID` as `to_string` writes it; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (xid, id) = text.split_once('-')?;
        let cursor = Self {
            xid: xid.parse().ok()?,
            id: id.parse().ok()?,
        };
        (cursor.xid >= 0 && cursor.id >= 0).then_some(cursor)
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.xid, self.id)
    }
}

/// One change as read: (position, message id, recipient, state, detail,
/// when).
pub type FeedRow = (FeedCursor, String, String, String, Option<String>, i64);

/// The transaction horizon: on PostgreSQL the oldest transaction still
/// running, below which every change has committed; on SQLite (one
/// writer, ids in commit order) no limit.
fn horizon(conn: &mut DbConnection) -> Result<i64, StorageError> {
    Ok(match conn {
        DbConnection::Postgres(c) => diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        ))
        .get_result::<i64>(c)?,
        DbConnection::Sqlite(_) => i64::MAX,
    })
}

type Row = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
);

/// `(xid, id) > (X, I)`: a row comparison, which both databases read as
/// a range of the (xid, id) indexes; spelled with `OR`, the tail of the
/// whole feed would scan it from the start. The values are integers.
fn past_cursor(after: FeedCursor) -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "(status_feed.xid, status_feed.id) > ({}, {})",
        after.xid, after.id
    ))
}

/// Rows past `after` below the horizon, oldest first, for `sender` or for
/// everyone: (sender, row).
fn rows_past(
    conn: &mut DbConnection,
    sender: Option<&str>,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<(String, FeedRow)>, StorageError> {
    let horizon = horizon(conn)?;
    // One query for both readers; `$whose` narrows it to one sender, or
    // repeats the horizon for everyone's.
    macro_rules! past {
        ($whose:expr) => {
            with_backend!(conn, c => status_feed::table
                .filter($whose)
                .filter(status_feed::xid.lt(horizon))
                .filter(past_cursor(after))
                .order((status_feed::xid.asc(), status_feed::id.asc()))
                .limit(limit)
                .select((
                    status_feed::sender_account,
                    status_feed::xid,
                    status_feed::id,
                    status_feed::message_id,
                    status_feed::recipient,
                    status_feed::state,
                    status_feed::detail,
                    status_feed::created_at,
                ))
                .load::<Row>(c))?
        };
    }
    let rows: Vec<Row> = match sender {
        Some(sender) => past!(status_feed::sender_account.eq(sender)),
        None => past!(status_feed::xid.lt(horizon)),
    };
    Ok(rows
        .into_iter()
        .map(
            |(sender, xid, id, message_id, recipient, state, detail, at)| {
                let position = FeedCursor { xid, id };
                (sender, (position, message_id, recipient, state, detail, at))
            },
        )
        .collect())
}

/// Up to `limit` of `sender`'s changes past `after`, oldest first. On
/// PostgreSQL only changes of transactions older than every one still
/// running are read, so a change that commits later is always past the
/// cursor this read ends at.
pub fn read(
    conn: &mut DbConnection,
    sender: &str,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<FeedRow>, StorageError> {
    Ok(rows_past(conn, Some(sender), after, limit)?
        .into_iter()
        .map(|(_, row)| row)
        .collect())
}

/// Up to `limit` of everyone's changes past `after`, in the same order
/// and under the same horizon as [`read`], with their senders: what the
/// gateway tails to tell connected devices, so that the cursor of each
/// change it sends is one `read` resumes from.
pub fn tail(
    conn: &mut DbConnection,
    after: FeedCursor,
    limit: i64,
) -> Result<Vec<(String, FeedRow)>, StorageError> {
    rows_past(conn, None, after, limit)
}

/// The position of the newest change every reader can see now (where a
/// tail that starts now begins).
pub fn head(conn: &mut DbConnection) -> Result<FeedCursor, StorageError> {
    let horizon = horizon(conn)?;
    let newest: Option<(i64, i64)> = with_backend!(conn, c => status_feed::table
        .filter(status_feed::xid.lt(horizon))
        .order((status_feed::xid.desc(), status_feed::id.desc()))
        .select((status_feed::xid, status_feed::id))
        .first(c)
        .optional())?;
    Ok(newest.map_or_else(FeedCursor::default, |(xid, id)| FeedCursor { xid, id }))
}

/// Forgets changes made before `before`; returns how many.
pub fn forget(conn: &mut DbConnection, before: i64) -> Result<usize, StorageError> {
    Ok(with_backend!(conn, c => diesel::delete(
        status_feed::table.filter(status_feed::created_at.le(before)),
    )
    .execute(c))?)
}

#[cfg(test)]
mod tests {
    use super::FeedCursor;

    #[test]
    fn cursors_read_back_what_they_write_and_nothing_else() {
        let cursor = FeedCursor { xid: 812, id: 77 };
        assert_eq!(FeedCursor::parse(&cursor.to_string()), Some(cursor));
        for bad in [
            "",
            "5",
            "-1-2",
            "1--2",
            "a-b",
            "1-2-3",
            "99999999999999999999-1",
        ] {
            assert_eq!(FeedCursor::parse(bad), None, "{bad}");
        }
        assert!(FeedCursor { xid: 1, id: 9 } < FeedCursor { xid: 2, id: 1 });
    }
}
