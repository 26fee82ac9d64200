//! Enqueue claims into an SQLite outbox, work them as a dispatcher would, and
//! print each submission's timeline.
//!
//! Run with:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! You will see the outbox file's path, what happened to each submission
//! (one accepted, one retried after 300 ms then accepted, one rejected for good, one
//! deduplicated on a second enqueue, one cancelled) and the full timeline of
//! each. The dispatcher that talks to a real partner over HTTP is the next
//! piece of liaison; until it lands this example plays the partner's answers
//! itself, through the same store calls the dispatcher will make.

use std::time::Duration;

use chrono::Utc;
use liaison::store::{
    AttemptReport, ClaimRequest, ListFilter, OutboxStore, SqliteStore, StateChange,
};
use liaison::{Actor, AttemptOutcome, NewSubmission, SubmissionState};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quickstart.db");
    let store = SqliteStore::open(&path)?;
    println!("outbox: {}", path.display());

    // 1. The host enqueues claims. The claim id is the idempotency key.
    for (claim, cents) in [
        ("C-1001", 12_500),
        ("C-1002", 8_000),
        ("C-1003", 43_000),
        ("C-1004", 99),
    ] {
        let submission = NewSubmission::new(
            "clearinghouse",
            "claim.submit",
            json!({ "claim_id": claim, "amount_cents": cents }),
        )
        .idempotency_key(claim)
        .correlation("claim_id", claim)
        .business_value(cents);
        store.enqueue(submission).await?;
    }
    // A retried request from the host is recognised, not sent twice.
    let again = store
        .enqueue(
            NewSubmission::new(
                "clearinghouse",
                "claim.submit",
                json!({ "amount_cents": 12_500, "claim_id": "C-1001" }),
            )
            .idempotency_key("C-1001"),
        )
        .await?;
    println!(
        "enqueue C-1001 again: deduplicated={} (same submission {})",
        again.deduplicated, again.submission.id
    );
    // C-1004 is withdrawn before it is sent.
    let withdrawn = store
        .list(&ListFilter::default().idempotency_key("C-1004"))
        .await?
        .remove(0);
    store
        .transition(
            withdrawn.id,
            StateChange::to(SubmissionState::Cancelled)
                .actor(Actor::person("alice@billing"))
                .reason("patient paid at the desk"),
        )
        .await?;

    // 2. A worker claims due work under leases and reports the partner's answers.
    let lease_for = Duration::from_secs(30);
    for lease in store
        .claim(ClaimRequest::new("clearinghouse", 10, lease_for))
        .await?
    {
        let key = lease.submission.idempotency_key.clone();
        let (report, change) = match key.as_str() {
            "C-1001" => (
                AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
                StateChange::to(SubmissionState::AwaitingResult).external_ref("CH-77001"),
            ),
            "C-1002" => (
                AttemptReport::new(AttemptOutcome::Transient)
                    .http_status(503)
                    .error("partner unavailable"),
                StateChange::to(SubmissionState::Queued)
                    .due_at(Utc::now() + chrono::Duration::milliseconds(300)),
            ),
            _ => (
                AttemptReport::new(AttemptOutcome::Permanent)
                    .http_status(422)
                    .error("member id missing"),
                StateChange::to(SubmissionState::DeadLettered),
            ),
        };
        store.complete(&lease, report, change).await?;
    }
    // The retry comes due 300 ms later and is accepted.
    tokio::time::sleep(Duration::from_millis(350)).await;
    for lease in store
        .claim(ClaimRequest::new("clearinghouse", 10, lease_for))
        .await?
    {
        store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
                StateChange::to(SubmissionState::AwaitingResult).external_ref("CH-77002"),
            )
            .await?;
    }

    // 3. What the outbox now knows.
    println!();
    for s in store.list(&ListFilter::default()).await? {
        println!(
            "{}  {:<8} {:<16} attempts={} value={:>6} last_error={}",
            s.id,
            s.idempotency_key,
            s.state,
            s.attempts,
            s.business_value.unwrap_or(0),
            s.last_error.as_deref().unwrap_or("-"),
        );
        for e in store.timeline(s.id).await? {
            println!(
                "    {}  {:<20} {:>16} -> {:<16} by {}{}",
                e.at.format("%H:%M:%S%.3f"),
                e.kind,
                e.from_state.map_or("", |st| st.as_str()),
                e.to_state.map_or("", |st| st.as_str()),
                e.actor,
                e.reason.map(|r| format!(": {r}")).unwrap_or_default(),
            );
        }
    }
    Ok(())
}
