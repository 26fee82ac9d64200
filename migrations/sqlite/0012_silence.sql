-- liaison schema, version 12: silence is noticed.
--
-- Every running engine records itself in liaison_instances and beats every
-- few seconds (EngineSettings::heartbeat_interval); health reads the rows to
-- tell whether a partner with due work has a live dispatcher (an instance
-- is live until three of its own beat intervals pass without a beat). A
-- graceful shutdown marks the row stopped; rows a day past their last beat
-- are pruned, and the last beat of each partner's engines is kept in
-- liaison_partners.last_served_at, so "no dispatcher since" outlives them.
CREATE TABLE liaison_instances (
    id               TEXT    PRIMARY KEY,
    host             TEXT    NOT NULL,
    pid              INTEGER NOT NULL,
    version          TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    partners         TEXT    NOT NULL,      -- JSON array of partner names
    beat_interval_ms INTEGER NOT NULL,
    last_beat_at     INTEGER NOT NULL,
    stopped_at       INTEGER
) WITHOUT ROWID;
-- pruning
CREATE INDEX liaison_instances_last_beat ON liaison_instances (last_beat_at);

ALTER TABLE liaison_partners ADD COLUMN last_served_at INTEGER;
-- Partner::expect_traffic as the engine last started with it (JSON), so
-- health computed anywhere (the CLI, another instance) checks it too.
ALTER TABLE liaison_partners ADD COLUMN expected_traffic TEXT;

