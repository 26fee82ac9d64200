-- liaison schema for PostgreSQL, version 27: the lookups for an earlier
-- delivery of a callback read the earliest match first.
--
-- Settling a callback looks for the first earlier callback of the partner
-- with the same event id, then with the same body (`ORDER BY seq LIMIT 1`).
-- With (partner, event_id) and (partner, body_hash) alone, the planner may
-- walk the primary key in `seq` order instead and filter each row, which
-- reads the whole table when nothing matches, as for almost every callback
-- (measured in benchmark scenario P4 on a schema not yet analysed: some
-- 1,700 pages per lookup). With `seq` in these indexes the first entry is
-- the answer, and no plan that walks the table can be cheaper.
DROP INDEX liaison_callbacks_event;
CREATE INDEX liaison_callbacks_event
    ON liaison_callbacks (partner, event_id, seq) WHERE event_id IS NOT NULL;
DROP INDEX liaison_callbacks_hash;
CREATE INDEX liaison_callbacks_hash ON liaison_callbacks (partner, body_hash, seq);
