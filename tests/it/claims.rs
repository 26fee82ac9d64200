//! Claims and leases: exclusive claims, fencing by token, expired leases,
//! due times, priority and ordering keys.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use liaison::store::{AttemptReport, ClaimRequest, OutboxStore, SqliteStore, StateChange};
use liaison::{AttemptOutcome, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use crate::support::{LEASE, claim_one, store, submission};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_receive_the_same_submission() {
    let (dir, store) = store();
    // A second store on the same file: its own writer and connections, as a
    // second process would have.
    let other = SqliteStore::open(dir.path().join("outbox.db")).unwrap();
    let batch: Vec<_> = (0..600)
        .map(|i| submission("bank", &format!("k{i}")))
        .collect();
    store.enqueue_batch(batch).await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = if t % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = s.claim(ClaimRequest::new("bank", 7, LEASE)).await.unwrap();
                if leases.is_empty() {
                    break mine;
                }
                mine.extend(leases.into_iter().map(|l| (l.submission.id, l.token)));
            }
        }));
    }
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for (id, token) in task.await.unwrap() {
            total += 1;
            assert!(ids.insert(id), "submission {id} claimed twice");
            assert!(tokens.insert(token), "lease token reused");
        }
    }
    assert_eq!(total, 600);
}

#[tokio::test]
async fn a_stale_token_changes_nothing_and_is_journaled() {
    let (_dir, store) = store();
    let id = store
        .enqueue(submission("bank", "k1"))
        .await
        .unwrap()
        .submission
        .id;
    let t0 = Utc::now();
    let first = store
        .claim(ClaimRequest::new("bank", 1, Duration::from_secs(10)).at(t0))
        .await
        .unwrap()
        .remove(0);

    // The first worker stalls past its lease; the reaper returns the work.
    let reaped = store
        .reap_expired_leases(t0 + chrono::Duration::seconds(11))
        .await
        .unwrap();
    assert_eq!(reaped, vec![id]);
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Queued);
    assert_eq!(s.lease_expires_at, None);

    // A second worker claims it under a fresh token.
    let second = store
        .claim(ClaimRequest::new("bank", 1, LEASE).at(t0 + chrono::Duration::seconds(12)))
        .await
        .unwrap()
        .remove(0);
    assert_ne!(first.token, second.token);
    assert_eq!(second.attempt, 2);

    // The first worker wakes up and reports: refused, journaled, nothing changed.
    let before = store.get(id).await.unwrap();
    let err = store
        .complete(
            &first,
            AttemptReport::new(AttemptOutcome::Succeeded).http_status(200),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap_err();
    assert!(err.is_stale_lease(), "{err}");
    assert_eq!(store.get(id).await.unwrap(), before);
    let timeline = store.timeline(id).await.unwrap();
    let stale = timeline.last().unwrap();
    assert_eq!(stale.kind, EventKind::StaleResultIgnored);
    assert_eq!(stale.data.as_ref().unwrap()["attempt"], 1);

    // The current holder completes normally.
    let done = store
        .complete(
            &second,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(done.state, SubmissionState::Succeeded);
}

#[tokio::test]
async fn expired_leases_come_back_and_are_journaled() {
    let (_dir, store) = store();
    for i in 0..3 {
        store
            .enqueue(submission("bank", &format!("k{i}")))
            .await
            .unwrap();
    }
    let t0 = Utc::now();
    let leases = store
        .claim(ClaimRequest::new("bank", 3, Duration::from_secs(5)).at(t0))
        .await
        .unwrap();
    assert_eq!(leases.len(), 3);
    // Not yet expired: nothing comes back.
    assert!(
        store
            .reap_expired_leases(t0 + chrono::Duration::seconds(4))
            .await
            .unwrap()
            .is_empty()
    );
    let reaped = store
        .reap_expired_leases(t0 + chrono::Duration::seconds(6))
        .await
        .unwrap();
    assert_eq!(reaped.len(), 3);
    for lease in &leases {
        let id = lease.submission.id;
        let timeline = store.timeline(id).await.unwrap();
        let event = timeline.last().unwrap();
        assert_eq!(event.kind, EventKind::LeaseExpired);
        assert_eq!(event.actor.as_str(), "system:reaper");
        assert_eq!(event.from_state, Some(SubmissionState::InFlight));
        assert_eq!(event.to_state, Some(SubmissionState::Queued));
        let attempts = store.attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));
        assert!(attempts[0].finished_at.is_some());
    }
    // And they are claimable again.
    let again = ClaimRequest::new("bank", 10, LEASE).at(t0 + chrono::Duration::seconds(6));
    assert_eq!(store.claim(again).await.unwrap().len(), 3);
}

