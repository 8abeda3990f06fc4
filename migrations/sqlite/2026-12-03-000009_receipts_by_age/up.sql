-- The same as the PostgreSQL migration of this name: receipts are purged
-- by their creation, which never changes, so a change of state no longer
-- rewrites an index entry (SQLite has no fillfactor to set).
ALTER TABLE delivery_receipts ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
UPDATE delivery_receipts SET created_at = updated_at;
DROP INDEX delivery_receipts_age;
CREATE INDEX delivery_receipts_created ON delivery_receipts (created_at);
