-- liaison schema for PostgreSQL, version 4: callbacks by partner and arrival
-- time, for the alert evaluator's per-window counts (mirrors
-- migrations/sqlite/0004_alerts.sql).
CREATE INDEX liaison_callbacks_received ON liaison_callbacks (partner, received_at);
