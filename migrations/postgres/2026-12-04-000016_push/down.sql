DROP TABLE push_keys;
DROP TABLE push_subscriptions;
