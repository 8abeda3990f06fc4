-- Accounts that left (DELETE /api/v1/account): the departure their
-- account key signed, served with 410 in place of the identity so peers
-- stop sending, and the alias kept from being registered again by
-- someone else.
CREATE TABLE departed_accounts (
    alias TEXT PRIMARY KEY,
    account_key TEXT NOT NULL,
    departed_at BIGINT NOT NULL,
    signature TEXT NOT NULL
);
