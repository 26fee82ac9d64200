-- liaison schema for PostgreSQL, version 14: impact in business terms
-- (mirrors migrations/sqlite/0014_impact.sql).
--
-- A submission's business value gets its ISO 4217 currency (NULL: the
-- currency is unspecified) and the submission an optional business
-- deadline (e.g. a claim's timely-filing limit), in milliseconds.
-- The per-(partner, state) counters of migration 3 added every value
-- together whatever its currency: they are rebuilt keyed by currency too
-- ('' for unspecified), from the table, and their trigger function
-- recreated. The ALTER TABLE takes an ACCESS EXCLUSIVE lock on
-- liaison_submissions until the migration commits: no submission is
-- written between the rebuild and the new triggers, so the counts start exact.

ALTER TABLE liaison_submissions ADD COLUMN currency TEXT;
ALTER TABLE liaison_submissions ADD COLUMN business_deadline BIGINT;

-- Open work (not succeeded, cancelled or resolved by hand) by nearest
-- business deadline: per partner for health, across partners for the lists.
CREATE INDEX liaison_submissions_business_deadline
    ON liaison_submissions (partner, business_deadline)
    WHERE business_deadline IS NOT NULL
      AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck', 'failed', 'dead_lettered');
CREATE INDEX liaison_submissions_nearest_deadline
    ON liaison_submissions (business_deadline)
    WHERE business_deadline IS NOT NULL
      AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck', 'failed', 'dead_lettered');

DROP TRIGGER liaison_state_counts_insert ON liaison_submissions;
DROP TRIGGER liaison_state_counts_update ON liaison_submissions;
DROP TRIGGER liaison_state_counts_delete ON liaison_submissions;
DROP FUNCTION liaison_state_counts_track();
DROP FUNCTION liaison_state_counts_add(TEXT, TEXT, BIGINT, BIGINT);
DROP TABLE liaison_state_counts;

CREATE TABLE liaison_state_counts (
    partner  TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    currency TEXT   NOT NULL DEFAULT '',           -- ISO 4217 code, '' unspecified
    n        BIGINT NOT NULL DEFAULT 0,
    value    BIGINT NOT NULL DEFAULT 0,            -- summed business_value, minor units
    PRIMARY KEY (partner, state, currency)
);

INSERT INTO liaison_state_counts (partner, state, currency, n, value)
    SELECT partner, state, COALESCE(currency, ''), COUNT(*), COALESCE(SUM(business_value), 0)
    FROM liaison_submissions GROUP BY partner, state, COALESCE(currency, '');

-- Add (n, value) to one counter (see migration 3 for why the upsert is safe).
CREATE FUNCTION liaison_state_counts_add(p TEXT, s TEXT, c TEXT, dn BIGINT, dv BIGINT)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_counts AS k (partner, state, currency, n, value)
        VALUES (p, s, c, dn, dv)
        ON CONFLICT (partner, state, currency)
        DO UPDATE SET n = k.n + excluded.n, value = k.value + excluded.value;
END;
$$;

-- One submission entered, left or changed state; the partner's counters
-- change under its advisory lock, as in migration 3.
CREATE FUNCTION liaison_state_counts_track() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1818820612, hashtext(COALESCE(NEW.partner, OLD.partner)));
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM liaison_state_counts_add(OLD.partner, OLD.state, COALESCE(OLD.currency, ''),
                                         -1, -COALESCE(OLD.business_value, 0));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM liaison_state_counts_add(NEW.partner, NEW.state, COALESCE(NEW.currency, ''),
                                         1, COALESCE(NEW.business_value, 0));
    END IF;
    RETURN NULL;
END;
$$;

-- Deferred to commit, as in migration 3.
CREATE CONSTRAINT TRIGGER liaison_state_counts_insert
    AFTER INSERT ON liaison_submissions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION liaison_state_counts_track();
CREATE CONSTRAINT TRIGGER liaison_state_counts_update
    AFTER UPDATE OF state ON liaison_submissions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION liaison_state_counts_track();
CREATE CONSTRAINT TRIGGER liaison_state_counts_delete
    AFTER DELETE ON liaison_submissions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION liaison_state_counts_track();
