-- liaison schema for PostgreSQL, version 19: personal data has an end,
-- fingerprints a key (mirrors migrations/sqlite/0019_privacy.sql).
--
-- Retention now also clears the personal data of finished work (correlation
-- values, the partner's reference, error texts, progress notes, callback
-- headers and errors) and `forget` erases one submission's on request.
-- Each table that holds such data records when it was cleared, and a partial
-- index holds only the rows still to clear.
ALTER TABLE liaison_submissions ADD COLUMN personal_cleared_at BIGINT;
CREATE INDEX liaison_submissions_uncleared
    ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL AND personal_cleared_at IS NULL;
ALTER TABLE liaison_callbacks ADD COLUMN personal_cleared_at BIGINT;
CREATE INDEX liaison_callbacks_uncleared
    ON liaison_callbacks (received_at) WHERE personal_cleared_at IS NULL;

-- The store's own secrets, created at the first open of this version (by
-- whichever instance comes first; the others read it): the key of payload
-- fingerprints and callback body hashes (HMAC-SHA256). Never shown, never
-- logged.
CREATE TABLE liaison_secrets (
    name       TEXT    PRIMARY KEY,
    secret     BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL
);
