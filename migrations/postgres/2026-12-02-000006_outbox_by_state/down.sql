DROP INDEX outbox_sent;
DROP INDEX outbox_unsent;
CREATE INDEX outbox_txn ON outbox (destination, txn_id);
