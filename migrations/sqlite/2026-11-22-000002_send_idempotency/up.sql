-- The first answer to each local send, so a retried send (same sender, same
-- message id) is answered from here even after the message was purged.
CREATE TABLE send_idempotency (
    sender_account TEXT NOT NULL,
    message_id TEXT NOT NULL,
    request_digest BLOB NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sender_account, message_id)
);
CREATE INDEX send_idempotency_age ON send_idempotency (created_at);
