ALTER TABLE outbox ADD COLUMN txn_id TEXT;
UPDATE outbox o SET txn_id = t.txn_id
FROM outbox_txns t, json_array_elements_text(t.outbox_rows::json) AS e(id)
WHERE o.id = e.id::bigint;
CREATE INDEX outbox_unsent ON outbox (destination, id) WHERE txn_id IS NULL;
CREATE INDEX outbox_sent ON outbox (destination, id) WHERE txn_id IS NOT NULL;
DROP TABLE outbox_txns;
