-- liaison schema, version 18: one name for the counts by state on both
-- stores (mirrors migrations/postgres/0018_no_hot_rows.sql).
--
-- PostgreSQL stops keeping one shared counter row per (partner, state,
-- currency) in every transaction: there, statements append deltas that are
-- folded into liaison_state_counts later, and liaison_state_totals sums
-- both. SQLite has one writer at a time, so its trigger-kept counters are
-- no hot spot and stay as they are; the view gives them the same name.
CREATE VIEW liaison_state_totals AS
    SELECT partner, state, currency, n, value FROM liaison_state_counts;
