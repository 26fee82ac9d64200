-- liaison schema for PostgreSQL, version 6: retention reads only what it still
-- has to purge.
--
-- The payload purge took its batches from liaison_submissions_terminal
-- (every finished submission by terminal_at) and skipped, row by row, those
-- purged before: each batch walked all purged history again, so a pass grew
-- with the history. The callback body purge had no index on received_at
-- without the partner. Both now read
-- partial indexes that hold only rows still to purge: an entry leaves when
-- its payload or body is removed.
DROP INDEX liaison_submissions_terminal;
CREATE INDEX liaison_submissions_unpurged
    ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL AND payload IS NOT NULL;
CREATE INDEX liaison_callbacks_unpurged
    ON liaison_callbacks (received_at) WHERE body IS NOT NULL;
