DROP TABLE send_idempotency;
