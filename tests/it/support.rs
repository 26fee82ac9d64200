//! Shared helpers: real SQLite files in temporary directories, and
//! drivers that work on any store.

use std::time::Duration;

use liaison::store::{
    AttemptReport, ClaimRequest, Lease, OutboxStore, SqliteConfig, SqliteStore, StateChange,
};
use liaison::{AttemptOutcome, NewSubmission, SubmissionId, SubmissionState};
use serde_json::json;
use tempfile::TempDir;

/// A store on a fresh file; keep the directory alive as long as the store.
pub fn store() -> (TempDir, SqliteStore) {
    store_with(SqliteConfig::default())
}

pub fn store_with(config: SqliteConfig) -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open_with(dir.path().join("outbox.db"), config).expect("open store");
    (dir, store)
}

pub fn submission(partner: &str, key: &str) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "claim": key, "amount": 12500 }),
    )
    .idempotency_key(key)
}

pub const LEASE: Duration = Duration::from_secs(30);

pub async fn claim_one<S: OutboxStore + ?Sized>(store: &S, partner: &str) -> Lease {
    // Dated by the store's clock (on PostgreSQL the database's, as
    // measured), as the enqueue before it was: by the host's, a claim right
    // after an enqueue can miss it by the clocks' few milliseconds.
    let mut leases = store
        .claim(ClaimRequest::new(partner, 1, LEASE).at(store.now()))
        .await
        .expect("claim");
    assert_eq!(leases.len(), 1, "expected one due submission for {partner}");
    leases.remove(0)
}

/// Drive a fresh submission of `partner` into `state` through the store's
/// own operations. Returns its id and, for `InFlight`, the lease.
pub async fn drive_to<S: OutboxStore + ?Sized>(
    store: &S,
    partner: &str,
    state: SubmissionState,
) -> (SubmissionId, Option<Lease>) {
    drive_new_to(store, submission(partner, &format!("{partner}-key")), state).await
}

/// Like [`drive_to`] for a given submission; its partner must have no other
/// due work.
pub async fn drive_new_to<S: OutboxStore + ?Sized>(
    store: &S,
    new: NewSubmission,
    state: SubmissionState,
) -> (SubmissionId, Option<Lease>) {
    use SubmissionState::*;
    let partner = new.partner().to_owned();
    let partner = partner.as_str();
    let id = store.enqueue(new).await.expect("enqueue").submission.id;
    if state == Queued {
        return (id, None);
    }
    if state == Cancelled {
        store
            .transition(id, StateChange::to(Cancelled))
            .await
            .expect("cancel");
        return (id, None);
    }
    let lease = claim_one(store, partner).await;
    let settle = |outcome, target| {
        let lease = lease.clone();
        async move {
            store
                .complete(&lease, AttemptReport::new(outcome), StateChange::to(target))
                .await
                .expect("complete")
        }
    };
    match state {
        InFlight => return (id, Some(lease)),
        AwaitingResult | Stuck => {
            settle(AttemptOutcome::Accepted, AwaitingResult).await;
            if state == Stuck {
                store
                    .transition(id, StateChange::to(Stuck))
                    .await
                    .expect("stuck");
            }
        }
        Succeeded => {
            settle(AttemptOutcome::Succeeded, Succeeded).await;
        }
        Failed | ResolvedManually => {
            settle(AttemptOutcome::Failed, Failed).await;
            if state == ResolvedManually {
                store
                    .transition(id, StateChange::to(ResolvedManually))
                    .await
                    .expect("resolve");
            }
        }
        DeadLettered => {
            settle(AttemptOutcome::Permanent, DeadLettered).await;
        }
        Queued | Cancelled => unreachable!(),
    }
    assert_eq!(store.get(id).await.unwrap().state, state);
    (id, None)
}

/// Claim every due result delivery of `partner` and end it: parked (the
/// host's handler "failed" with `error`) for the submissions in `park`,
/// delivered for the others. Needs `store.set_result_delivery(partner,
/// true)` before the submissions finished. Returns the parked deliveries.
pub async fn park_deliveries<S: OutboxStore + ?Sized>(
    store: &S,
    partner: &str,
    park: &[SubmissionId],
    error: &str,
) -> Vec<liaison::Delivery> {
    use liaison::store::{DeliveryClaim, DeliveryEnd};
    let leases = store
        .claim_deliveries(
            DeliveryClaim::new(vec![partner.to_owned()], 100, Duration::from_secs(60))
                .at(store.now()),
        )
        .await
        .expect("claim deliveries");
    let mut parked = Vec::new();
    for lease in leases {
        let end = if park.contains(&lease.delivery.submission_id) {
            parked.push(lease.delivery.clone());
            DeliveryEnd::Parked {
                error: error.to_owned(),
            }
        } else {
            DeliveryEnd::Delivered
        };
        store
            .finish_delivery(&lease, end)
            .await
            .expect("end delivery");
    }
    parked
}

/// Counts the attempts an instance made through its adapter (child-process
/// tests print it for the parent).
#[derive(Debug)]
pub struct Counting {
    pub inner: liaison::HttpJsonAdapter,
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl liaison::PartnerAdapter for Counting {
    async fn submit(
        &self,
        ctx: &liaison::AttemptContext,
        submission: &liaison::Submission,
    ) -> Result<liaison::SubmitOutcome, liaison::PartnerError> {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.submit(ctx, submission).await
    }
}
