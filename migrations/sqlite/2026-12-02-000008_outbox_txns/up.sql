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
DROP INDEX outbox_unsent;
DROP INDEX outbox_sent;
ALTER TABLE outbox DROP COLUMN txn_id;
