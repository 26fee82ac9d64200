"""A model of scenario P3's writes on PostgreSQL, to price each part of the
write set against the raw loop.

Runs, through one connection (psycopg 3, server-side prepared statements),
the statements liaison's PostgreSQL store sends per batch of 64 in a no-op
drain, copied from the server's statement log of a P3 run (the claim:
partner row locked, live leases counted, the claim statement with its
attempt rows; the result: rows locked, attempts finished, state changes,
`succeeded` lines, result deliveries for a partner that takes none), on
the real schema (this checkout's migrations, in a fresh schema), 20,000
queued submissions with the bench's payload; then again with parts of the
write set left out; and the bench's raw loop through the same connection.
Not liaison's code path: what the writes alone cost, against which P3's
figures can be read.

    pip install "psycopg[binary]"
    python3 benches/model/write_set_pg.py [REPS] [URL]

See docs/performance.md, "P3's write set, modelled".
"""
import glob, json, os, statistics, sys, time, uuid

import psycopg

N = 20000
B = 64
URL = sys.argv[2] if len(sys.argv) > 2 else "postgres://postgres@127.0.0.1:5432/test"
HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = sorted(glob.glob(os.path.join(HERE, "..", "..", "migrations", "postgres", "*.sql")))
PAYLOAD = json.dumps({"order": 1, "amount_cents": 12345, "currency": "EUR",
                      "memo": "benchmark payload of a typical size"})
NOW = 1_800_000_000_000

COLUMNS = ("id, partner, kind, payload::text, fingerprint, idempotency_key, ordering_key, "
           "correlation::text, external_ref, business_value, priority, state, attempts, due_at, "
           "not_before, lease_expires_at, result_deadline, created_at, updated_at, terminal_at, "
           "last_error, replays, attempts_before_cycle, COALESCE(cycle_started_at, created_at), "
           "result_document, currency, business_deadline")

CLAIM = f"""WITH due AS (SELECT s.id, s.priority, s.due_at, s.seq FROM liaison_submissions s
  WHERE s.partner = %(p)s AND s.state = 'queued' AND s.due_at <= %(now)s
    AND (s.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM liaison_submissions p
         WHERE p.partner = s.partner AND p.ordering_key = s.ordering_key
           AND p.state IN ('queued', 'in_flight', 'dead_lettered') AND p.seq < s.seq OFFSET 0))
  ORDER BY s.priority DESC, s.due_at, s.seq LIMIT %(n)s FOR UPDATE OF s SKIP LOCKED),
numbered AS (SELECT id AS due_id, row_number() OVER (ORDER BY priority DESC, due_at, seq) AS due_n FROM due),
claimed AS (UPDATE liaison_submissions SET state = 'in_flight', lease_token = c.claim_token,
    lease_expires_at = %(exp)s, attempts = attempts + 1, updated_at = %(now)s
  FROM numbered JOIN unnest(%(tokens)s::uuid[]) WITH ORDINALITY AS c(claim_token, claim_n) ON c.claim_n = numbered.due_n
  WHERE id = numbered.due_id AND state = 'queued'
  RETURNING {COLUMNS}, c.claim_token, c.claim_n){{started}}
SELECT * FROM claimed ORDER BY claim_n"""
STARTED = """, started AS (INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at, claim_seq)
  SELECT id, attempts, claim_token, %(now)s, nextval('liaison_events_seq_seq') FROM claimed)"""

LOCK = f"SELECT {COLUMNS}, lease_token FROM liaison_submissions WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE"
FINISH = """UPDATE liaison_attempts SET finished_at = f.finished, outcome = f.outcome
  FROM unnest(%(ids)s::uuid[], %(tokens)s::uuid[], %(at)s::bigint[], %(outcome)s::text[]) AS f(sid, token, finished, outcome)
  WHERE submission_id = f.sid AND lease_token = f.token AND finished_at IS NULL"""
STATES = """UPDATE liaison_submissions SET state = w.w_state, terminal_at = w.w_at, updated_at = w.w_at,
    lease_token = NULL, lease_expires_at = NULL
  FROM unnest(%(ids)s::uuid[], %(states)s::text[], %(at)s::bigint[], %(from)s::text[]) AS w(w_id, w_state, w_at, w_from)
  WHERE id = w.w_id AND state = w.w_from"""
