-- liaison schema, version 8: the partner's result document is kept with
-- the submission (JSON text of liaison's ResultDocument: the document, or a
-- marker saying why it was not kept). Purged with the payload.
ALTER TABLE liaison_submissions ADD COLUMN result_document TEXT;
