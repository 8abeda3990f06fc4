CREATE TABLE deliveries_with_keys (
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
INSERT INTO deliveries_with_keys
    (id, message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at)
SELECT id, message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at
FROM deliveries;
CREATE TEMPORARY TABLE deliveries_sequence AS
    SELECT seq FROM sqlite_sequence WHERE name = 'deliveries';
DROP TABLE deliveries;
ALTER TABLE deliveries_with_keys RENAME TO deliveries;
DELETE FROM sqlite_sequence WHERE name IN ('deliveries', 'deliveries_with_keys');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'deliveries', MAX(COALESCE((SELECT MAX(seq) FROM deliveries_sequence), 0),
                         COALESCE((SELECT MAX(id) FROM deliveries), 0));
DROP TABLE deliveries_sequence;
CREATE INDEX deliveries_device ON deliveries (device_row, id);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);

CREATE TABLE outbox_with_keys (
    id INTEGER PRIMARY KEY NOT NULL,
    message_row BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    txn_id TEXT,
    UNIQUE (message_row, destination)
);
INSERT INTO outbox_with_keys
    (id, message_row, destination, recipients, created_at, txn_id)
SELECT id, message_row, destination, recipients, created_at, txn_id FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_with_keys RENAME TO outbox;
CREATE INDEX outbox_destination ON outbox (destination, id);
CREATE INDEX outbox_unsent ON outbox (destination, id) WHERE txn_id IS NULL;
CREATE INDEX outbox_sent ON outbox (destination, id) WHERE txn_id IS NOT NULL;
