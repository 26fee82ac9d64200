//! Poison submissions end: an expired lease is an attempt, and the reaper
//! dead-letters work past its partner's limits (consecutive expired leases,
//! max attempts, max age) instead of returning it to the queue for ever.

use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::retry::RetryLimits;
use liaison::store::{
    AttemptReport, ClaimRequest, ReapLimits, ReapPolicy, Replay, StateChange, StatsQuery,
};
use liaison::{Actor, AttemptOutcome, EventKind, SubmissionId, SubmissionState};

use super::harness::{Harness, Store, submission};

const LEASE: Duration = Duration::from_secs(10);

/// A clock the test moves: every claim and reap happens later than the last.
struct Clock(DateTime<Utc>);

impl Clock {
    fn tick(&mut self) -> DateTime<Utc> {
        self.0 += chrono::Duration::seconds(20);
        self.0
    }
}

/// Claim `partner`'s one due submission (it must be `id`) and let its lease
/// expire; the state the reaper left it in.
async fn crash(
    store: &Store,
    clock: &mut Clock,
    partner: &str,
    id: SubmissionId,
    policy: &ReapPolicy,
) -> SubmissionState {
    let at = clock.tick();
    let leases = store
        .claim(ClaimRequest::new(partner, 1, LEASE).at(at))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1, "one due submission of {partner}");
    assert_eq!(leases[0].submission.id, id);
    let reaped = store
        .reap_expired_leases(at + chrono::Duration::seconds(11), policy)
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].id, id);
    assert_eq!(reaped[0].partner, partner);
    let now = store.get(id).await.unwrap();
    assert_eq!(now.state, reaped[0].state, "the store says what it did");
    assert_eq!(now.lease_expires_at, None);
    reaped[0].state
}

/// The partner's dead letters of crashed workers, as health reads them.
async fn worker_crashed(store: &Store, partner: &str) -> u64 {
    let stats = store
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner(partner))
        .await
        .unwrap();
    stats[0].worker_crashed
}

/// The reason of the submission's last timeline line.
async fn last_reason(store: &Store, id: SubmissionId) -> String {
    let timeline = store.timeline(id).await.unwrap();
    timeline.last().unwrap().reason.clone().unwrap_or_default()
}

