//! Scenarios P1-P4: liaison on PostgreSQL against raw PostgreSQL, both in
//! this process and on the same server (`LIAISON_BENCH_PG_URL`).
//!
//! Every run works in a schema of its own (`liaison_bench_<random>`),
//! dropped afterwards; the raw baselines get their own schema too. Rows
//! carry a ~1 KB payload, as in the probe.
//!
//! - P1: 32 tasks enqueue one submission per call, against 32 tasks each
//!   inserting one row per transaction;
//! - P2: `enqueue_batch` of 100 per call, against a multi-row `INSERT` of 100;
//! - P3: the no-op dispatch draining `LIAISON_BENCH_PG_DRAIN` (default
//!   20,000) submissions with one and with three engines on one schema,
//!   against three workers looping `UPDATE ... WHERE id IN (SELECT ... FOR
//!   UPDATE SKIP LOCKED LIMIT 64) RETURNING` + one mark-done `UPDATE`;
//! - P4: scenario 5 (HTTP end to end, 202 + signed callback) on PostgreSQL,
//!   against scenario 5 on SQLite in the same run;
//! - P5: `health()` on `LIAISON_BENCH_BIG` finished submissions (scenario 8a
//!   on PostgreSQL), against a raw `GROUP BY partner, state` over the table.
//!   The history is seeded in SQL from 1,000 submissions liaison enqueued
//!   (copied with fresh ids and keys, finished), so the state counters'
//!   triggers see every row as they would in use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::store::{OutboxStore, PostgresConfig, PostgresStore};
use liaison::{NewSubmission, SubmissionState};
use tokio_postgres::NoTls;

use crate::report::Figure;
use crate::{Ctx, Noop, callbacks, dispatch, median};

/// Tasks (and connections) of P1.
const TASKS: usize = 32;
/// Rows per call of P2.
const PER_CALL: usize = 100;
/// Raw claim size of P3, as liaison's `claim_batch`.
const CLAIM: usize = 64;

/// The server's URL, or `None` with a notice (the scenarios are skipped).
pub(crate) fn url() -> Option<String> {
    match std::env::var("LIAISON_BENCH_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("P1-P5 skipped: set LIAISON_BENCH_PG_URL to a PostgreSQL server to run them");
            None
        }
    }
}

/// A ~1 KB payload.
fn payload(i: usize) -> serde_json::Value {
    serde_json::json!({
        "order": i,
        "amount_cents": 12_345,
        "currency": "EUR",
        "memo": "x".repeat(960),
    })
}

fn schema_name(what: &str) -> String {
    format!("liaison_bench_{what}_{:08x}", rand::random::<u32>())
}

/// One raw connection with `search_path` set to `schema`.
async fn raw_client(url: &str, schema: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to LIAISON_BENCH_PG_URL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .expect("search_path");
    client
}

/// A fresh schema holding the raw queue table (same columns an enqueue
/// writes, an index for due work). Returns its name.
async fn raw_schema(url: &str) -> String {
    let schema = schema_name("raw");
    let client = raw_client(url, "public").await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.raw_jobs (
                 id BIGSERIAL PRIMARY KEY, partner TEXT NOT NULL, kind TEXT NOT NULL,
                 payload JSON, idempotency_key TEXT NOT NULL, state SMALLINT NOT NULL,
                 due_at BIGINT NOT NULL, created_at BIGINT NOT NULL);
             CREATE INDEX raw_jobs_due ON {schema}.raw_jobs (due_at) WHERE state = 0;"
        ))
        .await
        .expect("raw schema");
    schema
}

async fn drop_schema(url: &str, schema: &str) {
    let client = raw_client(url, "public").await;
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop bench schema");
}

const RAW_INSERT: &str = "INSERT INTO raw_jobs (partner, kind, payload, idempotency_key, state, due_at, created_at) \
     VALUES ('bench', 'payment', $1::text::json, $2, 0, $3, $3)";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A liaison store in a fresh schema.
