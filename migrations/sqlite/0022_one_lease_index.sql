-- liaison schema, version 22: one index for live leases, not two.
--
-- Every claim and every result moved a submission in and out of two partial
-- indexes of in-flight work: (lease_expires_at), for the reaper, and
-- (partner, lease_expires_at), for the claim's count of a partner's live
-- leases (version 16). Both hold only work in flight, which the partners'
-- concurrency bounds, so the reaper reads the second one whole and sorts
-- (a few hundred entries at most, once per reap interval) and each claim and
-- result writes one index fewer.
DROP INDEX IF EXISTS liaison_submissions_lease;
