-- Each origin keeps only its newest transaction records
-- (limits.max_txn_records_per_origin); finding where they end walks this
-- index from the newest.
CREATE INDEX inbound_txns_by_origin ON inbound_txns (origin, received_at);
