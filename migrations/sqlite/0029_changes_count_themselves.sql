-- liaison schema for SQLite, version 29: nothing to change.
--
-- On PostgreSQL this version has the store's state changes append their
-- own state-count deltas instead of a trigger comparing every update's
-- rows. SQLite's counts are kept by the writes themselves since version 23;
-- the version is kept so both stores count their migrations alike.
SELECT 1;
