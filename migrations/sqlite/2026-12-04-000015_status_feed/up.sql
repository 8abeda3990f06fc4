-- Every change of a sent message's receipts, per sending account, kept
-- for the pending age: the delivery feed a sender's devices read after
-- being away (GET /api/v1/dms/status?since=CURSOR). On SQLite one write
-- transaction runs at a time, so ids commit in order and the id alone is
-- the cursor; `xid` stays 0 (see the PostgreSQL migration).
CREATE TABLE status_feed (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    xid BIGINT NOT NULL DEFAULT 0,
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX status_feed_sender ON status_feed (sender_account, xid, id);
CREATE INDEX status_feed_age ON status_feed (created_at);
