//! Scenario 4: dispatch to a no-op in-process adapter until every
//! submission is terminal, against the raw claim/mark-done cycle.

use std::path::Path;
use std::time::{Duration, Instant};

use liaison::engine::EngineSettings;
use liaison::store::{ListFilter, OutboxStore, SqliteConfig, SqliteStore, Synchronous};
use liaison::{Liaison, NewSubmission, Partner, SubmissionState};

use crate::report::Figure;
use crate::{Ctx, Noop, median, payload, raw};

/// Claims per transaction and attempts in flight for the dispatch scenarios.
pub(crate) const BATCH: usize = 64;

/// A hub dispatching to the no-op partner, `BATCH` claimed at a time.
pub(crate) fn dispatch_hub(path: &Path, sync: Synchronous) -> Liaison {
    let store = SqliteStore::open_with(path, SqliteConfig::default().synchronous(sync))
        .expect("open store");
    Liaison::builder(store)
        .partner(Partner::new("bench", Noop).concurrency(BATCH))
        .settings(EngineSettings::default().claim_batch(BATCH))
        .build()
        .expect("build hub")
}

/// Enqueue `n` for the no-op partner, 500 per call (not measured).
pub(crate) async fn fill(hub: &Liaison, n: usize, tag: &str) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewSubmission> = (i..(i + 500).min(n))
            .map(|j| {
                NewSubmission::new("bench", "payment", payload(j))
                    .idempotency_key(format!("{tag}-{j}"))
            })
            .collect();
        i += batch.len();
        hub.enqueue_batch(batch).await.expect("fill");
    }
}

/// Whether any submission of `partner` is still in one of `states`.
pub(crate) async fn any_in(
    store: &std::sync::Arc<dyn OutboxStore>,
    partner: &str,
    states: &[SubmissionState],
) -> bool {
    let filter = states
        .iter()
        .fold(ListFilter::default().partner(partner), |f, s| f.state(*s))
        .limit(1);
    !store.list(&filter).await.expect("list").is_empty()
}

/// Whether any submission is still queued or in flight.
pub(crate) async fn open_work(store: &std::sync::Arc<dyn OutboxStore>) -> bool {
    any_in(store, "bench", &OPEN).await
}

const OPEN: [SubmissionState; 2] = [SubmissionState::Queued, SubmissionState::InFlight];

/// Start the engine and time it until nothing is queued or in flight.
/// Returns the elapsed time (shutdown is not counted).
pub(crate) async fn drain(hub: &Liaison) -> Duration {
    drain_until(hub, "bench", &OPEN).await
}

/// Start the engine and time it until no submission of `partner` is in
/// one of `states`. Returns the elapsed time (shutdown is not counted).
pub(crate) async fn drain_until(
    hub: &Liaison,
    partner: &str,
    states: &[SubmissionState],
) -> Duration {
    let store = hub.store().clone();
    let started = Instant::now();
    let handle = hub.start();
    while any_in(&store, partner, states).await {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    handle
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    took
}

/// One liaison run of scenario 4 on the database at `path` (which may
/// already hold history): enqueue `n`, drain. Returns submissions/s.
pub(crate) async fn liaison_run(path: &Path, sync: Synchronous, n: usize, tag: &str) -> f64 {
    let hub = dispatch_hub(path, sync);
    fill(&hub, n, tag).await;
    let took = drain(&hub).await;
    crate::rate(n, took)
}

/// One raw run: `n` queued rows, drained by the claim-64/mark-done cycle.
pub(crate) fn raw_run(path: &Path, sync: Synchronous, n: usize) -> f64 {
    let conn = raw::open(path, sync);
    raw::seed_queued(&conn, n);
    let (done, took) = raw::claim_done_cycle(&conn, "raw_submissions", Duration::MAX);
    assert_eq!(done, n, "the raw cycle drained everything");
    crate::rate(done, took)
}

/// Scenario 4.
pub(crate) async fn noop(ctx: &Ctx) {
    let n = ctx.n * 5;
    for (id, sync, name) in [
        ("4a", Synchronous::Full, "FULL"),
        ("4b", Synchronous::Normal, "NORMAL"),
    ] {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for rep in 0..ctx.reps {
            let dir = ctx.scratch();
            let raw_path = dir.path().join("raw.db");
            base.push(tokio::task::block_in_place(|| raw_run(&raw_path, sync, n)));
            ours.push(
                liaison_run(&dir.path().join("liaison.db"), sync, n, &format!("r{rep}")).await,
            );
        }
        Figure {
            id,
            name: format!("dispatch, no-op adapter, drain to terminal, {name}"),
            unit: "submissions/s",
            liaison: median(ours),
            baseline: median(base),
            baseline_name: "raw claim-64 / mark-done cycle, two transactions per 64 rows",
            target: ">= 0.33x",
            met: None,
            n,
            note: format!("claim_batch {BATCH}, concurrency {BATCH}"),
        }
        .check(0.33)
        .print();
    }
}
