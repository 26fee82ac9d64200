-- liaison schema for PostgreSQL, version 1: the same tables, columns and
-- indexes as migrations/sqlite/0001_init.sql, in PostgreSQL's types.
-- All names start with liaison_ so they can live in the host's own database.
-- Times are BIGINT milliseconds since the Unix epoch (UTC), as in SQLite,
-- so both stores return the same values. Payloads are JSON (not JSONB):
-- the text is kept exactly as written, so it reads back as the same value.

CREATE TABLE liaison_submissions (
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- enqueue order
    id               UUID    NOT NULL UNIQUE,      -- UUIDv7
    partner          TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          JSON,                         -- NULL once retention purged it
    fingerprint      TEXT    NOT NULL,             -- SHA-256 hex of the canonical payload
    idempotency_key  TEXT    NOT NULL,
    ordering_key     TEXT,
    correlation      JSON,                         -- object of correlation fields
    external_ref     TEXT,                         -- the partner's reference once accepted
    business_value   BIGINT,                       -- minor units
    priority         INTEGER NOT NULL DEFAULT 0,
    state            TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           BIGINT  NOT NULL,
    not_before       BIGINT,
    lease_token      UUID,
    lease_expires_at BIGINT,
    result_deadline  BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    terminal_at      BIGINT,
    last_error       TEXT,
    payload_purged_at BIGINT
);
-- due work, claimed per partner by priority then due time
CREATE INDEX liaison_submissions_due
    ON liaison_submissions (partner, priority DESC, due_at) WHERE state = 'queued';
-- expired leases
CREATE INDEX liaison_submissions_lease
    ON liaison_submissions (lease_expires_at) WHERE state = 'in_flight';
-- callbacks match by the partner's reference
CREATE UNIQUE INDEX liaison_submissions_external_ref
    ON liaison_submissions (partner, external_ref) WHERE external_ref IS NOT NULL;
-- overdue results
CREATE INDEX liaison_submissions_deadline
    ON liaison_submissions (result_deadline) WHERE state = 'awaiting_result';
-- ordering keys: earlier unfinished work of the same key
CREATE INDEX liaison_submissions_ordering
    ON liaison_submissions (partner, ordering_key, seq) WHERE ordering_key IS NOT NULL;
-- retention
CREATE INDEX liaison_submissions_terminal
    ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL;
-- operator lists
CREATE INDEX liaison_submissions_partner_state ON liaison_submissions (partner, state, seq);
CREATE INDEX liaison_submissions_state ON liaison_submissions (state, seq);
CREATE INDEX liaison_submissions_key ON liaison_submissions (partner, idempotency_key);

-- The idempotency ledger: one row per (partner, key) while retained. Its
-- primary key is what makes concurrent enqueues of one key create one
-- submission, across every instance.
CREATE TABLE liaison_idempotency_keys (
    partner         TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    submission_id   UUID    NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT,                        -- NULL: kept until pruned by hand
    PRIMARY KEY (partner, idempotency_key)
);
CREATE INDEX liaison_idempotency_keys_expiry
    ON liaison_idempotency_keys (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE liaison_attempts (
    submission_id UUID    NOT NULL,
    number        INTEGER NOT NULL,
    lease_token   UUID    NOT NULL,
    started_at    BIGINT  NOT NULL,
    finished_at   BIGINT,
    outcome       TEXT,
    http_status   INTEGER,
    error         TEXT,
    PRIMARY KEY (submission_id, number)
);

-- The timeline.
CREATE TABLE liaison_events (
    seq           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id UUID    NOT NULL,
    at            BIGINT  NOT NULL,
    kind          TEXT    NOT NULL,
    from_state    TEXT,
    to_state      TEXT,
    actor         TEXT    NOT NULL,
    reason        TEXT,
    data          JSON
);
CREATE INDEX liaison_events_submission ON liaison_events (submission_id, seq);

-- Every inbound callback, stored raw before anything else is done with it.
CREATE TABLE liaison_callbacks (
    seq            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             UUID    NOT NULL UNIQUE,
    partner        TEXT    NOT NULL,
    received_at    BIGINT  NOT NULL,
    headers        JSON    NOT NULL,               -- the kept headers
    body           BYTEA,                          -- raw; NULL above the cap or once purged
    body_hash      TEXT    NOT NULL,
    size           BIGINT  NOT NULL,
    event_id       TEXT,                           -- the partner's event id
    reference      TEXT,                           -- what it correlates by
    outcome        TEXT,                           -- parsed outcome, JSON text (compared as text)
    disposition    TEXT    NOT NULL,               -- received, applied, duplicate, conflicting, ...
    error          TEXT,
    submission_id  UUID,
    processed_at   BIGINT,
    match_until    BIGINT,                         -- unmatched: quarantine after this
    body_purged_at BIGINT
);
CREATE INDEX liaison_callbacks_event ON liaison_callbacks (partner, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX liaison_callbacks_hash ON liaison_callbacks (partner, body_hash);
CREATE INDEX liaison_callbacks_disposition ON liaison_callbacks (disposition, seq);
CREATE INDEX liaison_callbacks_submission ON liaison_callbacks (submission_id) WHERE submission_id IS NOT NULL;
CREATE INDEX liaison_callbacks_unmatched
    ON liaison_callbacks (partner, reference) WHERE disposition = 'unmatched';

-- Open and past problems, one open alert per (partner, class).
CREATE TABLE liaison_alerts (
    seq              BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID    NOT NULL UNIQUE,
    partner          TEXT    NOT NULL,
    class            TEXT    NOT NULL,
    owner            JSON,                         -- the owner at opening
    opened_at        BIGINT  NOT NULL,
    last_notified_at BIGINT,
    notify_count     INTEGER NOT NULL DEFAULT 0,
    acknowledged_by  TEXT,
    acknowledged_at  BIGINT,
    resolved_at      BIGINT,
    expected         BOOLEAN NOT NULL DEFAULT FALSE, -- raised during an announced pause
    details          JSON
);
CREATE UNIQUE INDEX liaison_alerts_open ON liaison_alerts (partner, class) WHERE resolved_at IS NULL;
CREATE INDEX liaison_alerts_opened ON liaison_alerts (opened_at);

-- What every instance must share about a partner.
CREATE TABLE liaison_partners (
    partner       TEXT    PRIMARY KEY,
    paused_until  BIGINT,
    pause_reason  TEXT,
    paused_by     TEXT,
    circuit_state TEXT    NOT NULL DEFAULT 'closed',
    circuit_since BIGINT,
    updated_at    BIGINT  NOT NULL
);
