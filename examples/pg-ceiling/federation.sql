-- 100 messages relayed from one home server to another, both on this
-- database: the sending daemon accepts them (messages, outbox rows,
-- receipts, idempotency records), its relay marks them sent, the receiving
-- daemon stores them (messages, counters, deliveries, the transaction
-- record), and the sender records the answer (outbox rows removed,
-- receipts relayed, messages removed). Homing runs these in different
-- sessions; run this with two clients. Look-ups are one probe per key.
\set n 100
SELECT nextval('ceiling_ids') AS batch \gset
-- the sending daemon accepts the sends (a group commit)
BEGIN;
SELECT count(*) FROM generate_series(1, :n) g
  WHERE (SELECT 1 FROM send_idempotency i WHERE i.sender_account = 'sender' AND i.message_id = 'f' || :batch || '-' || g) IS NOT NULL;
WITH m AS (
  INSERT INTO messages (origin, message_id, sender_account, sender_device, request_digest, body, delivery_mode, created_at, expires_at)
  SELECT 'home', 'f' || :batch || '-' || g, 'sender', 'a', b.digest, b.body, 'all', 0, 4000000000000
  FROM generate_series(1, :n) g, ceiling_blob b RETURNING id)
INSERT INTO outbox (message_row, destination, recipients, created_at)
  SELECT m.id, 'remote.example', '[{"address":"recipient@remote.example","wraps":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]}]', 0 FROM m;
INSERT INTO delivery_receipts (sender_account, message_id, recipient, state, updated_at)
  SELECT 'sender', 'f' || :batch || '-' || g, 'recipient@remote.example', 'queued', 0 FROM generate_series(1, :n) g;
INSERT INTO send_idempotency (sender_account, message_id, request_digest, response, created_at)
  SELECT 'sender', 'f' || :batch || '-' || g, b.digest, b.response, 0 FROM generate_series(1, :n) g, ceiling_blob b;
COMMIT;
-- its relay reads them and marks them sent
BEGIN;
SELECT count(*), sum(length(body)) FROM (SELECT o.id, m.message_id, m.body FROM outbox o JOIN messages m ON m.id = o.message_row
  WHERE o.destination = 'remote.example' AND o.txn_id IS NULL ORDER BY o.id LIMIT :n) AS batch;
UPDATE outbox SET txn_id = 't' || :batch WHERE destination = 'remote.example' AND txn_id IS NULL;
COMMIT;
-- the receiving daemon stores them (an inbound transaction)
BEGIN;
SELECT count(*) FROM unnest(ARRAY(SELECT 'r' || :batch || '-' || g FROM generate_series(1, :n) g)) AS k(m)
  WHERE (SELECT id FROM messages WHERE origin = 'remote-origin' AND message_id = k.m) IS NOT NULL;
UPDATE devices SET pending_messages = pending_messages + :n, pending_bytes = pending_bytes + 1024 * :n WHERE id = 1;
WITH m AS (
  INSERT INTO messages (origin, message_id, request_digest, body, delivery_mode, created_at, expires_at)
  SELECT 'remote-origin', 'r' || :batch || '-' || g, b.digest, b.body, 'all', 0, 4000000000000
  FROM generate_series(1, :n) g, ceiling_blob b RETURNING id)
INSERT INTO deliveries (message_row, device_row, recipient_account, key_wrap, body_bytes, created_at, expires_at)
  SELECT m.id, 1, 'recipient', b.wrap, 1024, 0, 4000000000000 FROM m, ceiling_blob b RETURNING id;
INSERT INTO inbound_txns (origin, txn_id, request_digest, response, received_at)
  SELECT 'remote-origin', 't' || :batch, b.digest, repeat('r', 2000), 0 FROM ceiling_blob b;
COMMIT;
-- the sender records the answer
BEGIN;
DELETE FROM outbox WHERE txn_id = 't' || :batch;
UPDATE delivery_receipts SET state = 'relayed', updated_at = 1
  WHERE ctid = ANY (ARRAY(SELECT (SELECT ctid FROM delivery_receipts r WHERE r.sender_account = 'sender'
    AND r.message_id = 'f' || :batch || '-' || g AND r.recipient = 'recipient@remote.example') FROM generate_series(1, :n) g))
  AND state = 'queued';
DELETE FROM messages WHERE ctid = ANY (ARRAY(SELECT (SELECT ctid FROM messages m WHERE m.origin = 'home'
    AND m.message_id = 'f' || :batch || '-' || g) FROM generate_series(1, :n) g))
  AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.message_row = messages.id);
COMMIT;
