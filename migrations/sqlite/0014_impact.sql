-- liaison schema, version 14: impact in business terms.
--
-- A submission's business value gets its ISO 4217 currency (NULL: the
-- currency is unspecified) and the submission an optional business
-- deadline (e.g. a claim's timely-filing limit), in milliseconds.
-- The per-(partner, state) counters of migration 3 added every value
-- together whatever its currency: they are rebuilt keyed by currency too
-- ('' for unspecified), from the table, and their triggers recreated.

ALTER TABLE liaison_submissions ADD COLUMN currency TEXT;
ALTER TABLE liaison_submissions ADD COLUMN business_deadline INTEGER;

-- Open work (not succeeded, cancelled or resolved by hand) by nearest
-- business deadline: per partner for health, across partners for the lists.
-- Queries repeat this WHERE clause word for word so SQLite uses the indexes.
CREATE INDEX liaison_submissions_business_deadline
    ON liaison_submissions (partner, business_deadline)
    WHERE business_deadline IS NOT NULL
      AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck', 'failed', 'dead_lettered');
CREATE INDEX liaison_submissions_nearest_deadline
    ON liaison_submissions (business_deadline)
    WHERE business_deadline IS NOT NULL
      AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck', 'failed', 'dead_lettered');

DROP TRIGGER liaison_state_counts_insert;
DROP TRIGGER liaison_state_counts_update;
DROP TRIGGER liaison_state_counts_delete;
DROP TABLE liaison_state_counts;

CREATE TABLE liaison_state_counts (
    partner  TEXT    NOT NULL,
    state    TEXT    NOT NULL,
    currency TEXT    NOT NULL DEFAULT '',          -- ISO 4217 code, '' unspecified
    n        INTEGER NOT NULL DEFAULT 0,
    value    INTEGER NOT NULL DEFAULT 0,           -- summed business_value, minor units
    PRIMARY KEY (partner, state, currency)
) WITHOUT ROWID;

INSERT INTO liaison_state_counts (partner, state, currency, n, value)
    SELECT partner, state, COALESCE(currency, ''), COUNT(*), COALESCE(SUM(business_value), 0)
    FROM liaison_submissions GROUP BY partner, state, COALESCE(currency, '');

CREATE TRIGGER liaison_state_counts_insert AFTER INSERT ON liaison_submissions BEGIN
    INSERT INTO liaison_state_counts (partner, state, currency, n, value)
        VALUES (NEW.partner, NEW.state, COALESCE(NEW.currency, ''), 1, COALESCE(NEW.business_value, 0))
        ON CONFLICT (partner, state, currency)
        DO UPDATE SET n = n + 1, value = value + excluded.value;
END;

CREATE TRIGGER liaison_state_counts_update AFTER UPDATE OF state ON liaison_submissions
    WHEN OLD.state <> NEW.state BEGIN
    UPDATE liaison_state_counts SET n = n - 1, value = value - COALESCE(OLD.business_value, 0)
        WHERE partner = OLD.partner AND state = OLD.state AND currency = COALESCE(OLD.currency, '');
    INSERT INTO liaison_state_counts (partner, state, currency, n, value)
        VALUES (NEW.partner, NEW.state, COALESCE(NEW.currency, ''), 1, COALESCE(NEW.business_value, 0))
        ON CONFLICT (partner, state, currency)
        DO UPDATE SET n = n + 1, value = value + excluded.value;
END;

CREATE TRIGGER liaison_state_counts_delete AFTER DELETE ON liaison_submissions BEGIN
    UPDATE liaison_state_counts SET n = n - 1, value = value - COALESCE(OLD.business_value, 0)
        WHERE partner = OLD.partner AND state = OLD.state AND currency = COALESCE(OLD.currency, '');
END;
