DROP INDEX devices_last_seen;
