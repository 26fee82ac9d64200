-- liaison schema for PostgreSQL, version 11: poison submissions end.
--
-- An expired lease counts as an attempt, and after a number of leases in a
-- row that ended without a report (the worker crashed or hung on the
-- submission) it is dead-lettered instead of returned to the queue.
-- lease_expiries is that count: the reaper sets it, a reported result, a
-- cancel or a replay sets it back to 0. A dead-lettered row with a count
-- above 0 was dead-lettered by the reaper ("worker crashed"); the partial
-- index counts those per partner for health without reading other rows.
-- (A constant default: no table rewrite.)
ALTER TABLE liaison_submissions ADD COLUMN lease_expiries INTEGER NOT NULL DEFAULT 0;
CREATE INDEX liaison_submissions_worker_crashed ON liaison_submissions (partner)
    WHERE state = 'dead_lettered' AND lease_expiries > 0;
