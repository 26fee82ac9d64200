-- liaison schema for PostgreSQL, version 26: nothing to change.
--
-- On SQLite this version adds the index of (partner, created_at) that
-- PostgreSQL has had since version 24. The version is kept so both stores
-- count their migrations alike.
SELECT 1;
