-- The purge finds devices gone silent by when they were last seen, then
-- their deliveries by device; without this it joined every pending
-- delivery to its device on each pass (seconds on a server holding
-- millions of deliveries).
CREATE INDEX devices_last_seen ON devices (last_seen_at);
