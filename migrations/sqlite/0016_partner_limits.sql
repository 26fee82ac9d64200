-- liaison schema, version 16: a partner's concurrency and rate limits hold
-- for every claimer of the store, not per process.
--
-- A claim locks the partner's row first (on SQLite the claim's BEGIN
-- IMMEDIATE transaction is the lock), counts the partner's live leases and
-- spends the shared rate budget kept on the row: the theoretical arrival
-- time of a GCRA, in microseconds of the store's clock (NULL until a rated
-- claim first spends it).
ALTER TABLE liaison_partners ADD COLUMN rate_tat_us INTEGER;

-- Live leases of one partner, for the concurrency count of every claim.
CREATE INDEX liaison_submissions_partner_leases
    ON liaison_submissions (partner, lease_expires_at) WHERE state = 'in_flight';
