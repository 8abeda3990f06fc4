-- Web Push (RFC 8030, 8291, 8292): one subscription per device, set by the
-- device itself, and the wake-up it is owed. A subscription row is also
-- the push queue: `due_at` is when a wake-up should go out (NULL: none
-- owed), so pushes to one device coalesce into one row and survive a
-- restart; `attempts` counts failed tries for back-off; `lease_until`
-- keeps two replicas from sending the same wake-up.
CREATE TABLE push_subscriptions (
    device_row BIGINT PRIMARY KEY NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    endpoint TEXT NOT NULL,
    p256dh BYTEA NOT NULL,
    auth BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    due_at BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_push_at BIGINT,
    pushed_cursor BIGINT,
    lease_until BIGINT
);
CREATE INDEX push_subscriptions_due ON push_subscriptions (due_at) WHERE due_at IS NOT NULL;

-- The server's VAPID key (P-256), shared by every replica like the
-- signing key; its public half is in server-info for browsers to
-- subscribe with.
CREATE TABLE push_keys (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    secret_key BYTEA NOT NULL,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
