//! A few hundred claims through a flaky partner that also goes down for a
//! while: nothing is lost, nothing is sent twice.
//!
//! Run with:
//!
//! ```text
//! cargo run --example quickstart --features mock
//! ```
//!
//! You will see the outbox file, a live progress line while the engine
//! delivers 300 claims to a mock clearinghouse over real HTTP (every 7th
//! request fails with 503, and the partner is unreachable for 1.5 s in the
//! middle), 5 requests a second partner refuses for good, and a summary:
//! delivered, retried, dead-lettered, and the partner's side effects against
//! the distinct idempotency keys it saw — equal, because every retry carried
//! the same key. Then one retried submission's timeline.

use std::io::Write;
use std::time::{Duration, Instant};

use liaison::engine::{CircuitSettings, Liaison, Partner};
use liaison::retry::{Exponential, RetryLimits};
use liaison::store::{ListFilter, OutboxStore, SqliteStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{HttpJsonAdapter, NewSubmission, ResultMapping, Submission, SubmissionState};
use serde_json::json;

const CLAIMS: usize = 300;
const REFUSED: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quickstart.db");
    let store = SqliteStore::open(&path)?;
    println!("outbox: {}", path.display());

    // Two partners on 127.0.0.1: a flaky clearinghouse that processes claims
    // synchronously, and an eligibility service that refuses everything (422).
    let clearinghouse = MockPartner::start_with(Behavior::flaky(
        7,
        Behavior::slow(Duration::from_millis(5), Behavior::AcceptAndComplete),
    ))
    .await?;
    let eligibility = MockPartner::start_with(Behavior::Reject { status: 422 }).await?;

    let adapter = |mock: &MockPartner| -> liaison::Result<HttpJsonAdapter> {
        HttpJsonAdapter::new(&mock.submit_url())?
            .status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)
    };
    let liaison = Liaison::builder(store.clone())
        .partner(
            Partner::new("clearinghouse", adapter(&clearinghouse)?)
                .retry(Exponential::new(
                    Duration::from_millis(50),
                    Duration::from_secs(1),
                )?)
                .limits(RetryLimits::new(20, Duration::from_secs(600))?)
                .concurrency(8)
                .circuit(CircuitSettings::new(5, Duration::from_millis(500))?),
        )
        .partner(Partner::new("eligibility", adapter(&eligibility)?))
        .build()?;

    // The host enqueues; each claim id is the idempotency key.
    let mut batch: Vec<NewSubmission> = (0..CLAIMS as i64)
        .map(|i| {
            let claim = format!("C-{}", 1000 + i);
            let cents = 5_000 + i * 10;
            NewSubmission::new(
                "clearinghouse",
                "claim.submit",
                json!({ "claim_id": claim, "amount_cents": cents }),
            )
            .idempotency_key(claim)
            .business_value_in(cents, "USD")
        })
        .collect();
    batch.extend((0..REFUSED).map(|i| {
        NewSubmission::new("eligibility", "eligibility.check", json!({ "member": i }))
            .idempotency_key(format!("E-{i}"))
    }));
    liaison.enqueue_batch(batch).await?;

    let started = Instant::now();
    let handle = liaison.start();
    let mut outage = Outage::Pending;
    loop {
        let all = everything(&store).await?;
        let progress = Progress::of(&all);
        print!(
            "\r{:>5.1}s  delivered {:>3}/{CLAIMS}  retried {:>3}  dead-lettered {}  clearinghouse circuit: {:<9}  {}",
            started.elapsed().as_secs_f64(),
            progress.delivered,
            progress.retried,
            progress.dead_lettered,
            liaison
                .circuit_state("clearinghouse")
                .map_or("-", |c| c.as_str()),
            outage.label(),
        );
        std::io::stdout().flush()?;
        if progress.finished == all.len() {
            break;
        }
        outage = outage.step(&clearinghouse, progress.delivered).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!();
    handle.shutdown(Duration::from_secs(5)).await?;

    let all = everything(&store).await?;
    let progress = Progress::of(&all);
    let stats = clearinghouse.stats();
    println!();
    println!("delivered:      {} of {CLAIMS} claims", progress.delivered);
    println!(
        "retried:        {} claims needed more than one attempt",
        progress.retried
    );
    println!(
        "dead-lettered:  {} (refused for good by eligibility: HTTP 422)",
        progress.dead_lettered
    );
    println!(
        "clearinghouse:  {} requests, {} side effects for {} distinct keys{}",
        stats.requests,
        stats.side_effects,
        stats.distinct_keys,
        if stats.side_effects == stats.distinct_keys {
            " — exactly one effect per key"
        } else {
            " — MISMATCH"
        }
    );
    if progress.delivered != CLAIMS || stats.side_effects != stats.distinct_keys {
        return Err("the partner did not receive every claim exactly once".into());
    }
    if let Some(retried) = all
        .iter()
        .filter(|s| s.attempts > 1)
        .max_by_key(|s| s.attempts)
    {
        println!();
        println!(
            "timeline of {} ({} attempts):",
            retried.idempotency_key, retried.attempts
        );
        for e in store.timeline(retried.id).await? {
            println!(
                "  {}  {:<16} {}",
                e.at.format("%H:%M:%S%.3f"),
                e.kind,
                e.reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn everything(store: &SqliteStore) -> liaison::Result<Vec<Submission>> {
    store
        .list(&ListFilter::default().limit(ListFilter::MAX_LIMIT))
        .await
}

struct Progress {
    delivered: usize,
    retried: usize,
    dead_lettered: usize,
    finished: usize,
}

impl Progress {
    fn of(all: &[Submission]) -> Self {
        let count = |state| all.iter().filter(|s| s.state == state).count();
        Progress {
            delivered: count(SubmissionState::Succeeded),
            retried: all.iter().filter(|s| s.attempts > 1).count(),
            dead_lettered: count(SubmissionState::DeadLettered),
            finished: all.iter().filter(|s| s.state.is_terminal()).count(),
        }
    }
}

/// The clearinghouse goes down once a third is delivered, for 1.5 s.
enum Outage {
    Pending,
    Down(Instant),
    Over,
}

impl Outage {
    fn label(&self) -> &'static str {
        match self {
            Outage::Pending => "",
            Outage::Down(_) => "[partner unreachable]",
            Outage::Over => "[partner back]",
        }
    }

    async fn step(self, mock: &MockPartner, delivered: usize) -> std::io::Result<Self> {
        Ok(match self {
            Outage::Pending if delivered >= CLAIMS / 3 => {
                mock.go_down().await;
                Outage::Down(Instant::now())
            }
            Outage::Down(since) if since.elapsed() >= Duration::from_millis(1500) => {
                mock.come_back().await?;
                Outage::Over
            }
            other => other,
        })
    }
}
