-- liaison schema, version 7: retention deletes rows of callbacks, not only
-- their bodies.
--
-- Rows of callbacks settled for good go after callback_row_retention, and
-- rows of callbacks to names that are no configured partner (stored as
-- rejected or too_large) after payload_retention. Both are found by
-- disposition and arrival time; no index had the arrival time without the
-- partner for every row.
CREATE INDEX liaison_callbacks_settled ON liaison_callbacks (disposition, received_at);
