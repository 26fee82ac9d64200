//! Scenario 10: retention on a long history. A copy of the seeded database
//! of `LIAISON_BENCH_BIG` finished submissions (scenarios 7-9) is purged as
//! the engine does it (`Liaison::run_retention` with every period at zero:
//! everything finished is past retention), while one task enqueues one
//! submission at a time; the same task first enqueues for a while with no
//! purge running.
//!
//! - 10a: how long the purge takes, against a raw loop on another copy that
//!   clears the payloads 1,000 rows per transaction through the same
//!   partial index (`liaison_submissions_unpurged`).
//! - 10b, 10c: the enqueue latency (p99, p50) while the purge runs, against
//!   the same with no purge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use liaison::engine::EngineSettings;
use liaison::rusqlite::{Connection, params};
use liaison::store::{SqliteConfig, SqliteStore, Synchronous};
use liaison::{Liaison, NewSubmission, Partner};

use crate::report::Figure;
use crate::{Ctx, Noop, history, payload};

/// How long the enqueue task runs with no purge.
const IDLE: Duration = Duration::from_secs(3);

/// The `q`-quantile of `xs` (sorted in place), in the unit of `xs`.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    xs[i]
}

/// Enqueue one at a time until `stop`, returning each call's latency in ms.
async fn enqueue_until(liaison: Liaison, stop: Arc<AtomicBool>, tag: &'static str) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let submission = NewSubmission::new("bench", "payment", payload(i))
            .idempotency_key(format!("{tag}-{i}"));
        let started = Instant::now();
        liaison.enqueue(submission).await.expect("enqueue");
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        i += 1;
    }
    latencies
}

/// Clear every finished payload the way a plain job would: 1,000 rows per
/// transaction from the partial index of what is still to purge.
fn raw_purge(path: &std::path::Path) -> Duration {
    let conn = Connection::open(path).expect("raw connection");
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;")
        .expect("raw pragmas");
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    loop {
        let n = conn
            .execute(
                "UPDATE liaison_submissions SET payload = NULL, payload_purged_at = ?1 \
                 WHERE seq IN (SELECT seq FROM liaison_submissions \
                     INDEXED BY liaison_submissions_unpurged \
                     WHERE terminal_at IS NOT NULL AND payload IS NOT NULL AND terminal_at <= ?1 \
                     LIMIT 1000)",
                params![now],
            )
            .expect("raw purge batch");
        if n == 0 {
            break;
        }
    }
    started.elapsed()
}

pub(crate) async fn purge_history(ctx: &Ctx) {
    let seeded = tokio::task::block_in_place(|| history::history_file(ctx));
    let dir = ctx.scratch();
    let (raw_path, path) = (dir.path().join("raw.db"), dir.path().join("liaison.db"));
    for copy in [&raw_path, &path] {
        std::fs::copy(&seeded, copy).expect("copy the seeded database");
    }
    let raw = tokio::task::block_in_place(|| raw_purge(&raw_path));

    let store = SqliteStore::open_with(
        &path,
        SqliteConfig::default().synchronous(Synchronous::Full),
    )
    .expect("open store");
    let liaison = Liaison::builder(store)
        .partner(Partner::new("bench", Noop))
        .settings(
            EngineSettings::default()
                .payload_retention(Duration::ZERO)
                .rejected_body_retention(Duration::ZERO)
                .callback_row_retention(Duration::ZERO),
        )
        .build()
        .expect("build");

    // No purge: enqueue for a while.
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(enqueue_until(liaison.clone(), stop.clone(), "idle"));
    tokio::time::sleep(IDLE).await;
    stop.store(true, Ordering::Relaxed);
    let mut idle = task.await.expect("idle enqueues");

    // The purge, with the same task enqueueing beside it.
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(enqueue_until(liaison.clone(), stop.clone(), "busy"));
    let started = Instant::now();
    let report = liaison.run_retention().await.expect("retention");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut busy = task.await.expect("enqueues during the purge");
    assert!(
        report.payloads as usize >= ctx.big * 9 / 10,
        "the purge missed payloads: {report:?}"
    );

    Figure {
        id: "10a",
        name: format!("retention: purge {} finished submissions", ctx.big),
        unit: "s",
        liaison: took.as_secs_f64(),
        baseline: raw.as_secs_f64(),
        baseline_name: "raw: payloads cleared 1,000 rows per transaction",
        target: "none",
        met: None,
        n: ctx.big,
        note: format!(
            "lower is better; {} payloads and {} submissions' personal data removed",
            report.payloads, report.personal_data
        ),
    }
    .print();
    let (idle_n, busy_n) = (idle.len(), busy.len());
    for (id, name, q) in [
        ("10b", "enqueue latency p99 during the purge", 0.99),
        ("10c", "enqueue latency p50 during the purge", 0.5),
    ] {
        Figure {
            id,
            name: name.into(),
            unit: "ms",
            liaison: quantile(&mut busy, q),
            baseline: quantile(&mut idle, q),
            baseline_name: "the same enqueues with no purge running",
            target: "none",
            met: None,
            n: busy_n,
            note: format!("lower is better; {busy_n} enqueues during, {idle_n} without"),
        }
        .print();
    }
}
