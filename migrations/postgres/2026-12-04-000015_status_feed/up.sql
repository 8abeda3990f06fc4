-- Every change of a sent message's receipts, per sending account, kept
-- for the pending age: the delivery feed a sender's devices read after
-- being away (GET /api/v1/dms/status?since=CURSOR).
--
-- Several transactions append at once here, so ids do not commit in
-- order: a reader past id 10 could miss id 9 committing later. Each row
-- records its transaction's id (`xid`), and readers take only rows of
-- transactions older than every transaction still running
-- (pg_snapshot_xmin), in (xid, id) order. A transaction that commits
-- after a read has an xid at or above that horizon, so it is always past
-- the reader's cursor: nothing is skipped.
CREATE TABLE status_feed (
    id BIGSERIAL PRIMARY KEY,
    xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX status_feed_sender ON status_feed (sender_account, xid, id);
CREATE INDEX status_feed_age ON status_feed (created_at);
