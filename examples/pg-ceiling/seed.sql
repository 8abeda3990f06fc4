-- A sender, a recipient with two devices, a 1 KiB body and an 80-byte key
-- wrap (random bytes), and a destination for the relay.
INSERT INTO accounts (account_key, alias, created_at, device_list_version, device_list, device_list_signature)
VALUES ('sender', 'sender', 0, 1, '\x00', '\x00'), ('recipient', 'recipient', 0, 1, '\x00', '\x00');
INSERT INTO devices (account_key, device_id, sign_key, box_key, certificate, certificate_signature, created_at, last_seen_at)
VALUES ('recipient', 'a', '\x01', '\x01', '\x00', '\x00', 0, 0),
       ('recipient', 'b', '\x02', '\x02', '\x00', '\x00', 0, 0),
       ('sender', 'a', '\x03', '\x03', '\x00', '\x00', 0, 0);
CREATE TABLE ceiling_blob (body BYTEA NOT NULL, wrap BYTEA NOT NULL, digest BYTEA NOT NULL, response TEXT NOT NULL);
INSERT INTO ceiling_blob
SELECT decode((SELECT string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), '') FROM generate_series(1, 1024)), 'hex'),
       decode((SELECT string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), '') FROM generate_series(1, 80)), 'hex'),
       decode((SELECT string_agg(lpad(to_hex((random() * 255)::int), 2, '0'), '') FROM generate_series(1, 32)), 'hex'),
       repeat('x', 120);
CREATE SEQUENCE ceiling_ids;
INSERT INTO destinations (server_name) VALUES ('remote.example');
