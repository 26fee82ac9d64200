"""A model of scenario 4b's writes, to price each part of the write set.

Runs the statements a no-op dispatch writes per batch of 64 (claim: the
state change, attempt rows, counters, and before schema 28 `claimed`
lines; result: the state change, the attempts' finish, `succeeded` lines,
counters) straight through
Python's sqlite3 on liaison's real SQLite schema (the migrations of this
checkout), `synchronous=NORMAL`, 20,000 queued submissions with
time-ordered ids: first as today's engine writes them (no `claimed`
lines, a batch's results and the next claim in one transaction), then as
the engine wrote them before (two transactions per batch, with `claimed`
lines), and again with parts of the write set left out. Not
liaison's code path: what the writes alone cost, against which the engine's
figure (scenario 4b) and the raw loop can be read.

    python3 benches/model/write_set.py [REPS] [DIR]

See docs/performance.md, "What the write set costs, modelled".
"""
import sqlite3, glob, time, uuid, json, sys, os, statistics
N = 20000; B = 64
HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = os.path.join(HERE, "..", "..", "migrations", "sqlite", "*.sql")
PAYLOAD = json.dumps({"order": 1, "amount_cents": 12345, "currency": "EUR", "memo": "benchmark payload of a typical size"})
def empty(path):
    """A new, empty database file at `path` (WAL, synchronous=NORMAL)."""
    for ext in ("", "-wal", "-shm"):
        try: os.remove(path + ext)
        except FileNotFoundError: pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL")
    return c
def fresh(path, drop=()):
    c = empty(path)
    for f in sorted(glob.glob(MIGRATIONS)):
        c.executescript(open(f).read())
    for ix in drop:
        c.execute(f"DROP INDEX {ix}")
    c.execute("BEGIN")
    now = 1_700_000_000_000
    c.executemany("INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, state, attempts, due_at, created_at, updated_at) VALUES (?, 'bench', 'payment', ?, 'f', ?, 'queued', 0, ?, ?, ?)",
                  [(str(uuid.UUID(int=(0x0190_0000_0000_7000_8000_0000_0000_0000 + (i << 64)))), PAYLOAD, f"k{i}", now, now, now) for i in range(N)])
    c.execute("INSERT INTO liaison_state_counts (partner, state, n) VALUES ('bench', 'queued', ?)", (N,))
    c.execute("COMMIT"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return c
def claim(c, now, events, attempts, counts):
    """A claim of up to B queued rows: the state change, attempt rows,
    `claimed` lines when `events` is "all", counters. The rows taken."""
    rows = c.execute("UPDATE liaison_submissions SET state='in_flight', lease_token='tok', lease_expires_at=?, attempts=attempts+1, updated_at=? "
                     "WHERE seq IN (SELECT seq FROM liaison_submissions WHERE partner='bench' AND state='queued' ORDER BY priority DESC, due_at LIMIT ?) RETURNING seq, id", (now, now, B)).fetchall()
    if not rows:
        return rows
    if attempts:
        c.executemany("INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at, claim_seq) VALUES (?, 1, 'tok', ?, 0)", [(r[1], now) for r in rows])
    if events == "all":
        c.executemany("INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, data) VALUES (?, ?, 'claimed', 'queued', 'in_flight', 'system:dispatcher', '{\"attempt\":1,\"lease\":\"tok\"}')", [(r[1], now) for r in rows])
    if counts:
        for st, d in (("queued", -len(rows)), ("in_flight", len(rows))):
            c.execute("INSERT INTO liaison_state_counts (partner, state, n) VALUES ('bench', ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n", (st, d))
    return rows
def finish(c, rows, now, events, attempts, counts):
    """The results of `rows`: the state change, the attempts' finish,
    `succeeded` lines unless `events` is "none", counters."""
    seqs = [r[0] for r in rows]
    c.execute(f"UPDATE liaison_submissions SET state='succeeded', terminal_at=?, updated_at=?, lease_token=NULL, lease_expires_at=NULL WHERE seq IN ({','.join('?'*len(seqs))})", [now, now] + seqs)
    if attempts:
        c.executemany("UPDATE liaison_attempts SET finished_at=?, outcome='succeeded' WHERE submission_id=? AND number=1", [(now, r[1]) for r in rows])
    if events != "none":
        c.executemany("INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor) VALUES (?, ?, 'succeeded', 'in_flight', 'succeeded', 'system:dispatcher')", [(r[1], now) for r in rows])
    if counts:
        for st, d in (("in_flight", -len(rows)), ("succeeded", len(rows))):
            c.execute("INSERT INTO liaison_state_counts (partner, state, n) VALUES ('bench', ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n", (st, d))
def cycle(c, events="all", attempts=True, counts=True, one_tx=False):
    """Drain the queue in batches of B. `events`: "all" (a `claimed` and a
    `succeeded` line per submission, as before schema 28), "results" (the
    `succeeded` lines only: today's engine reads the `claimed` line from
    the attempt) or "none". `one_tx`: a batch's results and the next claim
    commit together (today's engine on SQLite); otherwise the claim and
    the results commit apart."""
    done = 0; now = 1_700_000_100_000
    t = time.perf_counter()
    if one_tx:
        pending = []
        while True:
            c.execute("BEGIN IMMEDIATE")
            if pending:
                finish(c, pending, now, events, attempts, counts)
                done += len(pending)
            pending = claim(c, now, events, attempts, counts)
            c.execute("COMMIT")
            if not pending:
                break
        return done / (time.perf_counter() - t)
    while True:
        c.execute("BEGIN IMMEDIATE")
        rows = claim(c, now, events, attempts, counts)
        c.execute("COMMIT")
        if not rows:
            break
        c.execute("BEGIN IMMEDIATE")
        finish(c, rows, now, events, attempts, counts)
        c.execute("COMMIT")
        done += len(rows)
    return done / (time.perf_counter() - t)
def raw_cycle(path):
    """The bench's raw baseline: one table, one index, two single-column updates per batch."""
    c = empty(path)
    c.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, state INTEGER NOT NULL, due INTEGER NOT NULL, payload TEXT)")
    c.execute("CREATE INDEX q_due ON q (state, due)")
    c.execute("BEGIN"); c.executemany("INSERT INTO q (state, due, payload) VALUES (0, ?, ?)", [(i, PAYLOAD) for i in range(N)]); c.execute("COMMIT")
    done = 0; t = time.perf_counter()
    while True:
        c.execute("BEGIN IMMEDIATE")
        ids = [r[0] for r in c.execute("UPDATE q SET state = 1 WHERE id IN (SELECT id FROM q WHERE state = 0 ORDER BY due LIMIT ?) RETURNING id", (B,))]
        c.execute("COMMIT")
        if not ids: break
        c.execute("BEGIN IMMEDIATE")
        c.execute(f"UPDATE q SET state = 2 WHERE id IN ({','.join('?' * len(ids))})", ids)
        c.execute("COMMIT")
        done += len(ids)
    rate = done / (time.perf_counter() - t); c.close(); return rate
