DROP TABLE departed_accounts;
