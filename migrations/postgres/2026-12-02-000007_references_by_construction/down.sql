ALTER TABLE deliveries ADD CONSTRAINT deliveries_message_row_fkey
    FOREIGN KEY (message_row) REFERENCES messages (id) ON DELETE CASCADE;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_device_row_fkey
    FOREIGN KEY (device_row) REFERENCES devices (id) ON DELETE CASCADE;
ALTER TABLE outbox ADD CONSTRAINT outbox_message_row_fkey
    FOREIGN KEY (message_row) REFERENCES messages (id) ON DELETE CASCADE;
