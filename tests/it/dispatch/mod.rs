//! The dispatch engine against `MockPartner` over real HTTP.

mod alerts;
#[cfg(feature = "http")]
mod crash;
mod failures;
mod forever;
mod limits;
mod ordering;
#[cfg(feature = "http")]
mod poison;
mod shutdown;

use std::future::Future;
use std::time::Duration;

use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{ListFilter, OutboxStore, SqliteStore};
use liaison::testing::MockPartner;
use liaison::{HttpJsonAdapter, NewSubmission, Submission, SubmissionState};
use serde_json::json;

/// Engine settings for tests: quick polls and reaping.
pub fn quick_settings() -> EngineSettings {
    EngineSettings::default()
        .poll_interval(Duration::from_millis(20))
        .reap_interval(Duration::from_millis(100))
        .claim_batch(16)
        .lease_margin(Duration::from_secs(1))
        .deadline_interval(Duration::from_millis(50))
}

/// A partner on the mock with short retries and a generous attempt budget.
pub fn partner(name: &str, mock: &MockPartner) -> Partner {
    let adapter = HttpJsonAdapter::new(&mock.submit_url()).expect("adapter");
    Partner::new(name, adapter)
        .retry(Fixed::new(Duration::from_millis(20)).unwrap())
        .limits(RetryLimits::new(1000, Duration::from_secs(120)).unwrap())
        .attempt_timeout(Duration::from_secs(5))
        .without_circuit()
}

pub fn engine(store: &SqliteStore, partner: Partner) -> Liaison {
    Liaison::builder(store.clone())
        .partner(partner)
        .settings(quick_settings())
        .build()
        .expect("engine")
}

pub fn claim(partner: &str, i: usize) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "claim": format!("C-{i}"), "cents": i }),
    )
    .idempotency_key(format!("C-{i}"))
}

pub async fn all(store: &SqliteStore, partner: &str) -> Vec<Submission> {
    store
        .list(&ListFilter::default().partner(partner).limit(10_000))
        .await
        .expect("list")
}

pub async fn count_in(store: &SqliteStore, partner: &str, state: SubmissionState) -> usize {
    all(store, partner)
        .await
        .iter()
        .filter(|s| s.state == state)
        .count()
}

/// Wait until `check` holds, polling every 20 ms, failing after `limit`.
/// A bound on waiting for a condition, not a timing assertion.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run the engine until idle, bounded so a bug fails instead of hanging.
pub async fn drain(liaison: &Liaison) {
    tokio::time::timeout(Duration::from_secs(60), liaison.run_until_idle())
        .await
        .expect("engine did not become idle within 60 s")
        .expect("run_until_idle");
}
