//! Graceful shutdown leaves nothing in flight.

use std::time::Duration;

use liaison::store::{ListFilter, OutboxStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{AttemptOutcome, EventKind, SubmissionState};

use super::{claim, count_in, engine, eventually, partner};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_within_the_grace_period() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(100),
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let liaison = engine(&store, partner("lab", &mock).concurrency(4));
    for i in 0..20 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    let handle = liaison.start();
    eventually("requests under way", Duration::from_secs(10), || async {
        mock.stats().requests >= 2
    })
    .await;
    let report = handle.shutdown(Duration::from_secs(10)).await.unwrap();
    assert!(report.drained);
    assert_eq!(report.released, 0);
    assert_eq!(count_in(&store, "lab", SubmissionState::InFlight).await, 0);
    // Everything is either done or still queued: nothing lost, nothing stuck.
    let done = count_in(&store, "lab", SubmissionState::AwaitingResult).await;
    let queued = count_in(&store, "lab", SubmissionState::Queued).await;
    assert_eq!(done + queued, 20);
    assert_eq!(done as u64, mock.stats().side_effects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_the_grace_period_releases_the_leases() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::slow(Duration::from_secs(5), Behavior::Healthy))
        .await
        .unwrap();
    let liaison = engine(
        &store,
        partner("lab", &mock)
            .concurrency(3)
            .attempt_timeout(Duration::from_secs(30)),
    );
    for i in 0..6 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    let handle = liaison.start();
    eventually(
        "three requests under way",
        Duration::from_secs(10),
        || async { mock.stats().requests >= 3 },
    )
    .await;
    let report = handle.shutdown(Duration::from_millis(50)).await.unwrap();
    assert!(!report.drained);
    assert_eq!(report.released, 3);

    let all = store.list(&ListFilter::default().limit(100)).await.unwrap();
    assert!(
        all.iter().all(|s| s.state == SubmissionState::Queued),
        "none left in flight"
    );
    let released: Vec<_> = all.iter().filter(|s| s.attempts == 1).collect();
    assert_eq!(released.len(), 3);
    for s in released {
        let timeline = store.timeline(s.id).await.unwrap();
        assert_eq!(timeline.last().unwrap().kind, EventKind::Released);
        let attempts = store.attempts(s.id).await.unwrap();
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Interrupted));
    }
}
