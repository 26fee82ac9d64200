-- liaison schema, version 3: what health needs without scanning history.
-- Counts and business value per (partner, state), kept exact by triggers, so
-- health costs the same with a million finished submissions as with none.
-- accepted_at records when the partner accepted (for enqueue->accepted latency).

ALTER TABLE liaison_submissions ADD COLUMN accepted_at INTEGER;
UPDATE liaison_submissions SET accepted_at = (
    SELECT MIN(e.at) FROM liaison_events e
    WHERE e.submission_id = liaison_submissions.id AND e.kind = 'accepted');
CREATE INDEX liaison_submissions_accepted
    ON liaison_submissions (partner, accepted_at) WHERE accepted_at IS NOT NULL;
CREATE INDEX liaison_submissions_partner_terminal
    ON liaison_submissions (partner, terminal_at) WHERE terminal_at IS NOT NULL;

CREATE TABLE liaison_state_counts (
    partner TEXT    NOT NULL,
    state   TEXT    NOT NULL,
    n       INTEGER NOT NULL DEFAULT 0,
    value   INTEGER NOT NULL DEFAULT 0,           -- summed business_value, minor units
    PRIMARY KEY (partner, state)
) WITHOUT ROWID;

INSERT INTO liaison_state_counts (partner, state, n, value)
    SELECT partner, state, COUNT(*), COALESCE(SUM(business_value), 0)
    FROM liaison_submissions GROUP BY partner, state;

CREATE TRIGGER liaison_state_counts_insert AFTER INSERT ON liaison_submissions BEGIN
    INSERT INTO liaison_state_counts (partner, state, n, value)
        VALUES (NEW.partner, NEW.state, 1, COALESCE(NEW.business_value, 0))
        ON CONFLICT (partner, state) DO UPDATE SET n = n + 1, value = value + excluded.value;
END;

CREATE TRIGGER liaison_state_counts_update AFTER UPDATE OF state ON liaison_submissions
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE liaison_state_counts SET n = n - 1, value = value - COALESCE(OLD.business_value, 0)
        WHERE partner = OLD.partner AND state = OLD.state;
    INSERT INTO liaison_state_counts (partner, state, n, value)
        VALUES (NEW.partner, NEW.state, 1, COALESCE(NEW.business_value, 0))
        ON CONFLICT (partner, state) DO UPDATE SET n = n + 1, value = value + excluded.value;
END;

CREATE TRIGGER liaison_state_counts_delete AFTER DELETE ON liaison_submissions BEGIN
    UPDATE liaison_state_counts SET n = n - 1, value = value - COALESCE(OLD.business_value, 0)
        WHERE partner = OLD.partner AND state = OLD.state;
END;
