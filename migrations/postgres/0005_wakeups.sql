-- liaison schema for PostgreSQL, version 5: wake-up hints for dispatchers
-- on other instances (LISTEN/NOTIFY). SQLite needs no such thing (one
-- process, in-memory wake-ups), so its migration 0005 is empty.
--
-- Whenever a submission becomes due work at once (enqueued, replayed, a
-- lease released, a pause lifted), the committing transaction notifies
-- channel `liaison_wake` with `<schema>:<partner>` as the payload. PostgreSQL
-- delivers notifications only on commit and folds identical ones within a
-- transaction, so a batch of a thousand enqueues for one partner is one
-- notification. The notification is only a hint: dispatchers still poll, so
-- a lost one delays work by at most one poll interval.

CREATE FUNCTION liaison_wake_submission() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('liaison_wake', TG_TABLE_SCHEMA || ':' || NEW.partner);
    RETURN NULL;
END;
$$;

CREATE TRIGGER liaison_submissions_wake
    AFTER INSERT OR UPDATE OF state, due_at ON liaison_submissions
    FOR EACH ROW
    WHEN (NEW.state = 'queued'
          AND NEW.due_at <= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)
    EXECUTE FUNCTION liaison_wake_submission();

-- A pause lifted (or shortened) on one instance wakes the partner's
-- dispatchers everywhere.
CREATE TRIGGER liaison_partners_wake
    AFTER INSERT OR UPDATE OF paused_until ON liaison_partners
    FOR EACH ROW
    WHEN (NEW.paused_until IS NULL
          OR NEW.paused_until <= (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT)
    EXECUTE FUNCTION liaison_wake_submission();
