DROP INDEX delivery_receipts_message;
