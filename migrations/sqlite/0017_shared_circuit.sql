-- liaison schema, version 17: one circuit per partner for every engine
-- instance, and roles one instance plays at a time.
--
-- The circuit lives in the partner's row (circuit_state and circuit_since
-- exist since version 1): the failures counted by any instance since the
-- last reachable answer, the end of the open period (or, half-open, of the
-- probe's lease) and the instance holding the probe. The rule that changes
-- them is store::rules::circuit; every change is one write transaction.
ALTER TABLE liaison_partners ADD COLUMN circuit_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE liaison_partners ADD COLUMN circuit_until INTEGER;
ALTER TABLE liaison_partners ADD COLUMN circuit_probe TEXT;

-- A role (the alert evaluator) held by one instance under a lease it
-- renews; once the lease runs out another instance takes it over.
CREATE TABLE liaison_roles (
    role       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    since      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
