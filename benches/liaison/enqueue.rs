//! Scenarios 1-3: enqueue one per call, from 32 tasks, in batches of 100.

use std::sync::Arc;
use std::time::Instant;

use liaison::store::{SqliteConfig, SqliteStore, Synchronous};
use liaison::{Liaison, NewSubmission, Partner};

use crate::report::Figure;
use crate::{Ctx, Noop, median, payload, raw};

/// A hub with the no-op partner on a fresh store (not started: enqueue only).
pub(crate) fn hub(path: &std::path::Path, sync: Synchronous) -> Liaison {
    let store = SqliteStore::open_with(path, SqliteConfig::default().synchronous(sync))
        .expect("open store");
    Liaison::builder(store)
        .partner(Partner::new("bench", Noop))
        .build()
        .expect("build hub")
}

fn new(i: usize, tag: &str) -> NewSubmission {
    NewSubmission::new("bench", "payment", payload(i)).idempotency_key(format!("{tag}-{i}"))
}

fn sync_name(sync: Synchronous) -> &'static str {
    if sync == Synchronous::Full {
        "FULL"
    } else {
        "NORMAL"
    }
}

/// Scenario 1: one durable enqueue per call, one caller.
pub(crate) async fn one_per_call(ctx: &Ctx) {
    for (id, sync) in [("1a", Synchronous::Full), ("1b", Synchronous::Normal)] {
        if !ctx.runs(id) {
            continue;
        }
        let n = ctx.n;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for rep in 0..ctx.reps {
            let dir = ctx.scratch();
            let conn = raw::open(&dir.path().join("raw.db"), sync);
            base.push(tokio::task::block_in_place(|| {
                raw::insert_one_per_tx(&conn, n)
            }));
            let hub = hub(&dir.path().join("liaison.db"), sync);
            let started = Instant::now();
            for i in 0..n {
                hub.enqueue(new(i, &format!("r{rep}")))
                    .await
                    .expect("enqueue");
            }
            ours.push(crate::rate(n, started.elapsed()));
        }
        Figure {
            id,
            name: format!("enqueue, one per call, {}", sync_name(sync)),
            unit: "enqueues/s",
            liaison: median(ours),
            baseline: median(base.clone()),
            baseline_name: "raw rusqlite insert, one row per transaction",
            target: ">= 0.8x",
            met: None,
            n,
            note: String::new(),
        }
        .check(0.8)
        .print();
    }
}

/// Scenario 2: 32 tasks enqueue at once (FULL); the writer groups commits.
pub(crate) async fn concurrent(ctx: &Ctx) {
    let tasks = 32;
    let per_task = (ctx.n * 2).div_ceil(tasks);
    let n = per_task * tasks;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        let dir = ctx.scratch();
        let conn = raw::open(&dir.path().join("raw.db"), Synchronous::Full);
        base.push(tokio::task::block_in_place(|| {
            raw::insert_one_per_tx(&conn, ctx.n)
        }));
        let hub = Arc::new(hub(&dir.path().join("liaison.db"), Synchronous::Full));
        let started = Instant::now();
        let mut joins = Vec::new();
        for t in 0..tasks {
            let hub = Arc::clone(&hub);
            joins.push(tokio::spawn(async move {
                for i in 0..per_task {
                    // Durable when it returns: the writer answers after COMMIT.
                    hub.enqueue(new(t * per_task + i, &format!("r{rep}")))
                        .await
                        .expect("enqueue");
                }
            }));
        }
        for j in joins {
            j.await.expect("task");
        }
        ours.push(crate::rate(n, started.elapsed()));
    }
    Figure {
        id: "2",
        name: "enqueue from 32 tasks, FULL".into(),
        unit: "enqueues/s",
        liaison: median(ours),
        baseline: median(base),
        baseline_name: "raw rusqlite insert, one row per transaction, FULL",
        target: ">= 2x",
        met: None,
        n,
        note: "every enqueue answered after its group's COMMIT".into(),
    }
    .check(2.0)
    .print();
}

/// Scenario 3: enqueue_batch of 100 per call (FULL).
pub(crate) async fn batched(ctx: &Ctx) {
    let per = 100;
    let n = (ctx.n * 5).div_ceil(per) * per;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for rep in 0..ctx.reps {
        let dir = ctx.scratch();
        let conn = raw::open(&dir.path().join("raw.db"), Synchronous::Full);
        base.push(tokio::task::block_in_place(|| {
            raw::insert_batched(&conn, n, per)
        }));
        let hub = hub(&dir.path().join("liaison.db"), Synchronous::Full);
        let started = Instant::now();
        for chunk in 0..n / per {
            let batch = (0..per)
                .map(|i| new(chunk * per + i, &format!("r{rep}")))
                .collect();
            hub.enqueue_batch(batch).await.expect("enqueue batch");
        }
        ours.push(crate::rate(n, started.elapsed()));
    }
    Figure {
        id: "3",
        name: "enqueue_batch, 100 per call, FULL".into(),
        unit: "enqueues/s",
        liaison: median(ours),
        baseline: median(base),
        baseline_name: "raw rusqlite insert, 100 rows per transaction, FULL",
        target: ">= 0.5x",
        met: None,
        n,
        note: String::new(),
    }
    .check(0.5)
    .print();
}

impl Figure {
    /// Set `met` from the ratio against a minimum.
    pub(crate) fn check(mut self, min_ratio: f64) -> Self {
        self.met = Some(self.ratio() >= min_ratio);
        self
    }
}
