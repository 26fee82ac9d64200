-- liaison schema, version 19: personal data has an end, fingerprints a key.
--
-- Retention now also clears the personal data of finished work (correlation
-- values, the partner's reference, error texts, progress notes, callback
-- headers and errors) and `forget` erases one submission's on request.
-- Each table that holds such data records when it was cleared, and a partial
-- index holds only the rows still to clear, so a pass never walks the
-- history it cleared before.
ALTER TABLE liaison_submissions ADD COLUMN personal_cleared_at INTEGER;
CREATE INDEX liaison_submissions_uncleared
    ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL AND personal_cleared_at IS NULL;
ALTER TABLE liaison_callbacks ADD COLUMN personal_cleared_at INTEGER;
CREATE INDEX liaison_callbacks_uncleared
    ON liaison_callbacks (received_at) WHERE personal_cleared_at IS NULL;

-- The store's own secrets, created at the first open of this version: the
-- key of payload fingerprints and callback body hashes (HMAC-SHA256), so a
-- fingerprint shown to an operator cannot be checked against guessed
-- payloads. Never shown, never logged.
CREATE TABLE liaison_secrets (
    name       TEXT    PRIMARY KEY,
    secret     BLOB    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
