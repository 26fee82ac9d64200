-- liaison schema for PostgreSQL, version 16: a partner's concurrency and
-- rate limits hold for every instance, not per instance.
--
-- A claim locks the partner's row first (SELECT ... FOR UPDATE: only that
-- partner's claims wait for each other), counts the partner's live leases
-- and spends the shared rate budget kept on the row: the theoretical
-- arrival time of a GCRA, in microseconds of the database's clock (NULL
-- until a rated claim first spends it).
ALTER TABLE liaison_partners ADD COLUMN rate_tat_us BIGINT;

-- Live leases of one partner, for the concurrency count of every claim.
CREATE INDEX liaison_submissions_partner_leases
    ON liaison_submissions (partner, lease_expires_at) WHERE state = 'in_flight';
