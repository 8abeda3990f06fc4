-- A receipt changes state once or twice (`queued` to `relayed`, `stored`
-- to `delivered`), each time while its sender may be waiting on it, and
-- `updated_at` was indexed for the purge: every change wrote a new entry
-- in both of the table's indexes, and full pages moved the row as well.
-- The purge now goes by the receipt's creation, which never changes, and
-- pages keep room for each row's next version, so a change rewrites the
-- row in its own page and no index (a HOT update). Every change happens
-- before the message's pending age runs out, so purging receipts created
-- two pending ages ago keeps each one at least a pending age after its
-- last change, as before. See federation-spec/storage.md.
ALTER TABLE delivery_receipts ADD COLUMN created_at BIGINT;
UPDATE delivery_receipts SET created_at = updated_at;
ALTER TABLE delivery_receipts ALTER COLUMN created_at SET NOT NULL;
DROP INDEX delivery_receipts_age;
CREATE INDEX delivery_receipts_created ON delivery_receipts (created_at);
ALTER TABLE delivery_receipts SET (fillfactor = 45);
