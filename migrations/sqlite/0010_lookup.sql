-- liaison schema, version 10: the host finds its submissions by its own keys.
--
-- Correlation fields were kept only as a JSON object in
-- liaison_submissions.correlation, which no index reaches. Each field now
-- also has a row here, written in the enqueue's transaction and deleted
-- with its submission; the index serves an exact match on one field, with
-- or without the partner. Existing submissions are indexed below.
-- (Whatever later clears correlation values must delete these rows too.)
CREATE TABLE liaison_correlations (
    submission_seq INTEGER NOT NULL
        REFERENCES liaison_submissions (seq) ON DELETE CASCADE,
    partner        TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    value          TEXT    NOT NULL,
    PRIMARY KEY (submission_seq, name)
) WITHOUT ROWID;
CREATE INDEX liaison_correlations_value
    ON liaison_correlations (name, value, partner, submission_seq);
INSERT OR IGNORE INTO liaison_correlations (submission_seq, partner, name, value)
    SELECT s.seq, s.partner, j.key, j.value
    FROM liaison_submissions s, json_each(s.correlation) j
    WHERE s.correlation IS NOT NULL AND json_type(s.correlation) = 'object'
      AND j.type = 'text';

-- Changes since a time, for a host pulling what changed.
CREATE INDEX liaison_submissions_updated ON liaison_submissions (updated_at);
