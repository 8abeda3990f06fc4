DROP INDEX inbound_txns_by_origin;
