-- The same as the PostgreSQL migration of this name: when the last failed
-- relay attempt to a destination happened, so an admin can tell a failure
-- of a minute ago from one of last week.
ALTER TABLE destinations ADD COLUMN last_failure_at BIGINT;