LINES = """INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, data)
  SELECT e.id, %(now)s, 'succeeded', 'in_flight', 'succeeded', 'system:dispatcher', '{"attempt":1,"outcome":"succeeded"}'::json
  FROM unnest(%(ids)s::uuid[]) AS e(id)"""
DELIVERIES = """INSERT INTO liaison_deliveries (id, submission_id, submission_seq, partner, ordering_key, final_state, state, attempts, due_at, created_at, updated_at)
  SELECT d.id, s.id, s.seq, s.partner, s.ordering_key, s.state, 'pending', 0, %(now)s, %(now)s, %(now)s
  FROM unnest(%(dids)s::uuid[], %(ids)s::uuid[]) WITH ORDINALITY AS d(id, submission_id, ord)
  JOIN liaison_submissions s ON s.id = d.submission_id JOIN liaison_partners p ON p.partner = s.partner AND p.deliver_results
  ORDER BY d.ord"""

ALL_SUB = ["liaison_submissions_due", "liaison_submissions_external_ref", "liaison_submissions_deadline",
           "liaison_submissions_partner_state", "liaison_submissions_state", "liaison_submissions_key",
           "liaison_submissions_accepted", "liaison_submissions_partner_terminal", "liaison_submissions_unpurged",
           "liaison_submissions_updated", "liaison_submissions_worker_crashed",
           "liaison_submissions_business_deadline", "liaison_submissions_nearest_deadline",
           "liaison_submissions_partner_leases", "liaison_submissions_uncleared", "liaison_submissions_ordering",
           "liaison_submissions_created"]


def connect(schema=None):
    c = psycopg.connect(URL, autocommit=True, prepare_threshold=0)
    if schema:
        c.execute(f"SET search_path = {schema}")
    return c


def fresh(drop=(), trigger=True):
    """A new schema with liaison's migrations and N queued submissions."""
    schema = "liaison_model_" + uuid.uuid4().hex[:8]
    c = connect()
    c.execute(f"CREATE SCHEMA {schema}")
    c.execute(f"SET search_path = {schema}")
    for f in MIGRATIONS:
        # Several statements per file: the simple query protocol.
        with psycopg.ClientCursor(c) as cur:
            cur.execute(open(f).read(), prepare=False)
    for ix in drop:
        c.execute(f"DROP INDEX {ix}")
    if not trigger:
        c.execute("DROP TRIGGER liaison_state_deltas_update ON liaison_submissions")
    c.execute("INSERT INTO liaison_partners (partner, updated_at) VALUES ('bench', 0) ON CONFLICT DO NOTHING")
    with c.transaction():
        c.execute("""INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, state,
                       attempts, due_at, created_at, updated_at)
                     SELECT (lpad(to_hex(g), 8, '0') || '-0000-7000-8000-000000000000')::uuid, 'bench', 'payment',
                            %s::json, 'f', 'k' || g, 'queued', 0, %s, %s, %s FROM generate_series(1, %s) g""",
                  (PAYLOAD, NOW, NOW, NOW, N))
    c.execute("ANALYZE")
    return c, schema


def cycle(c, attempts=True, lines=True, rest=True):
    """Drain: a claim transaction and a result transaction per batch."""
    done = 0
    t = time.perf_counter()
    claim = CLAIM.format(started=STARTED if attempts else "")
    while True:
        tokens = [uuid.uuid4() for _ in range(B)]
        with c.transaction():
            if rest:
                c.execute("SELECT rate_tat_us, limit_waiters FROM liaison_partners WHERE partner = %s FOR UPDATE", ("bench",))
                c.execute("SELECT COUNT(*) FROM liaison_submissions WHERE partner = %s AND state = 'in_flight' AND lease_expires_at > %s",
                          ("bench", NOW))
            rows = c.execute(claim, {"p": "bench", "now": NOW, "n": B, "exp": NOW + 60_000, "tokens": tokens}).fetchall()
        if not rows:
            break
        ids = [r[0] for r in rows]
        toks = [r[-2] for r in rows]
        k = len(ids)
        with c.transaction():
            if rest:
                c.execute(LOCK, {"ids": ids}).fetchall()
            if attempts:
                n = c.execute(FINISH, {"ids": ids, "tokens": toks, "at": [NOW] * k, "outcome": ["succeeded"] * k}).rowcount
                assert n == k, f"{n} of {k} attempts finished"
            n = c.execute(STATES, {"ids": ids, "states": ["succeeded"] * k, "at": [NOW] * k, "from": ["in_flight"] * k}).rowcount
            assert n == k, f"{n} of {k} rows moved" 
            if lines:
                c.execute(LINES, {"ids": ids, "now": NOW})
            if rest:
                c.execute(DELIVERIES, {"dids": [uuid.uuid4() for _ in ids], "ids": ids, "now": NOW})
        done += k
    assert done == N, f"{done} of {N} drained"
    return done / (time.perf_counter() - t)


