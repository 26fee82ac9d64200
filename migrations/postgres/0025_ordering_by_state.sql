-- liaison schema for PostgreSQL, version 25: the ordering index carries the state.
--
-- A claim holds a submission back while an earlier one with the same
-- ordering key is unfinished (queued or in flight; dead-lettered too where
-- that is configured). The index of (partner, ordering_key, seq) made that
-- look read every earlier submission of the key, finished ones included,
-- and each one's row for its state: a claim took ~2 ms for a key with
-- 10,000 submissions behind it and ~28 ms with 100,000, growing with the
-- key's history. With the state in the index the look is one short range
-- per blocking state, whatever the key's history. Lists by ordering key
-- still find the key's submissions through the index's first two columns.
DROP INDEX liaison_submissions_ordering;
CREATE INDEX liaison_submissions_ordering
    ON liaison_submissions (partner, ordering_key, state, seq) WHERE ordering_key IS NOT NULL;
