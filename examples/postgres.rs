//! Three host instances sharing one outbox on PostgreSQL.
//!
//! Run with a PostgreSQL server you can create a schema on:
//!
//! ```text
//! LIAISON_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example postgres --features postgres,mock
//! ```
//!
//! (Without `LIAISON_PG_URL` it uses that same local URL.) The example works
//! in a schema of its own, `liaison_example_<random>`, dropped at the end.
//!
//! What you will see: the host writes 2,000 claims to its own `claims`
//! table, each together with its submission in one transaction
//! (`enqueue_in_transaction`), and one transaction that rolls back and
//! leaves neither row. Three `Liaison` instances, each with its own
//! connection pool, deliver the claims to a flaky mock clearinghouse; they
//! learn of new work through `LISTEN`/`NOTIFY` and share it through
//! `FOR UPDATE SKIP LOCKED` claims. At the end: how many attempts each
//! instance made, and the partner's side effects against the distinct keys
//! it saw — equal, because every retry carried the same key. The example
//! exits with an error if anything is lost or duplicated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liaison::engine::{Handle, Liaison, Partner};
use liaison::retry::{Exponential, RetryLimits};
use liaison::store::{ListFilter, OutboxStore, PostgresConfig, PostgresStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{
    AttemptContext, HttpJsonAdapter, NewSubmission, PartnerAdapter, PartnerError, ResultMapping,
    Submission, SubmissionState, SubmitOutcome,
};
use serde_json::json;

const CLAIMS: usize = 2_000;
const INSTANCES: usize = 3;

/// The partner's HTTP adapter, counting this instance's attempts.
#[derive(Debug)]
struct Counted {
    http: HttpJsonAdapter,
    attempts: Arc<AtomicU64>,
}

#[async_trait]
impl PartnerAdapter for Counted {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.http.submit(ctx, submission).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("LIAISON_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("liaison_example_{}", uuid::Uuid::new_v4().simple());
    let result = run(&url, &schema).await;
    // Clean up whatever happened.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await?;
    result
}

async fn run(url: &str, schema: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = PostgresConfig::default().schema(schema).pool_size(8);
    println!("outbox: PostgreSQL schema {schema}");

    // A clearinghouse that fails every 5th request with a 503.
    let clearinghouse =
        MockPartner::start_with(Behavior::flaky(5, Behavior::AcceptAndComplete)).await?;

    // Three instances, as three replicas of the host would run them.
    let mut instances: Vec<(Handle, Arc<AtomicU64>)> = Vec::new();
    for _ in 0..INSTANCES {
        let store = PostgresStore::connect(url, config.clone()).await?;
        let attempts = Arc::new(AtomicU64::new(0));
        let adapter = Counted {
            http: HttpJsonAdapter::new(&clearinghouse.submit_url())?
                .status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)?,
            attempts: Arc::clone(&attempts),
        };
        let liaison = Liaison::builder(store)
            .partner(
                Partner::new("clearinghouse", adapter)
                    .retry(Exponential::new(
                        Duration::from_millis(50),
                        Duration::from_secs(1),
                    )?)
                    .limits(RetryLimits::new(20, Duration::from_secs(600))?)
                    .concurrency(16),
            )
            .build()?;
        let handle = liaison.start();
        instances.push((handle, attempts));
    }

    // The host's own table, in the same database.
    let (mut host, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    host.batch_execute(&format!(
        "CREATE TABLE {schema}.claims (id TEXT PRIMARY KEY, cents BIGINT NOT NULL)"
    ))
    .await?;
    let store = PostgresStore::connect(url, config.clone()).await?;

    // One transaction that fails after the enqueue: neither row stays.
    {
        let tx = host.transaction().await?;
        tx.execute(
            &format!("INSERT INTO {schema}.claims VALUES ('C-void', 1)"),
            &[],
        )
        .await?;
        store
            .enqueue_in_transaction(&tx, claim("C-void", 1))
            .await?;
        tx.rollback().await?;
    }

    let started = Instant::now();
    for chunk in (0..CLAIMS).collect::<Vec<_>>().chunks(100) {
        let tx = host.transaction().await?;
        let mut batch = Vec::new();
        for i in chunk {
            let (id, cents) = (format!("C-{}", 1000 + i), 5_000 + *i as i64 * 10);
            tx.execute(
                &format!("INSERT INTO {schema}.claims VALUES ($1, $2)"),
                &[&id, &cents],
            )
            .await?;
            batch.push(claim(&id, cents));
        }
        store.enqueue_batch_in_transaction(&tx, batch).await?;
        tx.commit().await?; // the claims and their submissions, together
    }
    println!(
        "enqueued {CLAIMS} claims in the host's transactions in {:.2?}",
        started.elapsed()
    );

    // Wait until every claim is delivered.
    let done = loop {
        let succeeded = count(&store, SubmissionState::Succeeded).await?;
        if succeeded == CLAIMS || started.elapsed() > Duration::from_secs(120) {
            break succeeded;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let mut per_instance = Vec::new();
    for (handle, attempts) in instances {
        handle.shutdown(Duration::from_secs(5)).await?;
        per_instance.push(attempts.load(Ordering::Relaxed));
    }

    let rolled_back = store
        .list(
            &ListFilter::default()
                .partner("clearinghouse")
                .limit(CLAIMS + 10),
        )
        .await?
        .iter()
        .filter(|s| s.idempotency_key == "C-void")
        .count();
    let stats = clearinghouse.stats();
    println!(
        "delivered {done} of {CLAIMS} in {elapsed:.2?} ({:.0}/s)",
        done as f64 / elapsed.as_secs_f64()
    );
    println!(
        "partner: {} requests, {} distinct keys, {} side effects",
        stats.requests, stats.distinct_keys, stats.side_effects
    );
    println!("attempts per instance: {per_instance:?}");
    println!("rolled-back transaction left {rolled_back} submissions");
    if done != CLAIMS
        || stats.side_effects != CLAIMS as u64
        || stats.distinct_keys != CLAIMS as u64
        || rolled_back != 0
    {
        return Err("something was lost or duplicated".into());
    }
    println!("nothing lost, nothing sent twice");
    Ok(())
}

fn claim(id: &str, cents: i64) -> NewSubmission {
    NewSubmission::new(
        "clearinghouse",
        "claim.submit",
        json!({ "claim_id": id, "amount_cents": cents }),
    )
    .idempotency_key(id)
    .business_value(cents)
}

async fn count(store: &PostgresStore, state: SubmissionState) -> liaison::Result<usize> {
    Ok(store
        .list(
            &ListFilter::default()
                .partner("clearinghouse")
                .state(state)
                .limit(CLAIMS + 10),
        )
        .await?
        .len())
}
