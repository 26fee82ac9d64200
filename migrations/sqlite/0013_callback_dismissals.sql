-- liaison schema, version 13: quarantined callbacks are dismissed by an
-- operator, and the quarantine is counted per partner cheaply.
--
-- A dismissed callback's disposition becomes 'dismissed' (so the quarantine
-- stays one test of the disposition); who dismissed it, when, why and what
-- it was before are kept in these columns, also when it is reprocessed
-- afterwards.
ALTER TABLE liaison_callbacks ADD COLUMN dismissed_by     TEXT;
ALTER TABLE liaison_callbacks ADD COLUMN dismissed_at     INTEGER;
ALTER TABLE liaison_callbacks ADD COLUMN dismissed_reason TEXT;
ALTER TABLE liaison_callbacks ADD COLUMN dismissed_from   TEXT;

-- Health and alerts count each partner's quarantined callbacks by
-- disposition on every evaluation: an index holding only the quarantine,
-- by partner, serves that count without reading the table. (The list must
-- stay the same as Disposition::QUARANTINED, in its order: the statement
-- repeats it so that SQLite can use this partial index.)
CREATE INDEX liaison_callbacks_quarantine ON liaison_callbacks (partner, disposition)
    WHERE disposition IN ('malformed', 'rejected', 'expired', 'conflicting');
