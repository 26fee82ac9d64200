-- liaison schema for SQLite, version 26: a partner's submissions by
-- creation time, as on PostgreSQL since version 24.
--
-- The ops page's chart (a partner's last 24 hours) and a list filtered by
-- partner and `created_from` walked every submission of the partner: at
-- 1,000,000 the list took ~300 ms. With this index both read the window.
-- `created_at` and `partner` never change, so it costs one entry per
-- enqueue (and its removal with the row), nothing on later writes.
CREATE INDEX liaison_submissions_created ON liaison_submissions (partner, created_at);
