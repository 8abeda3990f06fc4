-- The transaction an outbox row was last sent in: a retry resends the same
-- rows under the same id, so the receiver can answer it from its record.
ALTER TABLE outbox ADD COLUMN txn_id TEXT;
CREATE INDEX outbox_txn ON outbox (destination, txn_id);
