//! Scenarios 7-9: a database that already holds `LIAISON_BENCH_BIG` finished
//! submissions (dispatch speed, `health()`, the ops lists), and peak RSS
//! with that many queued and draining.
//!
//! The big databases are seeded with raw SQL inserts into the schema the
//! store created (much faster than enqueueing them one by one): each
//! finished submission gets its ledger key, one attempt and three events
//! (enqueued, claimed, succeeded), as if it had gone through the engine; each
//! queued one gets its ledger key and its `enqueued` event. The per-state
//! counters (kept by the store's writes, not by triggers, since schema
//! version 23) are computed from the table once the rows are in. Seeded
//! files are kept in `LIAISON_BENCH_DIR` and reused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use liaison::SubmissionState;
use liaison::rusqlite::{Connection, params};
use liaison::store::{CallbackFilter, HourlyQuery, ListFilter, SqliteStore, Synchronous};
use serde_json::json;

use crate::report::Figure;
use crate::{Ctx, dispatch, median, payload, raw};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// What a seeded database holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seed {
    /// Finished submissions spread over the last 30 days.
    History,
    /// Queued submissions, all due.
    Backlog,
}

/// The seeded database for `seed` with `n` submissions, created if missing.
fn seeded(ctx: &Ctx, seed: Seed, n: usize) -> PathBuf {
    let name = match seed {
        Seed::History => format!("history-{n}.db"),
        Seed::Backlog => format!("backlog-{n}.db"),
    };
    let path = ctx.dir.join(name);
    if path.exists() {
        let ready = Connection::open(&path)
            .and_then(|c| c.query_row("SELECT n FROM bench_seed", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|done| done == n as i64);
        if ready {
            return path;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let started = Instant::now();
    // The store creates the schema.
    drop(SqliteStore::open(&path).expect("create schema"));
    let conn = Connection::open(&path).expect("open for seeding");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -200000;")
        .expect("seeding pragmas");
    let now = chrono::Utc::now().timestamp_millis();
    let span = 30 * DAY_MS;
    let mut i = 0;
    while i < n {
        conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..100_000.min(n - i) {
            seed_one(&conn, seed, i, n, now, span);
            i += 1;
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    conn.execute_batch(&format!(
        "DELETE FROM liaison_state_counts; \
         INSERT INTO liaison_state_counts (partner, state, currency, n, value) \
             SELECT partner, state, COALESCE(currency, ''), COUNT(*), COALESCE(SUM(business_value), 0) \
             FROM liaison_submissions GROUP BY 1, 2, 3; \
         CREATE TABLE bench_seed (n INTEGER); INSERT INTO bench_seed VALUES ({n}); \
         PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;"
    ))
    .expect("mark seeded");
    eprintln!(
        "seeded {} with {n} {:?} submissions in {:.1}s",
        path.display(),
        seed,
        started.elapsed().as_secs_f64()
    );
    path
}

fn seed_one(conn: &Connection, seed: Seed, i: usize, n: usize, now: i64, span: i64) {
    let id = uuid::Uuid::now_v7().to_string();
    let key = format!("seed-{i}");
    let created = match seed {
        Seed::History => now - span + (i as i64) * span / (n as i64),
        Seed::Backlog => now - 60_000,
    };
    let (state, attempts, accepted, terminal) = match seed {
        Seed::History if i % 1000 == 7 => ("dead_lettered", 1, None, Some(created + 100)),
        Seed::History if i % 100 == 3 => ("failed", 1, Some(created + 50), Some(created + 100)),
        Seed::History => ("succeeded", 1, Some(created + 50), Some(created + 100)),
        Seed::Backlog => ("queued", 0, None, None),
    };
    let fingerprint = format!("{:064x}", i);
    conn.prepare_cached(
        "INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, \
         business_value, priority, state, attempts, due_at, created_at, updated_at, terminal_at, \
         accepted_at) VALUES (?1, 'bench', 'payment', ?2, ?3, ?4, 12345, 0, ?5, ?6, ?7, ?7, ?8, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            payload(i).to_string(),
            fingerprint,
            key,
            state,
            attempts,
            created,
            terminal.unwrap_or(created),
            accepted,
        ])
    })
    .expect("seed submission");
    // terminal_at is NULL for queued work.
    if terminal.is_none() {
        conn.prepare_cached("UPDATE liaison_submissions SET terminal_at = NULL WHERE id = ?1")
            .and_then(|mut s| s.execute(params![id]))
            .expect("seed terminal_at");
    }
    conn.prepare_cached(
        "INSERT INTO liaison_idempotency_keys (partner, idempotency_key, fingerprint, submission_id, \
         created_at, expires_at) VALUES ('bench', ?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![key, fingerprint, id, created, created + span]))
    .expect("seed key");
    let event = |kind: &str, from: Option<&str>, to: &str, at: i64| {
        conn.prepare_cached(
            "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'system:seed')",
        )
        .and_then(|mut s| s.execute(params![id, at, kind, from, to]))
        .expect("seed event");
    };
    event("enqueued", None, "queued", created);
    if let Some(finished) = terminal {
        let token = uuid::Uuid::new_v4().to_string();
        conn.prepare_cached(
            "INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at, \
             finished_at, outcome) VALUES (?1, 1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![id, token, created + 10, finished, state]))
        .expect("seed attempt");
        event("claimed", Some("queued"), "in_flight", created + 10);
        event(state, Some("in_flight"), state, finished);
    }
}

/// The seeded database of `ctx.big` finished submissions over 30 days
/// (scenarios 7, 8 and 10), created if missing.
pub(crate) fn history_file(ctx: &Ctx) -> PathBuf {
    seeded(ctx, Seed::History, ctx.big)
}

/// Scenario 7: scenario 4 (FULL) on a database holding `big` finished
/// submissions, against the same on an empty database, interleaved.
pub(crate) async fn drain_on_history(ctx: &Ctx) {
    let n = ctx.n * 5;
    let history = tokio::task::block_in_place(|| seeded(ctx, Seed::History, ctx.big));
    let (mut full, mut empty) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        let dir = ctx.scratch();
        empty.push(
            dispatch::liaison_run(
                &dir.path().join("empty.db"),
                Synchronous::Full,
                n,
                &format!("e{rep}"),
            )
            .await,
        );
        let tag = format!("h{}-{rep}", uuid::Uuid::new_v4());
        full.push(dispatch::liaison_run(&history, Synchronous::Full, n, &tag).await);
    }
    Figure {
        id: "7",
        name: format!("dispatch (as 4a) with {} finished in history", ctx.big),
        unit: "submissions/s",
        liaison: median(full),
        baseline: median(empty),
        baseline_name: "the same liaison run on an empty database",
        target: ">= 0.9x",
        met: None,
        n,
        note: format!("history of {} seeded by raw SQL (see module docs)", ctx.big),
    }
    .check(0.9)
    .print();
}

/// Median wall time of `f` over `times` calls, in milliseconds.
async fn time_ms<F, Fut, T>(times: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut all = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        std::hint::black_box(f().await);
        all.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    median(all)
}

fn raw_ms(conn: &Connection, times: usize, sql: &str) -> f64 {
    let mut all = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        let rows: usize = conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                let mut rows = s.query([])?;
                let mut k = 0;
                while rows.next()?.is_some() {
                    k += 1;
                }
                Ok(k)
            })
            .expect("raw query");
        std::hint::black_box(rows);
        all.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    median(all)
}

/// Scenario 8: `health()` and the ops list queries on `big` submissions.
pub(crate) async fn ops_queries(ctx: &Ctx) {
    let path = tokio::task::block_in_place(|| seeded(ctx, Seed::History, ctx.big));
    let hub = dispatch::dispatch_hub(&path, Synchronous::Full);
    let store = hub.store().clone();
    let raw = Connection::open(&path).expect("raw reader");
    let times = 10 * ctx.reps.max(1);
    // Warm both (the first read of a big file pages it in).
    hub.health(Duration::from_secs(3600)).await.expect("health");
    let naive = tokio::task::block_in_place(|| {
        raw_ms(
            &raw,
            1.max(ctx.reps),
            "SELECT partner, state, COUNT(*), SUM(business_value) FROM liaison_submissions \
             GROUP BY partner, state",
        )
    });
    let health = time_ms(times, || hub.health(Duration::from_secs(3600))).await;
    Figure {
        id: "8a",
        name: format!("health(1h) on {} submissions", ctx.big),
        unit: "ms",
        liaison: health,
        baseline: naive,
        baseline_name: "raw GROUP BY partner, state over the table (health without counters)",
        target: "< 100 ms",
        met: Some(health < 100.0),
        n: ctx.big,
        note: "lower is better".into(),
    }
    .print();

    let first_page = tokio::task::block_in_place(|| {
        raw_ms(
            &raw,
            times,
            "SELECT * FROM liaison_submissions ORDER BY seq LIMIT 50",
        )
    });
    let mid = store
        .list(&ListFilter::default().limit(1))
        .await
        .expect("list")
        .first()
        .map(|s| s.id);
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let lists: Vec<(&'static str, &str, ListFilter)> = vec![
        (
            "8b",
            "list: first page (50)",
            ListFilter::default().limit(50),
        ),
        (
            "8c",
            "list: partner + failed (50)",
            ListFilter::default()
                .partner("bench")
                .state(SubmissionState::Failed)
                .limit(50),
        ),
        (
            "8d",
            "list: dead-lettered (50)",
            ListFilter::default()
                .state(SubmissionState::DeadLettered)
                .limit(50),
        ),
        (
            "8e",
            "list: stuck (none exist)",
            ListFilter::default()
                .state(SubmissionState::Stuck)
                .limit(50),
        ),
        ("8f", "list: next page after a cursor (50)", {
            let mut filter = ListFilter::default().limit(50);
            filter.after = mid;
            filter
        }),
        (
            "8g",
            "list: partner + created in the last hour (50)",
            ListFilter::default()
                .partner("bench")
                .limit(50)
                .created_from(hour_ago),
        ),
    ];
    for (id, name, filter) in lists {
        let ms = time_ms(times, || store.list(&filter)).await;
        Figure {
            id,
            name: name.into(),
            unit: "ms",
            liaison: ms,
            baseline: first_page,
            baseline_name: "raw SELECT * ... ORDER BY seq LIMIT 50 (cheapest page)",
            target: "none",
            met: None,
            n: ctx.big,
            note: "lower is better".into(),
        }
        .print();
    }
    let quarantined = CallbackFilter::quarantined();
    let quarantine = time_ms(times, || store.list_callbacks(&quarantined)).await;
    let alerts = time_ms(times, || store.alerts(true, 100)).await;
    // The ops page's chart of a partner: the last 24 hours, hour by hour.
    let now = chrono::Utc::now();
    let chart = HourlyQuery::new("bench", now - chrono::Duration::hours(23), 24, now);
    let hourly = time_ms(times, || store.hourly_counts(&chart)).await;
    for (id, name, ms) in [
        ("8h", "callbacks: quarantine", quarantine),
        ("8i", "alerts: open", alerts),
        ("8j", "ops chart: a partner's last 24 hours", hourly),
    ] {
        Figure {
            id,
            name: name.into(),
            unit: "ms",
            liaison: ms,
            baseline: first_page,
            baseline_name: "raw SELECT * ... ORDER BY seq LIMIT 50 (cheapest page)",
            target: "none",
            met: None,
            n: ctx.big,
            note: "lower is better".into(),
        }
        .print();
    }
}

/// `VmHWM` (peak resident set) of this process, in KiB (Linux).
fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn succeeded(path: &Path) -> i64 {
    Connection::open(path)
        .and_then(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(n), 0) FROM liaison_state_counts WHERE state = 'succeeded'",
                [],
                |r| r.get(0),
            )
        })
        .expect("count succeeded")
}