def narrow_cycle():
    """The same work with a narrow queue table beside the wide row (a design
    not built): the claim leases the queue row only, and reads the wide row
    to send it; the result deletes the queue row and writes the wide row
    once, to its end state. The wide row keeps every index but the due and
    lease ones, which the queue has. Attempts, lines, locks as above."""
    c, schema = fresh(("liaison_submissions_due", "liaison_submissions_partner_leases"), True)
    try:
        return narrow_drain(c)
    finally:
        c.execute(f"DROP SCHEMA {schema} CASCADE")
        c.close()


def narrow_drain(c):
    """The drain of narrow_cycle, on its fresh schema."""
    c.execute("""CREATE TABLE liaison_queue (seq BIGINT PRIMARY KEY, id UUID NOT NULL, partner TEXT NOT NULL,
                 priority INT NOT NULL, due_at BIGINT NOT NULL, lease_token UUID, lease_expires_at BIGINT,
                 attempts INT NOT NULL DEFAULT 0)""")
    c.execute("CREATE INDEX liaison_queue_due ON liaison_queue (partner, priority DESC, due_at, seq) WHERE lease_token IS NULL")
    c.execute("CREATE INDEX liaison_queue_leases ON liaison_queue (partner, lease_expires_at) WHERE lease_token IS NOT NULL")
    c.execute("INSERT INTO liaison_queue (seq, id, partner, priority, due_at) SELECT seq, id, partner, priority, due_at FROM liaison_submissions")
    c.execute("ANALYZE")
    claim = f"""WITH due AS (SELECT q.seq, q.priority, q.due_at FROM liaison_queue q
        WHERE q.partner = %(p)s AND q.lease_token IS NULL AND q.due_at <= %(now)s
        ORDER BY q.priority DESC, q.due_at, q.seq LIMIT %(n)s FOR UPDATE SKIP LOCKED),
      numbered AS (SELECT seq AS due_seq, row_number() OVER (ORDER BY priority DESC, due_at, seq) AS due_n FROM due),
      claimed AS (UPDATE liaison_queue SET lease_token = c.claim_token, lease_expires_at = %(exp)s, attempts = attempts + 1
        FROM numbered JOIN unnest(%(tokens)s::uuid[]) WITH ORDINALITY AS c(claim_token, claim_n) ON c.claim_n = numbered.due_n
        WHERE seq = numbered.due_seq RETURNING liaison_queue.seq AS q_seq, liaison_queue.id AS q_id, liaison_queue.attempts AS q_attempts, c.claim_token, c.claim_n),
      started AS (INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at, claim_seq)
        SELECT q_id, q_attempts, claim_token, %(now)s, nextval('liaison_events_seq_seq') FROM claimed)
      SELECT {COLUMNS}, c.claim_token, c.claim_n, c.q_seq FROM claimed c JOIN liaison_submissions s ON s.seq = c.q_seq ORDER BY c.claim_n"""
    done = 0
    t = time.perf_counter()
    while True:
        tokens = [uuid.uuid4() for _ in range(B)]
        with c.transaction():
            c.execute("SELECT rate_tat_us, limit_waiters FROM liaison_partners WHERE partner = %s FOR UPDATE", ("bench",))
            c.execute("SELECT COUNT(*) FROM liaison_queue WHERE partner = %s AND lease_token IS NOT NULL AND lease_expires_at > %s",
                      ("bench", NOW))
            rows = c.execute(claim, {"p": "bench", "now": NOW, "n": B, "exp": NOW + 60_000, "tokens": tokens}).fetchall()
        if not rows:
            break
        ids = [r[0] for r in rows]
        toks = [r[-3] for r in rows]
        seqs = [r[-1] for r in rows]
        k = len(ids)
        with c.transaction():
            c.execute("SELECT seq, lease_token FROM liaison_queue WHERE seq = ANY(%(s)s) ORDER BY seq FOR UPDATE", {"s": seqs}).fetchall()
            c.execute(FINISH, {"ids": ids, "tokens": toks, "at": [NOW] * k, "outcome": ["succeeded"] * k})
            c.execute("DELETE FROM liaison_queue WHERE seq = ANY(%(s)s)", {"s": seqs})
            n = c.execute(STATES, {"ids": ids, "states": ["succeeded"] * k, "at": [NOW] * k, "from": ["queued"] * k}).rowcount
            assert n == k, f"{n} of {k} rows moved" 
            c.execute(LINES, {"ids": ids, "now": NOW})
            c.execute(DELIVERIES, {"dids": [uuid.uuid4() for _ in ids], "ids": ids, "now": NOW})
        done += k
    assert done == N, f"{done} of {N} drained"
    return done / (time.perf_counter() - t)


