-- The highest device list version seen under the pinned account key of a
-- remote address, so a remote server cannot roll a list back (to bring a
-- revoked device back) once the cached copy has expired or was replaced.
ALTER TABLE remote_identities ADD COLUMN pinned_version BIGINT NOT NULL DEFAULT 0;
