-- Deliveries and outbox rows are written only in the statement that writes
-- their message, joined to it and to the counter update that locks their
-- device, and removed only by Homing's own deletes (an ack, a purge, a
-- revocation, an account deletion, a relay answer); a message goes only
-- once nothing refers to it. So these keys checked what holds by
-- construction, at a price: each checked row ran a query of its own,
-- 7 to 8 microseconds apiece, close to half of storing an inbound
-- transaction. See federation-spec/storage.md.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_row_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_device_row_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_message_row_fkey;