def raw_cycle():
    """The bench's raw loop (P3), one worker."""
    schema = "liaison_model_raw_" + uuid.uuid4().hex[:8]
    c = connect()
    c.execute(f"CREATE SCHEMA {schema}")
    c.execute(f"SET search_path = {schema}")
    c.execute("""CREATE TABLE raw_jobs (id BIGSERIAL PRIMARY KEY, partner TEXT NOT NULL, kind TEXT NOT NULL,
                 payload JSON, idempotency_key TEXT NOT NULL, state SMALLINT NOT NULL, due_at BIGINT NOT NULL,
                 created_at BIGINT NOT NULL)""")
    c.execute("CREATE INDEX raw_jobs_due ON raw_jobs (due_at) WHERE state = 0")
    c.execute("""INSERT INTO raw_jobs (partner, kind, payload, idempotency_key, state, due_at, created_at)
                 SELECT 'bench', 'payment', %s::json, 'k-' || g, 0, %s, %s FROM generate_series(1, %s) g""",
              (PAYLOAD, NOW, NOW, N))
    c.execute("ANALYZE raw_jobs")
    done = 0
    t = time.perf_counter()
    while True:
        ids = [r[0] for r in c.execute(
            "UPDATE raw_jobs SET state = 1 WHERE id IN (SELECT id FROM raw_jobs WHERE state = 0 ORDER BY due_at "
            "LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id", (B,)).fetchall()]
        if not ids:
            break
        c.execute("UPDATE raw_jobs SET state = 2 WHERE id = ANY(%s)", (ids,))
        done += len(ids)
    rate = done / (time.perf_counter() - t)
    c.execute(f"DROP SCHEMA {schema} CASCADE")
    return rate


FIVE = ("liaison_submissions_state", "liaison_submissions_updated", "liaison_submissions_key",
        "liaison_submissions_unpurged", "liaison_submissions_uncleared")
VARIANTS = {
    "the whole write set": ((), True, {}),
    "without the state-delta update trigger": ((), False, {}),
    "without the timeline lines": ((), True, {"lines": False}),
    "without the attempt rows": ((), True, {"attempts": False}),
    "without five indexes (state, updated, key, unpurged, uncleared)": (FIVE, True, {}),
    "without the locks, the lease count and the deliveries' insert": ((), True, {"rest": False}),
    "the submission rows only, every index, the trigger": ((), True, {"attempts": False, "lines": False, "rest": False}),
    "the submission rows only, every index, no trigger": ((), False, {"attempts": False, "lines": False, "rest": False}),
    "the submission rows only, the due and lease indexes, no trigger": (
        tuple(i for i in ALL_SUB if i not in ("liaison_submissions_due", "liaison_submissions_partner_leases")),
        False, {"attempts": False, "lines": False, "rest": False}),
}

if __name__ == "__main__":
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = {name: [] for name in VARIANTS}
    results["a narrow queue table beside the wide row (not built)"] = []
    results["the raw loop (P3's baseline, one worker)"] = []
    for _ in range(reps):
        for name, (drop, trigger, kw) in VARIANTS.items():
            c, schema = fresh(drop, trigger)
            try:
                results[name].append(cycle(c, **kw))
            finally:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
                c.close()
        results["a narrow queue table beside the wide row (not built)"].append(narrow_cycle())
        results["the raw loop (P3's baseline, one worker)"].append(raw_cycle())
    raw = statistics.median(results["the raw loop (P3's baseline, one worker)"])
    for name, v in results.items():
        m = statistics.median(v)
        print(f"{m:9.0f}/s  {m / raw:5.3f}  {name}  {[round(x) for x in v]}")
