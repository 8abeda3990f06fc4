-- Recalls to relay (DELETE /api/v1/dms/{message_id} of mail that left
-- this server): one per message and destination, naming the recipients
-- there. The relay's worker for the destination sends them once every
-- transaction before them is answered, so a recall never overtakes the
-- message it recalls; failures back off with the destination's mail.
CREATE TABLE outbound_recalls (
    destination TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender_account TEXT NOT NULL,
    recipients TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (destination, message_id)
);