/// In a child process: drain the database for a while, print a JSON line.
pub(crate) fn child_main() -> Option<i32> {
    let which = std::env::var("LIAISON_BENCH_CHILD").ok()?;
    let path = PathBuf::from(std::env::var_os("LIAISON_BENCH_CHILD_DB")?);
    let secs: u64 = std::env::var("LIAISON_BENCH_DRAIN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let limit = Duration::from_secs(secs);
    let before = succeeded(&path);
    let started = Instant::now();
    match which.as_str() {
        "liaison" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let hub = dispatch::dispatch_hub(&path, Synchronous::Full);
                let store = hub.store().clone();
                let handle = hub.start();
                while started.elapsed() < limit && dispatch::open_work(&store).await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                handle
                    .shutdown(Duration::from_secs(10))
                    .await
                    .expect("shutdown");
            });
        }
        _ => {
            let conn = raw::open(&path, Synchronous::Full);
            raw::claim_done_cycle(&conn, "liaison_submissions", limit);
        }
    }
    let took = started.elapsed();
    let done = succeeded(&path) - before;
    println!(
        "{}",
        json!({ "done": done, "secs": took.as_secs_f64(), "vm_hwm_kib": vm_hwm_kib() })
    );
    Some(0)
}

/// Run one child on a copy of `db`; returns (peak RSS MiB, drained/s).
fn child(ctx: &Ctx, which: &str, db: &Path) -> (f64, f64) {
    let dir = ctx.scratch();
    let copy = dir.path().join("backlog.db");
    std::fs::copy(db, &copy).expect("copy the backlog");
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .env("LIAISON_BENCH_CHILD", which)
        .env("LIAISON_BENCH_CHILD_DB", &copy)
        .env("LIAISON_BENCH_DRAIN_SECS", ctx.drain_secs.to_string())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "child {which} printed no result: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: serde_json::Value = serde_json::from_str(line).expect("child JSON");
    let mib = v["vm_hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0;
    let per_s = v["done"].as_f64().unwrap_or(0.0) / v["secs"].as_f64().unwrap_or(1.0);
    (mib, per_s)
}

/// Scenario 9: peak RSS while `big` (and `big / 10`) are queued and
/// draining, each in a child process of its own.
pub(crate) fn peak_rss(ctx: &Ctx) {
    let small_n = ctx.big / 10;
    let big = seeded(ctx, Seed::Backlog, ctx.big);
    let small = seeded(ctx, Seed::Backlog, small_n);
    let (raw_big, raw_rate) = child(ctx, "raw", &big);
    let (ours_big, our_rate) = child(ctx, "liaison", &big);
    let (ours_small, _) = child(ctx, "liaison", &small);
    Figure {
        id: "9a",
        name: format!("peak RSS, {} queued and draining", ctx.big),
        unit: "MiB",
        liaison: ours_big,
        baseline: raw_big,
        baseline_name: "raw claim/mark-done process on the same backlog",
        target: "< 150 MiB",
        met: Some(ours_big < 150.0),
        n: ctx.big,
        note: format!(
            "VmHWM of a child process draining for up to {} s; liaison drained {our_rate:.0}/s, raw {raw_rate:.0}/s",
            ctx.drain_secs
        ),
    }
    .print();
    Figure {
        id: "9b",
        name: format!("peak RSS growth, {} vs {} queued", ctx.big, small_n),
        unit: "MiB",
        liaison: ours_big,
        baseline: ours_small,
        baseline_name: "the same liaison child with a backlog 10x smaller",
        target: "<= 1.2x",
        met: Some(ours_big <= 1.2 * ours_small),
        n: ctx.big,
        note: "not growing with the backlog".into(),
    }
    .print();
}
