-- PostgreSQL sequences never hand out an id twice; the SQLite migration of
-- the same name makes delivery ids monotonic there too.
SELECT 1;
