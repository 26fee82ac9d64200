//! The raw baselines: plain rusqlite on the same kind of file, the same row.

use std::path::Path;
use std::time::{Duration, Instant};

use liaison::rusqlite::{Connection, params};
use liaison::store::Synchronous;

/// A raw connection set up the way the store sets up its own (WAL, the same
/// `synchronous`), with a table holding the same row an enqueue writes.
pub(crate) fn open(path: &Path, sync: Synchronous) -> Connection {
    let conn = Connection::open(path).expect("open raw database");
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
        other => panic!("no raw baseline for {other:?}"),
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE IF NOT EXISTS raw_submissions (
             seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, partner TEXT NOT NULL,
             kind TEXT NOT NULL, payload TEXT, fingerprint TEXT NOT NULL,
             idempotency_key TEXT NOT NULL, state TEXT NOT NULL, due_at INTEGER NOT NULL,
             created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS raw_submissions_queued ON raw_submissions (state, seq);"
    ))
    .expect("raw schema");
    conn
}

const INSERT: &str = "INSERT INTO raw_submissions (id, partner, kind, payload, fingerprint, \
    idempotency_key, state, due_at, created_at, updated_at) \
    VALUES (?1, 'bench', 'payment', ?2, ?3, ?4, 'queued', ?5, ?5, ?5)";

const FINGERPRINT: &str = "4f7c1b2a9d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

fn insert(conn: &Connection, i: usize) {
    let now = chrono::Utc::now().timestamp_millis();
    conn.prepare_cached(INSERT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                uuid::Uuid::now_v7().to_string(),
                crate::payload(i).to_string(),
                FINGERPRINT,
                format!("raw-{i}-{}", uuid::Uuid::new_v4()),
                now,
            ])
        })
        .expect("raw insert");
}

/// `n` inserts, one per transaction (autocommit). Returns rows/s.
pub(crate) fn insert_one_per_tx(conn: &Connection, n: usize) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        insert(conn, i);
    }
    crate::rate(n, started.elapsed())
}

/// `n` inserts, `per_tx` per transaction. Returns rows/s.
pub(crate) fn insert_batched(conn: &Connection, n: usize, per_tx: usize) -> f64 {
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for _ in 0..per_tx.min(n - i) {
            insert(conn, i);
            i += 1;
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    crate::rate(n, started.elapsed())
}

/// Insert `n` queued rows quickly (not measured).
pub(crate) fn seed_queued(conn: &Connection, n: usize) {
    insert_batched(conn, n, 1000);
}

/// The raw claim/mark-done cycle: claim up to 64 queued rows in one
/// transaction, mark them done in a second one, until none are left (or
/// `max` elapsed). Returns (rows done, elapsed).
pub(crate) fn claim_done_cycle(conn: &Connection, table: &str, max: Duration) -> (usize, Duration) {
    let select = format!("SELECT seq FROM {table} WHERE state = 'queued' ORDER BY seq LIMIT 64");
    let claim = format!("UPDATE {table} SET state = 'in_flight', updated_at = ?2 WHERE seq = ?1");
    let done = format!("UPDATE {table} SET state = 'succeeded', updated_at = ?2 WHERE seq = ?1");
    let started = Instant::now();
    let mut total = 0;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let seqs: Vec<i64> = conn
            .prepare_cached(&select)
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("select queued");
        for seq in &seqs {
            conn.prepare_cached(&claim)
                .and_then(|mut s| s.execute(params![seq, now]))
                .expect("claim");
        }
        conn.execute_batch("COMMIT").expect("commit");
        if seqs.is_empty() {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for seq in &seqs {
            conn.prepare_cached(&done)
                .and_then(|mut s| s.execute(params![seq, now]))
                .expect("done");
        }
        conn.execute_batch("COMMIT").expect("commit");
        total += seqs.len();
        if started.elapsed() >= max {
            break;
        }
    }
    (total, started.elapsed())
}
