-- liaison schema, version 21: a partner's concurrency is shared fairly
-- between its claimers.
--
-- A claimer the concurrency refused is recorded on the partner's row as
-- waiting (a short JSON list: who, since when, until when the record lives
-- unless renewed); while others wait, a claimer that holds its share of
-- the slots gets no more. Written only in a claim's transaction, under the
-- partner row's lock. NULL: nobody waits.
ALTER TABLE liaison_partners ADD COLUMN limit_waiters TEXT;
