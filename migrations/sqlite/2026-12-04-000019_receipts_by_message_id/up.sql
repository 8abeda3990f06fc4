-- Message ids are chosen by clients, and once a message has left this
-- server another local sender may use the same id. A recall relayed to a
-- peer names only this server and the id, so before relaying one the
-- server checks that no other sender here used that id: by this index.
CREATE INDEX delivery_receipts_message ON delivery_receipts (message_id);