pub async fn an_expired_lease_past_each_limit_dead_letters_and_below_them_requeues(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let mut clock = Clock(Utc::now());
    let hour = Duration::from_secs(3600);
    let policy = ReapPolicy::default()
        .partner("crash", ReapLimits::new(3).unwrap())
        .partner(
            "attempts",
            ReapLimits::new(10)
                .unwrap()
                .retry(RetryLimits::new(2, hour).unwrap()),
        )
        .partner(
            "age",
            ReapLimits::new(10)
                .unwrap()
                .retry(RetryLimits::new(100, Duration::from_secs(60)).unwrap()),
        );

    // The crash limit: twice back to the queue, the third time given up.
    let id = store
        .enqueue(submission("crash", "p-1"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(
        crash(&store, &mut clock, "crash", id, &policy).await,
        Queued
    );
    assert_eq!(
        crash(&store, &mut clock, "crash", id, &policy).await,
        Queued
    );
    assert_eq!(worker_crashed(&store, "crash").await, 0);
    assert_eq!(
        crash(&store, &mut clock, "crash", id, &policy).await,
        DeadLettered
    );
    let dead = store.get(id).await.unwrap();
    assert_eq!(dead.attempts, 3);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("the worker did not report before its lease expired")
    );
    let timeline = store.timeline(id).await.unwrap();
    let last = timeline.last().unwrap();
    assert_eq!(
        last.reason.as_deref(),
        Some("the worker crashed or hung on it 3 times")
    );
    assert_eq!(last.actor, Actor::system("reaper"));
    assert_eq!(
        (last.from_state, last.to_state),
        (Some(InFlight), Some(DeadLettered))
    );
    assert_eq!(last.data.as_ref().unwrap()["lease_expiries"], 3);
    assert_eq!(
        timeline
            .iter()
            .filter(|e| e.kind == EventKind::LeaseExpired)
            .count(),
        2,
        "the two returns to the queue are journaled as before"
    );
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == Some(AttemptOutcome::LeaseExpired))
    );
    assert_eq!(worker_crashed(&store, "crash").await, 1);
    // Nothing is claimed any more.
    let later = clock.tick();
    assert!(
        store
            .claim(ClaimRequest::new("crash", 1, LEASE).at(later))
            .await
            .unwrap()
            .is_empty()
    );

    // Max attempts: the second attempt's expired lease uses them up.
    let id = store
        .enqueue(submission("attempts", "p-2"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(
        crash(&store, &mut clock, "attempts", id, &policy).await,
        Queued
    );
    assert_eq!(
        crash(&store, &mut clock, "attempts", id, &policy).await,
        DeadLettered
    );
    assert_eq!(
        last_reason(&store, id).await,
        "retries exhausted: max attempts reached: the worker did not report before its lease expired"
    );
    assert_eq!(worker_crashed(&store, "attempts").await, 1);

    // Max age: 60 s from the enqueue; the clock passes it at the third reap
    // (the enqueue is at the real time, the clock 20 s ahead per step).
    let mut clock = Clock(Utc::now());
    let id = store
        .enqueue(submission("age", "p-3"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(crash(&store, &mut clock, "age", id, &policy).await, Queued);
    assert_eq!(crash(&store, &mut clock, "age", id, &policy).await, Queued);
    // Reaped at +71 s.
    assert_eq!(
        crash(&store, &mut clock, "age", id, &policy).await,
        DeadLettered
    );
    assert_eq!(
        last_reason(&store, id).await,
        "retries exhausted: max age reached: the worker did not report before its lease expired"
    );

    // A partner the policy does not name: the fallback, the crash limit
    // alone (3 by default), whatever the attempts and age.
    let mut clock = Clock(Utc::now() + chrono::Duration::days(30));
    let id = store
        .enqueue(submission("other", "p-4"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(
        crash(&store, &mut clock, "other", id, &policy).await,
        Queued
    );
    assert_eq!(
        crash(&store, &mut clock, "other", id, &policy).await,
        Queued
    );
    assert_eq!(
        crash(&store, &mut clock, "other", id, &policy).await,
        DeadLettered
    );
    assert_eq!(
        last_reason(&store, id).await,
        "the worker crashed or hung on it 3 times"
    );

    // The counts are per partner, and the state counters agree.
    assert_eq!(worker_crashed(&store, "crash").await, 1);
    assert_eq!(worker_crashed(&store, "other").await, 1);
    let stats = store
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner("crash"))
        .await
        .unwrap();
    assert_eq!(stats[0].by_state[&DeadLettered].count, 1);
}

pub async fn a_report_resets_the_count_and_a_replay_starts_it_again(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let mut clock = Clock(Utc::now());
    let policy = ReapPolicy::default();
    let id = store
        .enqueue(submission("lab", "r-1"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);

    // The worker reports a result (a transient failure: back to the queue).
    let at = clock.tick();
    let lease = store
        .claim(ClaimRequest::new("lab", 1, LEASE).at(at))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Transient).error("503"),
            StateChange::to(Queued).due_at(at),
        )
        .await
        .unwrap();
    // The count starts again: two more crashes are below the limit...
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    // ...and the third in a row is not.
    assert_eq!(
        crash(&store, &mut clock, "lab", id, &policy).await,
        DeadLettered
    );
    assert_eq!(worker_crashed(&store, "lab").await, 1);

    // A replay recovers it (no longer counted) and starts a fresh count.
    let replayed = store
        .replay(id, Replay::new(Actor::person("ops"), "worker fixed"))
        .await
        .unwrap();
    assert_eq!(replayed.state, Queued);
    assert_eq!(worker_crashed(&store, "lab").await, 0);
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    assert_eq!(
        crash(&store, &mut clock, "lab", id, &policy).await,
        DeadLettered
    );
    assert_eq!(worker_crashed(&store, "lab").await, 1);
    // Resolving it by hand recovers it too.
    store
        .transition(
            id,
            StateChange::to(ResolvedManually)
                .actor(Actor::person("ops"))
                .reason("sent by hand"),
        )
        .await
        .unwrap();
    assert_eq!(worker_crashed(&store, "lab").await, 0);

    // A dead letter the worker reported (the partner refused it) is not a
    // crash, even after expired leases before it.
    let id = store
        .enqueue(submission("lab", "r-2"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(crash(&store, &mut clock, "lab", id, &policy).await, Queued);
    let at = clock.tick();
    let lease = store
        .claim(ClaimRequest::new("lab", 1, LEASE).at(at))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Permanent).error("422"),
            StateChange::to(DeadLettered).reason("the partner refused it for good: 422"),
        )
        .await
        .unwrap();
    assert_eq!(store.get(id).await.unwrap().state, DeadLettered);
    assert_eq!(worker_crashed(&store, "lab").await, 0);
}
