-- liaison schema, version 20: the operations journal, and correlation values
-- found without their field's name.
--
-- Every action a person takes on the recovery desk (CLI or ops page) that
-- has no submission's timeline to go on is journaled here with who, when
-- and why: a partner paused or resumed, an alert acknowledged (with its
-- note), a callback that matched no submission reprocessed, a bulk
-- dismissal or reprocessing by filter (one line, with the count).
CREATE TABLE liaison_ops_journal (
    id      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT  NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    partner TEXT,
    target  TEXT,
    reason  TEXT    NOT NULL
);
-- The partner page's journal, newest first.
CREATE INDEX liaison_ops_journal_partner ON liaison_ops_journal (partner, id);
-- An alert's (or a callback's) journal, newest first.
CREATE INDEX liaison_ops_journal_target ON liaison_ops_journal (target, id);

-- The search box takes a correlation value without its field's name (the
-- order number a caller reads out): `liaison_correlations_value` leads with
-- the name, so such a search walked every correlation row.
CREATE INDEX liaison_correlations_by_value
    ON liaison_correlations (value, partner, submission_seq);
