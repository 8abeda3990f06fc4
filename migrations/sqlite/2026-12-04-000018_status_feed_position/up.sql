-- Every replica's gateway tails the whole feed in (xid, id) order to send
-- DELIVERY_STATUS with the cursor a device resumes from, so live events
-- and feed reads come in one order.
CREATE INDEX status_feed_position ON status_feed (xid, id);
