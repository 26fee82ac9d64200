-- liaison schema for SQLite, version 24: nothing to change.
--
-- On PostgreSQL this version adds an index of (partner, created_at) for the
-- ops page's chart, which the planner otherwise serves with a read of the
-- whole table. SQLite already reads the chart through the partner's
-- (partner, state) index; one more index entry per enqueue is the cost the
-- SQLite store avoids (docs/performance.md, 8g). The version is kept so
-- both stores count their migrations alike.
SELECT 1;
