-- A counter every process bumps, in the same transaction, when it makes a
-- token invalid before its expiry (sign-out, a revoked device, a disabled
-- or deleted account). Daemons cache token checks and watch this one row:
-- when it moves, they forget what they cached. At most one row (id 1); it
-- appears with the first revocation.
CREATE TABLE auth_revocations (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    epoch BIGINT NOT NULL
);
