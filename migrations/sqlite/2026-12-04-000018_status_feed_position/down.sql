DROP INDEX status_feed_position;
