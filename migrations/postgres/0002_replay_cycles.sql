-- liaison schema for PostgreSQL, version 2: replays start a fresh retry budget.
-- A replay keeps the attempt numbering (attempt rows are never rewritten) but
-- retry limits count attempts and age from the start of the current cycle.
ALTER TABLE liaison_submissions ADD COLUMN replays INTEGER NOT NULL DEFAULT 0;
ALTER TABLE liaison_submissions ADD COLUMN attempts_before_cycle INTEGER NOT NULL DEFAULT 0;
ALTER TABLE liaison_submissions ADD COLUMN cycle_started_at BIGINT;
