-- liaison schema for PostgreSQL, version 24: a partner's submissions by
-- creation time.
--
-- The ops page's chart counts what a partner's submissions did in the last
-- 24 hours, and a list can ask for what was created since a time. Without
-- this index both read every submission of the table (the query-plan test,
-- src/store/postgres/plans.rs, found the chart's sequential scan); with it
-- they read the window. `created_at` is never updated, so the index costs
-- one entry per enqueue and nothing on later writes.
CREATE INDEX liaison_submissions_created ON liaison_submissions (partner, created_at);
