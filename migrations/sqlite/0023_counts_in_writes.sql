-- liaison schema, version 23: the state counters are kept by the writes, not
-- by triggers.
--
-- liaison_state_counts (versions 3 and 14) was kept exact by three triggers
-- on liaison_submissions, two upserts for every row whose state changed, so
-- a claim of 64 submissions ran 128. The statements that insert submissions
-- or change their state now add what they changed, one upsert per counter a
-- batch touched, in the same transaction (src/store/sqlite/counts.rs). The
-- counters themselves are unchanged: the triggers kept them up to here.
DROP TRIGGER IF EXISTS liaison_state_counts_insert;
DROP TRIGGER IF EXISTS liaison_state_counts_update;
DROP TRIGGER IF EXISTS liaison_state_counts_delete;
