CREATE TABLE outbox_with_txn (
    id INTEGER PRIMARY KEY NOT NULL,
    message_row BIGINT NOT NULL,
    destination TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    txn_id TEXT,
    UNIQUE (message_row, destination)
);
INSERT INTO outbox_with_txn (id, message_row, destination, recipients, created_at, txn_id)
SELECT o.id, o.message_row, o.destination, o.recipients, o.created_at, (
    SELECT t.txn_id FROM outbox_txns t, json_each(t.outbox_rows) e WHERE e.value = o.id
)
FROM outbox o;
DROP TABLE outbox;
ALTER TABLE outbox_with_txn RENAME TO outbox;
DELETE FROM sqlite_sequence WHERE name = 'outbox';
CREATE INDEX outbox_destination ON outbox (destination, id);
CREATE INDEX outbox_unsent ON outbox (destination, id) WHERE txn_id IS NULL;
CREATE INDEX outbox_sent ON outbox (destination, id) WHERE txn_id IS NOT NULL;
DROP TABLE outbox_txns;
