DROP INDEX outbox_txn;
ALTER TABLE outbox DROP COLUMN txn_id;
