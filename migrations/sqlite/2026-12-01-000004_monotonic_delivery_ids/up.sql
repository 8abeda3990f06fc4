-- A delivery's id is the device's sync cursor, which clients keep. Without
-- AUTOINCREMENT SQLite reuses the highest ids once those rows are purged
-- (an emptied mailbox starts again at 1), so new mail could get an id at or
-- below a cursor a device already holds and never be synced. AUTOINCREMENT
-- never hands out an id twice. SQLite cannot add it to a table in place.
CREATE TABLE deliveries_monotonic (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    message_row BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_row BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    recipient_account TEXT NOT NULL,
    key_wrap BLOB NOT NULL,
    body_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (message_row, device_row)
);
INSERT INTO deliveries_monotonic
    (id, message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at)
SELECT id, message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_monotonic RENAME TO deliveries;
CREATE INDEX deliveries_device ON deliveries (device_row, id);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);
-- A server whose mailboxes were empty at the upgrade may already have
-- handed out ids that devices keep as cursors, above anything left in the
-- table. New ids start above 2^32 so they sort after any of those; cursors
-- are opaque 64-bit numbers, so the jump costs nothing.
DELETE FROM sqlite_sequence WHERE name = 'deliveries';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'deliveries', MAX(COALESCE(MAX(id), 0), 4294967296) FROM deliveries;
