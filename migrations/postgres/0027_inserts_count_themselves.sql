-- liaison schema for PostgreSQL, version 27: a new submission counted by
-- the statement that inserts it.
--
-- Since version 18 a statement-level trigger appended each insert's net
-- change to liaison_state_deltas. For an enqueue of one submission its
-- fixed cost (the transition table, the PL/pgSQL call, its GROUP BY) was
-- some 8% of the server's time (docs/performance.md, P1). From this
-- version the store's own inserts append their delta themselves, in the
-- same statement, and mark their rows `counted`. The trigger stays for
-- every other insert: a host instance of an earlier build still running
-- against this schema (its INSERT does not name the column, so the row is
-- not marked), or a host's or a tool's own SQL. It is row-level now, with
-- a WHEN: a marked row costs the condition and nothing else.
--
-- Adding a column with a constant default rewrites no rows. The switch
-- runs in the migration's transaction, which holds liaison_submissions'
-- ACCESS EXCLUSIVE lock from the ALTER TABLE to its commit: no row is
-- inserted between the old trigger and the new one.

ALTER TABLE liaison_submissions ADD COLUMN counted BOOLEAN NOT NULL DEFAULT FALSE;

DROP TRIGGER liaison_state_deltas_insert ON liaison_submissions;
DROP FUNCTION liaison_state_deltas_insert();

CREATE FUNCTION liaison_state_deltas_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_deltas (partner, state, currency, n, value)
        VALUES (NEW.partner, NEW.state, COALESCE(NEW.currency, ''), 1,
                COALESCE(NEW.business_value, 0));
    RETURN NULL;
END;
$$;

CREATE TRIGGER liaison_state_deltas_insert
    AFTER INSERT ON liaison_submissions
    FOR EACH ROW WHEN (NOT NEW.counted)
    EXECUTE FUNCTION liaison_state_deltas_insert();