def narrow_cycle(path, claimed_line=True):
    """The same work with a narrow queue table beside the wide row: the claim
    leases the queue row only (and reads the wide row, as a claim must to
    send it); the result deletes the queue row and writes the wide row once,
    to its end state. The wide row keeps every index but the two the queue
    has (due, leases). Attempt rows, `succeeded` lines and counters as
    today; `claimed` lines when `claimed_line`."""
    c = fresh(path, ("liaison_submissions_due", "liaison_submissions_partner_leases"))
    c.execute("CREATE TABLE liaison_queue (seq INTEGER PRIMARY KEY, partner TEXT NOT NULL, priority INTEGER NOT NULL, due_at INTEGER NOT NULL, lease_token TEXT, lease_expires_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0)")
    c.execute("CREATE INDEX liaison_queue_due ON liaison_queue (partner, priority DESC, due_at) WHERE lease_token IS NULL")
    c.execute("CREATE INDEX liaison_queue_leases ON liaison_queue (lease_expires_at) WHERE lease_token IS NOT NULL")
    c.execute("BEGIN")
    c.execute("INSERT INTO liaison_queue (seq, partner, priority, due_at) SELECT seq, partner, priority, due_at FROM liaison_submissions")
    c.execute("COMMIT"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    done = 0; now = 1_700_000_100_000
    t = time.perf_counter()
    while True:
        c.execute("BEGIN IMMEDIATE")
        seqs = [r[0] for r in c.execute("UPDATE liaison_queue SET lease_token='tok', lease_expires_at=?, attempts=attempts+1 "
                                         "WHERE seq IN (SELECT seq FROM liaison_queue WHERE partner='bench' AND lease_token IS NULL ORDER BY priority DESC, due_at LIMIT ?) RETURNING seq", (now, B))]
        if not seqs:
            c.execute("COMMIT"); break
        marks = ','.join('?' * len(seqs))
        rows = c.execute(f"SELECT seq, id, payload FROM liaison_submissions WHERE seq IN ({marks})", seqs).fetchall()
        c.executemany("INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at) VALUES (?, 1, 'tok', ?)", [(r[1], now) for r in rows])
        if claimed_line:
            c.executemany("INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, data) VALUES (?, ?, 'claimed', 'queued', 'in_flight', 'system:dispatcher', '{\"attempt\":1,\"lease\":\"tok\"}')", [(r[1], now) for r in rows])
        for st, d in (("queued", -len(rows)), ("in_flight", len(rows))):
            c.execute("INSERT INTO liaison_state_counts (partner, state, n) VALUES ('bench', ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n", (st, d))
        c.execute("COMMIT")
        c.execute("BEGIN IMMEDIATE")
        c.execute(f"DELETE FROM liaison_queue WHERE seq IN ({marks})", seqs)
        c.execute(f"UPDATE liaison_submissions SET state='succeeded', attempts=1, terminal_at=?, updated_at=? WHERE seq IN ({marks})", [now, now] + seqs)
        c.executemany("UPDATE liaison_attempts SET finished_at=?, outcome='succeeded' WHERE submission_id=? AND number=1", [(now, r[1]) for r in rows])
        c.executemany("INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor) VALUES (?, ?, 'succeeded', 'in_flight', 'succeeded', 'system:dispatcher')", [(r[1], now) for r in rows])
        for st, d in (("in_flight", -len(rows)), ("succeeded", len(rows))):
            c.execute("INSERT INTO liaison_state_counts (partner, state, n) VALUES ('bench', ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n", (st, d))
        c.execute("COMMIT")
        done += len(rows)
    rate = done / (time.perf_counter() - t); c.close(); return rate
ALL_SUB = ["liaison_submissions_due","liaison_submissions_external_ref","liaison_submissions_deadline","liaison_submissions_partner_state","liaison_submissions_state","liaison_submissions_key","liaison_submissions_accepted","liaison_submissions_partner_terminal","liaison_submissions_unpurged","liaison_submissions_updated","liaison_submissions_worker_crashed","liaison_submissions_business_deadline","liaison_submissions_nearest_deadline","liaison_submissions_partner_leases","liaison_submissions_uncleared","liaison_submissions_ordering","liaison_submissions_created"]
KEEP_NARROW = {"liaison_submissions_due", "liaison_submissions_partner_leases"}
variants = {
  "today's write set (no claimed lines; results and the next claim in one transaction)": ((), {"events": "results", "one_tx": True}),
  "today's write set without the succeeded lines": ((), {"events": "none", "one_tx": True}),
  "today's write set, the queue's two indexes only": (tuple(i for i in ALL_SUB if i not in KEEP_NARROW), {"events": "results", "one_tx": True}),
  "full write set": ((), {}),
  "no timeline lines": ((), {"events": "none"}),
  "no attempt rows": ((), {"attempts": False}),
  "no counters": ((), {"counts": False}),
  "no state index": (("liaison_submissions_state",), {}),
  "no updated index": (("liaison_submissions_updated",), {}),
  "no terminal indexes (unpurged, uncleared, partner_terminal)": (("liaison_submissions_unpurged","liaison_submissions_uncleared","liaison_submissions_partner_terminal"), {}),
  "submissions only, every index": ((), {"events": "none", "attempts": False, "counts": False}),
  "submissions only, due + leases indexes": (tuple(i for i in ALL_SUB if i not in KEEP_NARROW), {"events": "none", "attempts": False, "counts": False}),
}
os.makedirs(sys.argv[2] if len(sys.argv) > 2 else "target/write-set-model", exist_ok=True)
path = os.path.join(sys.argv[2] if len(sys.argv) > 2 else "target/write-set-model", "m.db")
res = {k: [] for k in variants}
res["narrow queue table, the rest as today"] = []
res["narrow queue table, no claimed lines"] = []
res["raw loop (the bench's baseline)"] = []
for rep in range(int(sys.argv[1]) if len(sys.argv) > 1 else 3):
    for name, (drop, kw) in variants.items():
        c = fresh(path, drop); res[name].append(cycle(c, **kw)); c.close()
    res["narrow queue table, the rest as today"].append(narrow_cycle(path))
    res["narrow queue table, no claimed lines"].append(narrow_cycle(path, claimed_line=False))
    res["raw loop (the bench's baseline)"].append(raw_cycle(path))
for name, v in res.items():
    print(f"{statistics.median(v):9.0f}/s  {name}  {[round(x) for x in v]}")
