DROP TABLE outbound_recalls;
