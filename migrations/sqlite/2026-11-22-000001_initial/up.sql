-- Homing's schema for the whole protocol. Timestamps are Unix milliseconds.
-- Keep in step with migrations/postgres and src/storage/schema.rs (a test
-- compares them).

-- One row per identity. The account key (base64url ed25519) is the global id.
CREATE TABLE accounts (
    account_key TEXT PRIMARY KEY NOT NULL,
    alias TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT,
    -- NULL: purge on ack; otherwise keep acked mail this long (capped by the server).
    retention_keep_ms BIGINT,
    device_list_version BIGINT NOT NULL,
    -- The signed device list exactly as the account key signed it.
    device_list BLOB NOT NULL,
    device_list_signature BLOB NOT NULL
);

CREATE TABLE devices (
    id INTEGER PRIMARY KEY NOT NULL,
    account_key TEXT NOT NULL REFERENCES accounts (account_key) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    sign_key BLOB NOT NULL,
    box_key BLOB NOT NULL,
    certificate BLOB NOT NULL,
    certificate_signature BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT,
    -- Counters kept in the send/ack transactions so quotas cost one row read.
    pending_messages BIGINT NOT NULL DEFAULT 0,
    pending_bytes BIGINT NOT NULL DEFAULT 0,
    UNIQUE (account_key, device_id)
);
CREATE UNIQUE INDEX devices_sign_key ON devices (sign_key);

CREATE TABLE auth_challenges (
    nonce BLOB PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_challenges_expiry ON auth_challenges (expires_at);

CREATE TABLE auth_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    device_row BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_tokens_device ON auth_tokens (device_row);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);

CREATE TABLE invites (
    invite_id TEXT PRIMARY KEY NOT NULL,
    code_hash BLOB NOT NULL UNIQUE,
    max_uses INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);

-- A one-time rendezvous for linking a new device to an account.
CREATE TABLE device_links (
    link_id TEXT PRIMARY KEY NOT NULL,
    request BLOB NOT NULL,
    response BLOB,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX device_links_expiry ON device_links (expires_at);

-- A message body, stored once per server however many devices it targets.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY NOT NULL,
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    -- Known only for local senders; inbound federated mail is sealed-sender.
    sender_account TEXT,
    sender_device TEXT,
    request_digest BLOB NOT NULL,
    body BLOB NOT NULL,
    delivery_mode TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (origin, message_id)
);
CREATE INDEX messages_expiry ON messages (expires_at);

-- One row per target device: the mailbox. Its id is the sync cursor.
CREATE TABLE deliveries (
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
CREATE INDEX deliveries_device ON deliveries (device_row, id);
CREATE INDEX deliveries_expiry ON deliveries (expires_at);

-- What a local sender can learn about each recipient of its message.
CREATE TABLE delivery_receipts (
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (sender_account, message_id, recipient)
);
CREATE INDEX delivery_receipts_age ON delivery_receipts (updated_at);

-- Relay work: one row per (message, destination server), written with the message.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY NOT NULL,
    message_row BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (message_row, destination)
);
CREATE INDEX outbox_destination ON outbox (destination, id);

-- Back-off and lease state per destination server.
CREATE TABLE destinations (
    server_name TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_success_at BIGINT,
    lease_owner TEXT,
    lease_expires_at BIGINT
);

-- Inbound transactions, remembered so a retried txn gets the same answer.
CREATE TABLE inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    response TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX inbound_txns_age ON inbound_txns (received_at);

-- Signature nonces seen inside their validity window (replay protection).
CREATE TABLE federation_nonces (
    origin TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (origin, nonce)
);
CREATE INDEX federation_nonces_expiry ON federation_nonces (expires_at);

-- This server's signing keys; exactly one is current.
CREATE TABLE server_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    public_key BLOB NOT NULL,
    secret_key BLOB NOT NULL,
    is_current BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE UNIQUE INDEX server_keys_one_current ON server_keys (is_current) WHERE is_current;

-- Other servers' public keys, cached at most seven days.
CREATE TABLE peer_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key BLOB NOT NULL,
    valid_until BIGINT NOT NULL,
    fetched_at BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- Server name -> where to connect, with failures cached too.
CREATE TABLE resolution_cache (
    server_name TEXT PRIMARY KEY NOT NULL,
    target TEXT,
    error TEXT,
    resolved_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Remote identities fetched for local clients, with the pinned account key.
CREATE TABLE remote_identities (
    address TEXT PRIMARY KEY NOT NULL,
    account_key TEXT NOT NULL,
    document TEXT NOT NULL,
    pinned_account_key TEXT NOT NULL,
    key_changed_at BIGINT,
    fetched_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Admin federation policy set at run time (in addition to the config file).
CREATE TABLE federation_rules (
    server_name TEXT PRIMARY KEY NOT NULL,
    rule TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
