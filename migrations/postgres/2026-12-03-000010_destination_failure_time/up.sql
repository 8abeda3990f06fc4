-- When the last failed relay attempt to a destination happened (Unix ms),
-- so an admin can tell a failure of a minute ago from one of last week.
-- It stays after a success, beside `last_success_at`; `last_error` goes.
ALTER TABLE destinations ADD COLUMN last_failure_at BIGINT;
