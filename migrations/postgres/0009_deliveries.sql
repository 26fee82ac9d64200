-- liaison schema, version 9: the partner's answers delivered into the host.
--
-- A delivery is recorded in the transaction of the change that finishes a
-- submission, for partners whose results go to a host handler
-- (liaison_partners.deliver_results), then run by the engine under a lease
-- like any other durable work.
ALTER TABLE liaison_partners ADD COLUMN deliver_results BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE liaison_deliveries (
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- recording order
    id               UUID    NOT NULL UNIQUE,
    submission_id    UUID    NOT NULL,
    submission_seq   BIGINT  NOT NULL,             -- the submission's enqueue order
    partner          TEXT    NOT NULL,
    ordering_key     TEXT,
    final_state      TEXT    NOT NULL,             -- the state that finished it
    state            TEXT    NOT NULL,             -- pending, delivered, parked
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           BIGINT  NOT NULL,
    lease_token      UUID,
    lease_expires_at BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    delivered_at     BIGINT,
    last_error       TEXT
);
-- due deliveries, per partner
CREATE INDEX liaison_deliveries_due
    ON liaison_deliveries (partner, due_at) WHERE state = 'pending';
-- an earlier undelivered result of the same ordering key (or submission)
CREATE INDEX liaison_deliveries_order
    ON liaison_deliveries (partner, ordering_key, submission_seq) WHERE state <> 'delivered';
CREATE INDEX liaison_deliveries_submission
    ON liaison_deliveries (submission_id, seq);
-- operator lists and health
CREATE INDEX liaison_deliveries_state ON liaison_deliveries (state, partner, seq);
