//! Scenario 4: dispatch to a no-op in-process adapter until every
//! submission is terminal, against the raw claim/mark-done cycle.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liaison::engine::EngineSettings;
use liaison::store::{
    DeliveryFilter, ListFilter, OutboxStore, SqliteConfig, SqliteStore, Synchronous,
};
use liaison::{
    BoxError, DeliveryState, FinishedSubmission, Liaison, NewSubmission, Partner, ResultHandler,
    SubmissionState,
};

use crate::report::Figure;
use crate::{Ctx, Noop, median, payload, raw};

/// Claims per transaction and attempts in flight for the dispatch scenarios.
pub(crate) const BATCH: usize = 64;

/// A hub dispatching to the no-op partner, `BATCH` claimed at a time.
pub(crate) fn dispatch_hub(path: &Path, sync: Synchronous) -> Liaison {
    hub_with(path, sync, false)
}

/// A result handler that takes every result and does nothing with it.
#[derive(Debug)]
struct NoopResults;

#[async_trait]
impl ResultHandler for NoopResults {
    async fn handle(&self, _: &FinishedSubmission) -> Result<(), BoxError> {
        Ok(())
    }
}

/// [`dispatch_hub`], with a no-op result handler registered when `results`.
fn hub_with(path: &Path, sync: Synchronous, results: bool) -> Liaison {
    let store = SqliteStore::open_with(path, SqliteConfig::default().synchronous(sync))
        .expect("open store");
    let partner = Partner::new("bench", Noop).concurrency(BATCH);
    let partner = if results {
        partner.results(NoopResults)
    } else {
        partner
    };
    Liaison::builder(store)
        .partner(partner)
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
    // One state per query: each reads one entry of the (partner, state,
    // seq) index. A list over several states in `seq` order reads every
    // row in them on PostgreSQL, which made this poll the busiest query
    // of a run.
    for state in states {
        let filter = ListFilter::default()
            .partner(partner)
            .state(*state)
            .limit(1);
        if !store.list(&filter).await.expect("list").is_empty() {
            return true;
        }
    }
    false
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

/// One liaison run of scenario 4c: as [`liaison_run`] with a no-op result
/// handler, timed until every result is delivered too.
async fn liaison_run_with_results(path: &Path, sync: Synchronous, n: usize, tag: &str) -> f64 {
    let hub = hub_with(path, sync, true);
    fill(&hub, n, tag).await;
    let store = hub.store().clone();
    let started = Instant::now();
    let handle = hub.start();
    let pending = DeliveryFilter::default()
        .state(DeliveryState::Pending)
        .limit(1);
    loop {
        let open = open_work(&store).await;
        let undelivered = !store
            .deliveries(&pending)
            .await
            .expect("deliveries")
            .is_empty();
        if !open && !undelivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    handle
        .shutdown(Duration::from_secs(10))
        .await
        .expect("shutdown");
    crate::rate(n, took)
}

/// Scenario 4.
pub(crate) async fn noop(ctx: &Ctx) {
    let n = ctx.n * 5;
    for (id, sync, name) in [
        ("4a", Synchronous::Full, "FULL"),
        ("4b", Synchronous::Normal, "NORMAL"),
    ] {
        if !ctx.runs(id) {
            continue;
        }
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
    // 4c: what delivering every result to the host costs (4b plus a no-op
    // result handler; timed until every result is delivered).
    if !ctx.runs("4c") {
        return;
    }
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        let dir = ctx.scratch();
        let raw_path = dir.path().join("raw.db");
        base.push(tokio::task::block_in_place(|| {
            raw_run(&raw_path, Synchronous::Normal, n)
        }));
        ours.push(
            liaison_run_with_results(
                &dir.path().join("liaison.db"),
                Synchronous::Normal,
                n,
                &format!("r{rep}"),
            )
            .await,
        );
    }
    Figure {
        id: "4c",
        name: "dispatch + result delivery, no-op adapter and handler, NORMAL".into(),
        unit: "submissions/s",
        liaison: median(ours),
        baseline: median(base),
        baseline_name: "raw claim-64 / mark-done cycle, two transactions per 64 rows",
        target: "reported (compare with 4b)",
        met: None,
        n,
        note: format!("claim_batch {BATCH}, concurrency {BATCH}, every result delivered"),
    }
    .print();
}
