"""A model of scenario 1b's writes: one enqueue per transaction.

Runs the statements one enqueue writes (the ledger row, the submission
row, its `enqueued` line, the counter upsert), one transaction each,
straight through Python's sqlite3 on liaison's real SQLite schema (the
migrations of this checkout), `synchronous=NORMAL`, 20,000 queued
submissions before and 4,000 timed, then again with parts left out, and a
one-table, one-index raw loop beside them. Python's own cost per statement
is in every figure, so the parts are priced against each other, not
against a ceiling. Ids are time-ordered (as liaison's) where Python has
`uuid.uuid7` (3.14), random otherwise.

    python3 benches/model/enqueue_set.py [REPS] [DIR]

See docs/performance.md, "What 1b's write set costs, modelled".
"""
import sqlite3, os, glob, time, uuid, json, sys, statistics
HERE = os.path.dirname(os.path.abspath(__file__))
MIG = os.path.join(HERE, "..", "..", "migrations", "sqlite", "*.sql")
DIR = sys.argv[2] if len(sys.argv) > 2 else "target/enqueue-set-model"
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
os.makedirs(DIR, exist_ok=True)
PAYLOAD = json.dumps({"order": 1, "amount_cents": 12345, "currency": "EUR", "memo": "benchmark payload of a typical size"})
ALLIX = ["liaison_submissions_partner_state","liaison_submissions_state","liaison_submissions_updated","liaison_submissions_created"]
def run(name, drop=(), events=True, ledger=True, counts=True, raw=False, n=4000, pre=20000):
    path=os.path.join(DIR, "m.db")
    for ext in ("","-wal","-shm"):
        try: os.remove(path+ext)
        except FileNotFoundError: pass
    c=sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    if raw:
        c.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, due_at INTEGER NOT NULL, payload TEXT NOT NULL)")
        c.execute("CREATE INDEX jobs_due ON jobs (state, due_at)")
        def enq(i):
            c.execute("INSERT INTO jobs (state, due_at, payload) VALUES (0, ?, ?)", (i, PAYLOAD))
    else:
        for f in sorted(glob.glob(MIG)): c.executescript(open(f).read())
        for ix in drop: c.execute(f"DROP INDEX {ix}")
        now=1_700_000_000_000
        def enq(i):
            id=str(uuid.uuid7() if hasattr(uuid,'uuid7') else uuid.uuid4()); k=f"k{i}"
            if ledger: c.execute("INSERT INTO liaison_idempotency_keys (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) VALUES ('bench', ?, 'f', ?, ?, NULL)", (k,id,now))
            c.execute("INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, state, attempts, due_at, created_at, updated_at) VALUES (?, 'bench', 'payment', ?, 'f', ?, 'queued', 0, ?, ?, ?)", (id, PAYLOAD, k, now, now, now))
            if events: c.execute("INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) VALUES (?, ?, 'enqueued', NULL, 'queued', 'system:x', NULL, NULL)", (id, now))
            if counts: c.execute("INSERT INTO liaison_state_counts (partner, state, currency, n, value) VALUES ('bench','queued','',1,0) ON CONFLICT (partner, state, currency) DO UPDATE SET n = n + excluded.n")
    c.execute("BEGIN")
    for i in range(pre): enq(-i-1)
    c.execute("COMMIT"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    t=time.perf_counter()
    for i in range(n):
        c.execute("BEGIN IMMEDIATE"); enq(i); c.execute("COMMIT")
    return n/(time.perf_counter()-t)
cases=[("whole write set",{}),("no enqueued line",dict(events=False)),("no ledger row",dict(ledger=False)),("no counters",dict(counts=False)),
("no state index",dict(drop=["liaison_submissions_state"])),("no updated index",dict(drop=["liaison_submissions_updated"])),
("no created index",dict(drop=["liaison_submissions_created"])),("no partner_state index",dict(drop=["liaison_submissions_partner_state"])),
("none of those four indexes",dict(drop=ALLIX)),("row + due/key/id indexes only, no line/ledger/counters",dict(drop=ALLIX,events=False,ledger=False,counts=False)),
("raw (one table, one index)",dict(raw=True))]
res={c[0]:[] for c in cases}
for rep in range(REPS):
    for name,kw in cases: res[name].append(run(name,**kw))
raw=statistics.median(res["raw (one table, one index)"])
for name,_ in cases:
    m=statistics.median(res[name]); print(f"{m:9.0f}/s  {m/raw:5.3f}  {name}  {[round(x) for x in res[name]]}")
