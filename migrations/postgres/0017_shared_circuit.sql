-- liaison schema for PostgreSQL, version 17: one circuit per partner for
-- every engine instance, and roles one instance plays at a time (mirrors
-- migrations/sqlite/0017_shared_circuit.sql).
--
-- The circuit lives in the partner's row (circuit_state and circuit_since
-- exist since version 1): the failures counted by any instance since the
-- last reachable answer, the end of the open period (or, half-open, of the
-- probe's lease) and the instance holding the probe. The rule that changes
-- them is store::rules::circuit; every change locks the row (FOR UPDATE).
ALTER TABLE liaison_partners ADD COLUMN circuit_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE liaison_partners ADD COLUMN circuit_until BIGINT;
ALTER TABLE liaison_partners ADD COLUMN circuit_probe TEXT;

-- A circuit that closes (its probe got an answer) wakes the partner's
-- dispatchers on every instance, so all resume at once.
CREATE TRIGGER liaison_partners_circuit_wake
    AFTER UPDATE OF circuit_state ON liaison_partners
    FOR EACH ROW
    WHEN (NEW.circuit_state = 'closed' AND OLD.circuit_state <> 'closed')
    EXECUTE FUNCTION liaison_wake_submission();

-- A role (the alert evaluator) held by one instance under a lease it
-- renews; once the lease runs out another instance takes it over.
CREATE TABLE liaison_roles (
    role       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    since      BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
