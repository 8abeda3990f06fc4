DROP TABLE status_feed;
