-- liaison schema for PostgreSQL, version 29: a state change counted by the
-- statement that makes it.
--
-- Since version 18 a statement-level trigger compared every update's old
-- and new rows (two transition tables of whole rows, joined) and appended
-- the net change of the counted columns to liaison_state_deltas. For a
-- no-op drain that was 6-9% of the engine's speed (docs/performance.md,
-- "P3's write set, modelled"). From this version the store's own state
-- changes (a claim, a batch of results, any change it decides) append
-- their delta themselves, in the same statement, and flip `counted` on the
-- rows they change: that marks the update as counted. The trigger stays
-- for every other update, which leaves `counted` as it was: a host instance
-- of an earlier build still running against this schema, or a host's or a
-- tool's own SQL. It is row-level now, with a WHEN: an update that changes
-- no counted column, or that counted itself, costs the condition and
-- nothing else.
--
-- The switch runs in the migration's transaction, which holds
-- liaison_submissions' ACCESS EXCLUSIVE lock from the DROP TRIGGER to its
-- commit: no row changes between the old trigger and the new one.

DROP TRIGGER liaison_state_deltas_update ON liaison_submissions;
DROP FUNCTION liaison_state_deltas_update();

CREATE FUNCTION liaison_state_deltas_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_deltas (partner, state, currency, n, value) VALUES
        (OLD.partner, OLD.state, COALESCE(OLD.currency, ''), -1, -COALESCE(OLD.business_value, 0)),
        (NEW.partner, NEW.state, COALESCE(NEW.currency, ''), 1, COALESCE(NEW.business_value, 0));
    RETURN NULL;
END;
$$;

CREATE TRIGGER liaison_state_deltas_update
    AFTER UPDATE ON liaison_submissions
    FOR EACH ROW WHEN (OLD.counted = NEW.counted
        AND (OLD.state, OLD.currency, OLD.business_value, OLD.partner)
            IS DISTINCT FROM (NEW.state, NEW.currency, NEW.business_value, NEW.partner))
    EXECUTE FUNCTION liaison_state_deltas_update();