async fn store(url: &str, pool: usize) -> (PostgresStore, String) {
    let schema = schema_name("liaison");
    let store = PostgresStore::connect(
        url,
        PostgresConfig::default()
            .schema(schema.clone())
            .pool_size(pool),
    )
    .await
    .expect("connect liaison store");
    (store, schema)
}

fn hub(store: PostgresStore) -> Liaison {
    Liaison::builder(store)
        .partner(Partner::new("bench", Noop).concurrency(dispatch::BATCH))
        .settings(EngineSettings::default().claim_batch(dispatch::BATCH))
        .build()
        .expect("build hub")
}

fn new(i: usize, tag: &str) -> NewSubmission {
    NewSubmission::new("bench", "payment", payload(i)).idempotency_key(format!("{tag}-{i}"))
}

/// P1 raw: `TASKS` connections, each inserting `per_task` rows one per
/// transaction. Returns rows/s.
async fn raw_p1(url: &str, per_task: usize) -> f64 {
    let schema = raw_schema(url).await;
    let mut clients = Vec::new();
    for _ in 0..TASKS {
        clients.push(raw_client(url, &schema).await);
    }
    let body = payload(0).to_string();
    let started = Instant::now();
    let mut joins = Vec::new();
    for (t, client) in clients.into_iter().enumerate() {
        let body = body.clone();
        joins.push(tokio::spawn(async move {
            let stmt = client.prepare(RAW_INSERT).await.expect("prepare");
            for i in 0..per_task {
                client
                    .execute(&stmt, &[&body, &format!("raw-{t}-{i}"), &now_ms()])
                    .await
                    .expect("raw insert");
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    let rate = crate::rate(per_task * TASKS, started.elapsed());
    drop_schema(url, &schema).await;
    rate
}

/// P1 liaison: `TASKS` tasks enqueueing one per call on a pool of `TASKS`.
async fn liaison_p1(url: &str, per_task: usize, rep: usize) -> f64 {
    let (store, schema) = store(url, TASKS).await;
    let hub = Arc::new(hub(store));
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..TASKS {
        let hub = Arc::clone(&hub);
        joins.push(tokio::spawn(async move {
            for i in 0..per_task {
                hub.enqueue(new(t * per_task + i, &format!("r{rep}")))
                    .await
                    .expect("enqueue");
            }
        }));
    }
    for j in joins {
        j.await.expect("task");
    }
    let rate = crate::rate(per_task * TASKS, started.elapsed());
    drop(hub);
    drop_schema(url, &schema).await;
    rate
}

/// P2 raw: one connection, `n` rows as multi-row INSERTs of `PER_CALL`.
async fn raw_p2(url: &str, n: usize) -> f64 {
    let schema = raw_schema(url).await;
    let client = raw_client(url, &schema).await;
    let stmt = client
        .prepare(
            "INSERT INTO raw_jobs (partner, kind, payload, idempotency_key, state, due_at, created_at) \
             SELECT 'bench', 'payment', p::json, k, 0, $3, $3 FROM unnest($1::text[], $2::text[]) AS t(p, k)",
        )
        .await
        .expect("prepare");
    let body = payload(0).to_string();
    let started = Instant::now();
    for call in 0..n / PER_CALL {
        let bodies = vec![body.clone(); PER_CALL];
        let keys: Vec<String> = (0..PER_CALL).map(|i| format!("raw-{call}-{i}")).collect();
        client
            .execute(&stmt, &[&bodies, &keys, &now_ms()])
            .await
            .expect("raw batch insert");
    }
    let rate = crate::rate(n, started.elapsed());
    drop_schema(url, &schema).await;
    rate
}

/// P2 liaison: `enqueue_batch` of `PER_CALL`, one caller.
async fn liaison_p2(url: &str, n: usize, rep: usize) -> f64 {
    let (store, schema) = store(url, 4).await;
    let hub = hub(store);
    let started = Instant::now();
    for call in 0..n / PER_CALL {
        let batch = (0..PER_CALL)
            .map(|i| new(call * PER_CALL + i, &format!("r{rep}")))
            .collect();
        hub.enqueue_batch(batch).await.expect("enqueue batch");
    }
    let rate = crate::rate(n, started.elapsed());
    drop(hub);
    drop_schema(url, &schema).await;
    rate
}

/// P3 raw: `n` queued rows drained by three workers, each looping claim-64
/// (`FOR UPDATE SKIP LOCKED`) + mark done. Returns rows/s.
async fn raw_p3(url: &str, n: usize) -> f64 {
    let schema = raw_schema(url).await;
    let seed = raw_client(url, &schema).await;
    seed.execute(
        "INSERT INTO raw_jobs (partner, kind, payload, idempotency_key, state, due_at, created_at) \
         SELECT 'bench', 'payment', $1::text::json, 'k-' || g, 0, $2, $2 FROM generate_series(1, $3::int) g",
        &[&payload(0).to_string(), &now_ms(), &i32::try_from(n).expect("n")],
    )
    .await
    .expect("seed raw queue");
    seed.batch_execute("ANALYZE raw_jobs")
        .await
        .expect("analyze");
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(raw_client(url, &schema).await);
    }
    let started = Instant::now();
    let mut joins = Vec::new();
    for client in workers {
        joins.push(tokio::spawn(async move {
            let claim = client
                .prepare(
                    "UPDATE raw_jobs SET state = 1 WHERE id IN (SELECT id FROM raw_jobs \
                     WHERE state = 0 AND due_at <= $1 ORDER BY due_at LIMIT $2 \
                     FOR UPDATE SKIP LOCKED) RETURNING id, payload::text",
                )
                .await
                .expect("prepare claim");
            let done = client
                .prepare("UPDATE raw_jobs SET state = 2 WHERE id = ANY($1)")
                .await
                .expect("prepare done");
            let mut count = 0;
            loop {
                let rows = client
                    .query(&claim, &[&now_ms(), &(CLAIM as i64)])
                    .await
                    .expect("raw claim");
                if rows.is_empty() {
                    break count;
                }
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                count += ids.len();
                client.execute(&done, &[&ids]).await.expect("raw done");
            }
        }));
    }
    let mut total = 0;
    for j in joins {
        total += j.await.expect("worker");
    }
    let took = started.elapsed();
    assert_eq!(total, n, "the raw workers drained everything");
    drop_schema(url, &schema).await;
    crate::rate(n, took)
}

/// P3 liaison: `n` enqueued (not timed), then `engines` hubs on the schema
/// drain them. Returns submissions/s.
async fn liaison_p3(url: &str, n: usize, engines: usize, rep: usize) -> f64 {
    let (store, schema) = store(url, 16).await;
    let first = hub(store);
    let mut i = 0;
    while i < n {
        let batch: Vec<NewSubmission> = (i..(i + 500).min(n))
            .map(|j| new(j, &format!("r{rep}")))
            .collect();
        i += batch.len();
        first.enqueue_batch(batch).await.expect("fill");
    }
    let mut hubs = vec![first];
    for _ in 1..engines {
        let config = PostgresConfig::default()
            .schema(schema.clone())
            .pool_size(16);
        let store = PostgresStore::connect(url, config)
            .await
            .expect("connect another instance");
        hubs.push(hub(store));
    }
    let watcher = hubs[0].store().clone();
    let started = Instant::now();
    let handles: Vec<_> = hubs.iter().map(Liaison::start).collect();
    while open(&watcher).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    for handle in handles {
        handle
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shutdown");
    }
    drop(hubs);
    drop(watcher);
    drop_schema(url, &schema).await;
    crate::rate(n, took)
}

/// Whether work is still queued or in flight. One state per look: a list
/// by partner and one state reads the first row of an index, while two
/// states at once sort every open row (20,000 of them, payloads and all),
/// which on a shared server costs the engine under test its CPU.
async fn open(store: &Arc<dyn OutboxStore>) -> bool {
    for state in [SubmissionState::Queued, SubmissionState::InFlight] {
        if dispatch::any_in(store, "bench", &[state]).await {
            return true;
        }
    }
    false
}

/// Run P1-P5 (skipped with a notice without a server).
pub(crate) async fn run(ctx: &Ctx, wanted: impl Fn(&str) -> bool) {
    let Some(url) = url() else {
        return;
    };
    let settings = server_settings(&url).await;
    println!("PostgreSQL: {settings}");
    if wanted("P1") {
        let per_task = (ctx.n * 2).div_ceil(TASKS);
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for rep in 0..ctx.reps {
            base.push(raw_p1(&url, per_task).await);
            ours.push(liaison_p1(&url, per_task, rep).await);
        }
        Figure {
            id: "P1",
            name: "PG: enqueue one per call from 32 tasks".into(),
            unit: "enqueues/s",
            liaison: median(ours),
            baseline: median(base),
            baseline_name: "raw one-row INSERT transactions from 32 connections",
            target: ">= 0.5x",
            met: None,
            n: per_task * TASKS,
            note: format!("pool {TASKS}; ~1 KB payloads; {settings}"),
        }
        .check(0.5)
        .print();
    }
    if wanted("P2") {
        let n = (ctx.n * 5).div_ceil(PER_CALL) * PER_CALL;
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for rep in 0..ctx.reps {
            base.push(raw_p2(&url, n).await);
            ours.push(liaison_p2(&url, n, rep).await);
        }
        Figure {
            id: "P2",
            name: "PG: enqueue_batch, 100 per call".into(),
            unit: "enqueues/s",
            liaison: median(ours),
            baseline: median(base),
            baseline_name: "raw multi-row INSERT of 100 (unnest), one per transaction",
            target: ">= 0.3x",
            met: None,
            n,
            note: format!("one caller; ~1 KB payloads; {settings}"),
        }
        .check(0.3)
        .print();
    }
    if wanted("P3") {
        let n = crate::env_usize("LIAISON_BENCH_PG_DRAIN", 20_000).max(CLAIM);
        for (id, engines) in [("P3a", 1), ("P3b", 3)] {
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for rep in 0..ctx.reps {
                base.push(raw_p3(&url, n).await);
                ours.push(liaison_p3(&url, n, engines, rep).await);
            }
            Figure {
                id,
                name: format!("PG: no-op dispatch, drain, {engines} engine(s)"),
                unit: "submissions/s",
                liaison: median(ours),
                baseline: median(base),
                baseline_name: "raw claim-64 SKIP LOCKED + mark-done loop, 3 workers",
                target: ">= 0.33x",
                met: None,
                n,
                note: format!(
                    "claim_batch {}, concurrency {} per engine; {settings}",
                    dispatch::BATCH,
                    dispatch::BATCH
                ),
            }
            .check(0.33)
            .print();
        }
    }
    if wanted("P4") {
        let n = ctx.n;
        let pool = crate::env_usize("LIAISON_BENCH_PG_POOL", 16);
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for rep in 0..ctx.reps {
            base.push(callbacks::liaison_http(ctx, n, rep).await);
            let (store, schema) = store(&url, pool).await;
            let store: Arc<dyn OutboxStore> = Arc::new(store);
            ours.push(callbacks::liaison_http_on(store, n, rep).await);
            drop_schema(&url, &schema).await;
        }
        Figure {
            id: "P4",
            name: "PG: HTTP end to end, 202 + signed callback".into(),
            unit: "submissions/s",
            liaison: median(ours),
            baseline: median(base),
            baseline_name: "scenario 5 on SQLite (FULL) in the same run",
            target: ">= 0.8x",
            met: None,
            n,
            note: format!("concurrency 32; pool {pool}; {settings}"),
        }
        .check(0.8)
        .print();
    }
    if wanted("P5") {
        let (health, naive) = p5(&url, ctx.big, 10 * ctx.reps.max(1), ctx.reps).await;
        Figure {
            id: "P5",
            name: format!("PG: health(1h) on {} submissions", ctx.big),
            unit: "ms",
            liaison: health,
            baseline: naive,
            baseline_name: "raw GROUP BY partner, state over the table (health without counters)",
            target: "< 100 ms",
            met: Some(health < 100.0),
            n: ctx.big,
            note: format!("lower is better; {settings}"),
        }
        .print();
    }
}

/// P5: `health()` (median of `times` calls, ms) and the raw `GROUP BY`
/// (median of `reps`, ms) on `big` finished submissions.
async fn p5(url: &str, big: usize, times: usize, reps: usize) -> (f64, f64) {
    const TEMPLATE: usize = 1_000;
    let (store, schema) = store(url, 4).await;
    let batch: Vec<NewSubmission> = (0..TEMPLATE).map(|i| new(i, "seed")).collect();
    store
        .enqueue_batch(batch)
        .await
        .expect("enqueue the template");
    let raw = raw_client(url, &schema).await;
    raw.batch_execute(
        "UPDATE liaison_submissions SET state = 'succeeded', terminal_at = created_at",
    )
    .await
    .expect("finish the template");
    // Every column but the ones a copy must not share, and which are times.
    // Not `counted` either: the copies are left to the schema's insert
    // trigger, which counts each row inserted without it (migration 0027).
    let columns: Vec<(String, bool)> = raw
        .query(
            "SELECT column_name, column_name LIKE '%\\_at' AND data_type = 'bigint' \
             FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'liaison_submissions' \
               AND column_name NOT IN ('id', 'seq', 'idempotency_key', 'external_ref', 'counted') \
             ORDER BY ordinal_position",
            &[&schema],
        )
        .await
        .expect("read columns")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let list = columns
        .iter()
        .map(|(c, _)| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let copies = big.div_ceil(TEMPLATE).saturating_sub(1);
    // Spread over the last 30 days, as scenario 8's history: copy `g` is
    // `(copies + 1 - g)` steps older than the template.
    let step_ms = i64::try_from(30 * 24 * 3600 * 1000 / (copies + 1)).unwrap_or(1);
    let copied = columns
        .iter()
        .map(|(c, time)| {
            if *time {
                format!("s.{c} - ({} + 1 - g)::bigint * {step_ms}", copies)
            } else {
                format!("s.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let started = Instant::now();
    for from in (1..=copies).step_by(50) {
        let to = (from + 49).min(copies);
        raw.execute(
            &format!(
                "INSERT INTO liaison_submissions (id, idempotency_key, {list}) \
                 SELECT gen_random_uuid(), s.idempotency_key || '-' || g, {} \
                 FROM liaison_submissions s, generate_series($1::int, $2::int) g \
                 WHERE s.idempotency_key LIKE 'seed-%' AND s.idempotency_key NOT LIKE 'seed-%-%'",
                copied
            ),
            &[
                &i32::try_from(from).unwrap_or(i32::MAX),
                &i32::try_from(to).unwrap_or(i32::MAX),
            ],
        )
        .await
        .expect("copy the template");
    }
    raw.batch_execute("ANALYZE liaison_submissions")
        .await
        .expect("analyze");
    println!(
        "P5: seeded {} submissions in {:.0} s",
        (copies + 1) * TEMPLATE,
        started.elapsed().as_secs_f64()
    );
    let hub = hub(store);
    hub.health(Duration::from_secs(3600)).await.expect("health");
    let mut ours = Vec::new();
    for _ in 0..times {
        let started = Instant::now();
        let report = hub.health(Duration::from_secs(3600)).await.expect("health");
        std::hint::black_box(report);
        ours.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut base = Vec::new();
    for _ in 0..reps.max(1) {
        let started = Instant::now();
        let rows = raw
            .query(
                "SELECT partner, state, COUNT(*), SUM(business_value) \
                 FROM liaison_submissions GROUP BY partner, state",
                &[],
            )
            .await
            .expect("raw group by");
        std::hint::black_box(rows);
        base.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    drop(hub);
    drop_schema(url, &schema).await;
    (median(ours), median(base))
}

/// The server settings that decide commit cost, and whether the new
/// schema's tables get statistics while it runs (without autovacuum none
/// are ever analysed, and plans are chosen blind), for the record.
async fn server_settings(url: &str) -> String {
    let client = raw_client(url, "public").await;
    let mut out = Vec::new();
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "shared_buffers",
        "autovacuum",
    ] {
        let row = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("show setting");
        out.push(format!("{name}={}", row.get::<_, String>(0)));
    }
    out.join(" ")
}
