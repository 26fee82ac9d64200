-- liaison schema, version 15: alert notifications are journaled and retried.
--
-- One row per (alert, event, sink): who it went to, how many tries, where it
-- stands (pending, delivered, failed), the last error (bounded, never a
-- secret) and when it is tried next. A pending row whose next try is due is
-- claimed by moving its next try to the end of the claim's lease.
CREATE TABLE liaison_alert_notifications (
    seq          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL UNIQUE,
    alert_id     TEXT    NOT NULL,
    partner      TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    sink         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    next_try_at  INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    delivered_at INTEGER
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
    since      INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (partner, owner, sink)
) WITHOUT ROWID;
