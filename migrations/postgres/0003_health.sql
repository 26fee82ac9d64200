-- liaison schema for PostgreSQL, version 3: what health needs without
-- scanning history (mirrors migrations/sqlite/0003_health.sql).
-- Counts and business value per (partner, state), kept exact by a trigger,
-- so health costs the same with a million finished submissions as with none.
-- accepted_at records when the partner accepted (for enqueue->accepted latency).

-- This takes an ACCESS EXCLUSIVE lock on liaison_submissions until the
-- migration commits: no submission is written between the backfills below
-- and the trigger, so the counts start exact.
ALTER TABLE liaison_submissions ADD COLUMN accepted_at BIGINT;
UPDATE liaison_submissions s SET accepted_at = e.first_at
    FROM (SELECT submission_id, MIN(at) AS first_at FROM liaison_events
          WHERE kind = 'accepted' GROUP BY submission_id) e
    WHERE e.submission_id = s.id;
CREATE INDEX liaison_submissions_accepted
    ON liaison_submissions (partner, accepted_at) WHERE accepted_at IS NOT NULL;
CREATE INDEX liaison_submissions_partner_terminal
    ON liaison_submissions (partner, terminal_at) WHERE terminal_at IS NOT NULL;

CREATE TABLE liaison_state_counts (
    partner TEXT   NOT NULL,
    state   TEXT   NOT NULL,
    n       BIGINT NOT NULL DEFAULT 0,
    value   BIGINT NOT NULL DEFAULT 0,            -- summed business_value, minor units
    PRIMARY KEY (partner, state)
);

INSERT INTO liaison_state_counts (partner, state, n, value)
    SELECT partner, state, COUNT(*), COALESCE(SUM(business_value), 0)
    FROM liaison_submissions GROUP BY partner, state;

-- Add (n, value) to one counter. The upsert is safe under concurrency: two
-- transactions creating the same counter row do not both insert, and
-- increments on an existing row wait for each other's row lock.
CREATE FUNCTION liaison_state_counts_add(p TEXT, s TEXT, dn BIGINT, dv BIGINT)
RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO liaison_state_counts AS c (partner, state, n, value)
        VALUES (p, s, dn, dv)
        ON CONFLICT (partner, state)
        DO UPDATE SET n = c.n + excluded.n, value = c.value + excluded.value;
END;
$$;

-- One submission entered, left or changed state. The partner's counters
-- change under one advisory lock per partner (class 0x6C690004, the key
-- hashed as the store's other advisory locks are), so transactions touching
-- different states of one partner in different orders (a completion whose
-- early callback then applies, and a synchronous failure) cannot deadlock
-- on the counter rows.
CREATE FUNCTION liaison_state_counts_track() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1818820612, hashtext(COALESCE(NEW.partner, OLD.partner)));
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM liaison_state_counts_add(OLD.partner, OLD.state, -1, -COALESCE(OLD.business_value, 0));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM liaison_state_counts_add(NEW.partner, NEW.state, 1, COALESCE(NEW.business_value, 0));
    END IF;
    RETURN NULL;
END;
$$;

-- Deferred to commit: a transaction takes a partner's counter lock only as
-- it commits, after all its other work, so writers of one partner wait for
-- each other's commit only, not for whole transactions (a claim's attempts
-- and events, a host's own work around enqueue_in_transaction), and the lock
-- comes after every other lock the store takes. The functions' search_path
-- is pinned above because a host's transaction commits under the host's own
-- search_path.
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
