-- liaison schema for PostgreSQL, version 18: no shared counter row and no
-- database-wide notification lock per transaction (mirrors
-- migrations/sqlite/0018_no_hot_rows.sql).
--
-- Until now a trigger deferred to commit added every change to one
-- liaison_state_counts row per (partner, state, currency), under an
-- advisory lock per partner held through the commit's WAL flush: every
-- enqueue, claim and completion of one partner committed one after the
-- other. From here on a statement that inserts, updates or deletes
-- submissions appends its net change per (partner, state, currency) to
-- liaison_state_deltas (insert only: no row is shared, nothing waits), and
-- liaison_state_counts holds what was folded so far.
-- liaison_state_counts_fold() moves the committed deltas into the counts
-- (the store calls it before a health read and from the lease reaper's
-- pass); liaison_state_totals sums both, so a read in one snapshot is
-- exact whether or not a fold ran.
--
-- The switch runs in the migration's transaction, which holds an ACCESS
-- EXCLUSIVE lock on liaison_submissions from the first DROP TRIGGER to its
-- commit: no submission changes between the old trigger and the new ones,
-- so the counts stay exact.

DROP TRIGGER liaison_state_counts_insert ON liaison_submissions;
DROP TRIGGER liaison_state_counts_update ON liaison_submissions;
DROP TRIGGER liaison_state_counts_delete ON liaison_submissions;
DROP FUNCTION liaison_state_counts_track();
DROP FUNCTION liaison_state_counts_add(TEXT, TEXT, TEXT, BIGINT, BIGINT);

-- No index: the fold keeps it to the changes of the last few seconds.
CREATE TABLE liaison_state_deltas (
    partner  TEXT   NOT NULL,
    state    TEXT   NOT NULL,
    currency TEXT   NOT NULL,
    n        BIGINT NOT NULL,
    value    BIGINT NOT NULL
);

CREATE FUNCTION liaison_state_deltas_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_deltas (partner, state, currency, n, value)
        SELECT partner, state, COALESCE(currency, ''), COUNT(*), COALESCE(SUM(business_value), 0)
        FROM new_rows GROUP BY 1, 2, 3;
    RETURN NULL;
END;
$$;

CREATE FUNCTION liaison_state_deltas_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_deltas (partner, state, currency, n, value)
        SELECT partner, state, COALESCE(currency, ''), -COUNT(*), -COALESCE(SUM(business_value), 0)
        FROM old_rows GROUP BY 1, 2, 3;
    RETURN NULL;
END;
$$;

-- Only rows whose state (or counted value) changed count; most updates
-- change none of them and insert nothing.
CREATE FUNCTION liaison_state_deltas_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_deltas (partner, state, currency, n, value)
        SELECT partner, state, currency, SUM(n), SUM(value) FROM (
            SELECT o.partner, o.state, COALESCE(o.currency, '') AS currency,
                   -1 AS n, -COALESCE(o.business_value, 0) AS value
            FROM old_rows o JOIN new_rows w ON w.seq = o.seq
            WHERE (o.state, o.currency, o.business_value, o.partner)
                  IS DISTINCT FROM (w.state, w.currency, w.business_value, w.partner)
            UNION ALL
            SELECT w.partner, w.state, COALESCE(w.currency, ''), 1, COALESCE(w.business_value, 0)
            FROM old_rows o JOIN new_rows w ON w.seq = o.seq
            WHERE (o.state, o.currency, o.business_value, o.partner)
                  IS DISTINCT FROM (w.state, w.currency, w.business_value, w.partner)
        ) c
        GROUP BY 1, 2, 3 HAVING SUM(n) <> 0 OR SUM(value) <> 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER liaison_state_deltas_insert
    AFTER INSERT ON liaison_submissions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION liaison_state_deltas_insert();
CREATE TRIGGER liaison_state_deltas_update
    AFTER UPDATE ON liaison_submissions REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION liaison_state_deltas_update();
CREATE TRIGGER liaison_state_deltas_delete
    AFTER DELETE ON liaison_submissions REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION liaison_state_deltas_delete();

-- Move the committed deltas into the counts; one fold at a time per
-- schema (another caller returns at once). Returns the delta rows folded.
CREATE FUNCTION liaison_state_counts_fold() RETURNS BIGINT
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    folded BIGINT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1818820612, hashtext(current_schema())) THEN
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM liaison_state_deltas RETURNING partner, state, currency, n, value
    ), summed AS (
        SELECT partner, state, currency, SUM(n)::BIGINT AS n, SUM(value)::BIGINT AS value,
               COUNT(*) AS rows
        FROM gone GROUP BY 1, 2, 3
    ), upserted AS (
        -- Runs to completion whether or not the SELECT below reads it.
        INSERT INTO liaison_state_counts AS k (partner, state, currency, n, value)
            SELECT partner, state, currency, n, value FROM summed
            ON CONFLICT (partner, state, currency)
            DO UPDATE SET n = k.n + excluded.n, value = k.value + excluded.value
    )
    SELECT COALESCE(SUM(rows), 0)::BIGINT INTO folded FROM summed;
    RETURN folded;
END;
$$;

-- What health reads: the folded counts plus the deltas not folded yet.
CREATE VIEW liaison_state_totals AS
    SELECT partner, state, currency, SUM(n)::BIGINT AS n, SUM(value)::BIGINT AS value
    FROM (SELECT partner, state, currency, n, value FROM liaison_state_counts
          UNION ALL
          SELECT partner, state, currency, n, value FROM liaison_state_deltas) c
    GROUP BY partner, state, currency;

-- The wake-up hint of migration 5 costs every transaction that sends it a
-- database-wide lock held through its commit (PostgreSQL writes
-- notifications in commit order), so concurrent enqueues committed one at
-- a time. The store's own connections set liaison.quiet and send the hints
-- themselves after commit, a few at a time; a host's transactions
-- (enqueue_in_transaction) still notify from here.
DROP TRIGGER liaison_submissions_wake ON liaison_submissions;
CREATE TRIGGER liaison_submissions_wake
    AFTER INSERT OR UPDATE OF state, due_at ON liaison_submissions
    FOR EACH ROW
    WHEN (NEW.state = 'queued'
          AND NEW.due_at <= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
          AND current_setting('liaison.quiet', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION liaison_wake_submission();

-- Due work in exactly the claim's order (priority, due time, enqueue
-- order): the claim reads its batch off the index instead of sorting every
-- due row that shares a due time (an enqueue_batch gives hundreds one due
-- time), which cost each claim a sort of that whole group.
DROP INDEX liaison_submissions_due;
CREATE INDEX liaison_submissions_due
    ON liaison_submissions (partner, priority DESC, due_at, seq) WHERE state = 'queued';
