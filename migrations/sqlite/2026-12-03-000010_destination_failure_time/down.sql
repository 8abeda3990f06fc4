ALTER TABLE destinations DROP COLUMN last_failure_at;
