-- liaison schema for PostgreSQL, version 23: nothing to change.
--
-- On SQLite this version moves the state counters from per-row triggers to
-- the writes themselves. PostgreSQL's counters are already appended once per
-- statement (version 18), so its schema stays as it is; the version is kept
-- so both stores count their migrations alike.
SELECT 1;
