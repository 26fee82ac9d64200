-- liaison schema for PostgreSQL, version 15: alert notifications are
-- journaled and retried (mirrors migrations/sqlite/0015_alert_notifications.sql).
--
-- One row per (alert, event, sink): who it went to, how many tries, where it
-- stands (pending, delivered, failed), the last error (bounded, never a
-- secret) and when it is tried next. A pending row whose next try is due is
-- claimed (FOR UPDATE SKIP LOCKED) by moving its next try to the end of the
-- claim's lease, so two instances never try it at once.
CREATE TABLE liaison_alert_notifications (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           UUID    NOT NULL UNIQUE,
    alert_id     UUID    NOT NULL,
    partner      TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    sink         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    next_try_at  BIGINT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    delivered_at BIGINT
);
-- An alert's history, in order.
CREATE INDEX liaison_alert_notifications_alert ON liaison_alert_notifications (alert_id, seq);
-- Due retries.
CREATE INDEX liaison_alert_notifications_due ON liaison_alert_notifications (next_try_at)
    WHERE state = 'pending';

-- Sinks whose deliveries to an owner are failing now, per partner: a row from
-- the first failed try, deleted by the next delivery. Health reads it whole.
CREATE TABLE liaison_alert_sink_failures (
    partner    TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    sink       TEXT    NOT NULL,
    since      BIGINT  NOT NULL,
    error      TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (partner, owner, sink)
);
