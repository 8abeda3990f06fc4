ALTER TABLE remote_identities DROP COLUMN pinned_version;
