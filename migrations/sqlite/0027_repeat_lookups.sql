-- liaison schema for SQLite, version 27: nothing to change.
--
-- On PostgreSQL this version puts `seq` at the end of the indexes of a
-- callback's event id and body hash, so the lookup for the earliest earlier
-- delivery reads its answer first. An SQLite index already ends with the
-- rowid (`seq`), so these indexes are in that order here. The version is
-- kept so both stores count their migrations alike.
SELECT 1;
