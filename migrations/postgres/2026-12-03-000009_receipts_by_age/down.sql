ALTER TABLE delivery_receipts RESET (fillfactor);
DROP INDEX delivery_receipts_created;
CREATE INDEX delivery_receipts_age ON delivery_receipts (updated_at);
ALTER TABLE delivery_receipts DROP COLUMN created_at;
