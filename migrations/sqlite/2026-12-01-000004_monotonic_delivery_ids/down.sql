CREATE TABLE deliveries_reusable (
    id INTEGER PRIMARY KEY NOT NULL,
    message_row BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_row BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    recipient_account TEXT NOT NULL,
    key_wrap BLOB NOT NULL,
    body_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (message_row, device_row)
);
INSERT INTO deliveries_reusable SELECT * FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_reusable RENAME TO deliveries;
CREATE INDEX deliveries_device ON deliveries (device_row, id);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);
