ALTER TABLE outbox ADD COLUMN txn_id TEXT;
UPDATE outbox SET txn_id = (
    SELECT t.txn_id FROM outbox_txns t, json_each(t.outbox_rows) e
    WHERE e.value = outbox.id
);
CREATE INDEX outbox_unsent ON outbox (destination, id) WHERE txn_id IS NULL;
CREATE INDEX outbox_sent ON outbox (destination, id) WHERE txn_id IS NOT NULL;
DROP TABLE outbox_txns;
