-- The same as the PostgreSQL migration of this name: one row per open
-- relay transaction names its outbox rows, instead of the transaction's
-- id written into each of them (federation-spec/storage.md).
CREATE TABLE outbox_txns (
    txn_id TEXT PRIMARY KEY NOT NULL,
    destination TEXT NOT NULL,
    outbox_rows TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX outbox_txns_destination ON outbox_txns (destination, created_at);
INSERT INTO outbox_txns (txn_id, destination, outbox_rows, created_at)
SELECT txn_id, destination, json_group_array(id), MIN(created_at)
FROM (SELECT * FROM outbox WHERE txn_id IS NOT NULL ORDER BY id)
GROUP BY txn_id, destination;
-- Now that transactions name outbox rows by id, an id must never be handed
-- out twice (PostgreSQL's sequence never does): without AUTOINCREMENT,
-- SQLite numbers a new row after the highest one left, so an id whose row
-- bounced could come back under a transaction that still names it. The
-- table is built again with AUTOINCREMENT, and without `txn_id`.
CREATE TABLE outbox_numbered_once (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    message_row BIGINT NOT NULL,
    destination TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (message_row, destination)
);
INSERT INTO outbox_numbered_once (id, message_row, destination, recipients, created_at)
SELECT id, message_row, destination, recipients, created_at FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_numbered_once RENAME TO outbox;
DELETE FROM sqlite_sequence WHERE name IN ('outbox', 'outbox_numbered_once');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'outbox', COALESCE((SELECT MAX(id) FROM outbox), 0);
CREATE INDEX outbox_destination ON outbox (destination, id);
