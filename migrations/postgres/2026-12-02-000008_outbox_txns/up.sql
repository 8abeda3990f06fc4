-- A relay transaction's rows were marked by writing its id into each of
-- them: a new version of every row with an entry in each of its indexes,
-- 12 microseconds a message on the sending server's one writer. One row
-- per open transaction names its outbox rows now (a JSON array of their
-- ids); it goes when the transaction's answer is recorded. The outbox
-- keeps one index by (destination, id), read in order past the rows of
-- open transactions (federation-spec/storage.md).
CREATE TABLE outbox_txns (
    txn_id TEXT PRIMARY KEY NOT NULL,
    destination TEXT NOT NULL,
    outbox_rows TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX outbox_txns_destination ON outbox_txns (destination, created_at);
INSERT INTO outbox_txns (txn_id, destination, outbox_rows, created_at)
SELECT txn_id, destination, json_agg(id ORDER BY id)::text, MIN(created_at)
FROM outbox WHERE txn_id IS NOT NULL
GROUP BY txn_id, destination;
DROP INDEX outbox_unsent;
DROP INDEX outbox_sent;
ALTER TABLE outbox DROP COLUMN txn_id;