#[tokio::test]
async fn retries_wait_for_their_due_time() {
    let (_dir, store) = store();
    let id = store
        .enqueue(submission("bank", "k"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "bank").await;
    let due = Utc::now() + chrono::Duration::seconds(60);
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Transient)
                .http_status(503)
                .error("unavailable"),
            StateChange::to(SubmissionState::Queued).due_at(due),
        )
        .await
        .unwrap();
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Queued);
    assert_eq!(s.last_error.as_deref(), Some("unavailable"));
    assert!(
        store
            .claim(ClaimRequest::new("bank", 10, LEASE))
            .await
            .unwrap()
            .is_empty()
    );
    let later = ClaimRequest::new("bank", 10, LEASE).at(due + chrono::Duration::seconds(1));
    assert_eq!(store.claim(later).await.unwrap().len(), 1);
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Transient));
    assert_eq!(attempts[0].http_status, Some(503));
    let events = store.timeline(id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == EventKind::RetryScheduled));
}

#[tokio::test]
async fn not_before_and_priority_shape_the_claim_order() {
    let (_dir, store) = store();
    let later = Utc::now() + chrono::Duration::hours(1);
    store
        .enqueue(submission("bank", "low").priority(0))
        .await
        .unwrap();
    store
        .enqueue(submission("bank", "high").priority(9))
        .await
        .unwrap();
    store
        .enqueue(
            submission("bank", "tomorrow")
                .priority(100)
                .not_before(later),
        )
        .await
        .unwrap();
    let leases = store
        .claim(ClaimRequest::new("bank", 10, LEASE))
        .await
        .unwrap();
    let keys: Vec<_> = leases
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["high", "low"]);
    let at_time = ClaimRequest::new("bank", 10, LEASE).at(later);
    let leases = store.claim(at_time).await.unwrap();
    assert_eq!(leases[0].submission.idempotency_key, "tomorrow");
}

#[tokio::test]
async fn claims_are_per_partner() {
    let (_dir, store) = store();
    store.enqueue(submission("bank", "k")).await.unwrap();
    store.enqueue(submission("lab", "k")).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("lab", 10, LEASE))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].submission.partner, "lab");
    let err = store
        .claim(ClaimRequest::new("", 10, LEASE))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input());
}

fn keyed(key: &str, order: &str) -> NewSubmission {
    NewSubmission::new("lab", "order", json!({ "k": key }))
        .idempotency_key(key)
        .ordering_key(order)
}

#[tokio::test]
async fn an_ordering_key_is_sent_one_at_a_time_in_enqueue_order() {
    let (_dir, store) = store();
    store.enqueue(keyed("a1", "patient-1")).await.unwrap();
    store.enqueue(keyed("a2", "patient-1")).await.unwrap();
    store.enqueue(keyed("b1", "patient-2")).await.unwrap();
    store.enqueue(submission("lab", "free")).await.unwrap();

    let first = store
        .claim(ClaimRequest::new("lab", 10, LEASE))
        .await
        .unwrap();
    let keys: HashSet<_> = first
        .iter()
        .map(|l| l.submission.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys,
        HashSet::from(["a1".into(), "b1".into(), "free".into()])
    );

    // a1 fails transiently and is queued again: a2 still waits behind it.
    let a1 = first
        .iter()
        .find(|l| l.submission.idempotency_key == "a1")
        .unwrap();
    store
        .complete(
            a1,
            AttemptReport::new(AttemptOutcome::Transient),
            StateChange::to(SubmissionState::Queued),
        )
        .await
        .unwrap();
    let next = store
        .claim(ClaimRequest::new("lab", 10, LEASE))
        .await
        .unwrap();
    let keys: Vec<_> = next
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["a1"]);

    // Once a1 is accepted, a2 goes.
    store
        .complete(
            &next[0],
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult),
        )
        .await
        .unwrap();
    let last = store
        .claim(ClaimRequest::new("lab", 10, LEASE))
        .await
        .unwrap();
    let keys: Vec<_> = last
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["a2"]);
}

#[tokio::test]
async fn a_dead_letter_holds_its_successors_unless_configured_otherwise() {
    let (_dir, store) = store();
    store.enqueue(keyed("a1", "patient-1")).await.unwrap();
    store.enqueue(keyed("a2", "patient-1")).await.unwrap();
    let a1 = claim_one(&store, "lab").await;
    store
        .complete(
            &a1,
            AttemptReport::new(AttemptOutcome::Permanent).http_status(422),
            StateChange::to(SubmissionState::DeadLettered),
        )
        .await
        .unwrap();
    assert!(
        store
            .claim(ClaimRequest::new("lab", 10, LEASE))
            .await
            .unwrap()
            .is_empty()
    );

    let mut pass = ClaimRequest::new("lab", 10, LEASE);
    pass.dead_letter_blocks_ordering = false;
    let leases = store.claim(pass).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].submission.idempotency_key, "a2");
}
