-- One group commit of 64 sends from one sender to a recipient with two
-- devices, as Homing's writer stores it: the idempotency look-up, the
-- recipient's devices, the counters, 64 messages of 1 KiB, 128 deliveries,
-- the receipts and the idempotency records, then the commit. The rows are
-- made by the server (generate_series), so PostgreSQL parses less than it
-- does for Homing: a ceiling, not a replica of Homing's statements.
-- Look-ups are one probe per key, whatever plan a prepared statement gets.
\set n 64
BEGIN;
SELECT nextval('ceiling_ids') AS batch \gset
SELECT count(*) FROM generate_series(1, :n) g
  WHERE (SELECT 1 FROM send_idempotency i WHERE i.sender_account = 'sender' AND i.message_id = :batch || '-' || g) IS NOT NULL;
SELECT d.id, d.pending_messages, d.pending_bytes FROM accounts a JOIN devices d ON d.account_key = a.account_key
  WHERE a.alias = 'recipient' AND d.revoked_at IS NULL;
UPDATE devices SET pending_messages = pending_messages + :n, pending_bytes = pending_bytes + 1024 * :n
  WHERE account_key = 'recipient';
WITH m AS (
  INSERT INTO messages (origin, message_id, sender_account, sender_device, request_digest, body, delivery_mode, created_at, expires_at)
  SELECT 'bench', :batch || '-' || g, 'sender', 'a', b.digest, b.body, 'store', 0, 4000000000000
  FROM generate_series(1, :n) g, ceiling_blob b RETURNING id)
INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at)
  SELECT m.id, d.id, 'recipient', b.wrap, 1024, 0, 4000000000000
  FROM m, devices d, ceiling_blob b WHERE d.account_key = 'recipient'
  RETURNING id;
INSERT INTO delivery_receipts (sender_account, message_id, recipient, state, updated_at)
  SELECT 'sender', :batch || '-' || g, 'recipient@example.org', 'stored', 0 FROM generate_series(1, :n) g;
INSERT INTO send_idempotency (sender_account, message_id, request_digest, response, created_at)
  SELECT 'sender', :batch || '-' || g, b.digest, b.response, 0 FROM generate_series(1, :n) g, ceiling_blob b;
COMMIT;
