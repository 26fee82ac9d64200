//! Claims and leases: exclusive claims, fencing by token, expired leases,
//! due times, priority and ordering keys.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use liaison::store::{AttemptReport, ClaimRequest, ReapPolicy, StateChange};
use liaison::{AttemptOutcome, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::harness::{Harness, LEASE, claim_one, submission};

pub async fn concurrent_claimers_never_receive_the_same_submission(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    let batch: Vec<_> = (0..600)
        .map(|i| submission("bank", &format!("k{i}")))
        .collect();
    stores[0].enqueue_batch(batch).await.unwrap();

    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = s
                    .claim(ClaimRequest::new("bank", 7, LEASE).at(s.now()))
                    .await
                    .unwrap();
                if leases.is_empty() {
                    break mine;
                }
                mine.extend(
                    leases
                        .into_iter()
                        .map(|l| (l.submission.id, l.token, l.attempt)),
                );
            }
        }));
    }
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    for task in tasks {
        for (id, token, attempt) in task.await.unwrap() {
            assert!(ids.insert(id), "submission {id} claimed twice");
            assert!(tokens.insert(token), "lease token reused");
            assert_eq!(attempt, 1);
        }
    }
    assert_eq!(ids.len(), 600);
}

pub async fn a_stale_token_changes_nothing_and_is_journaled(h: &Harness) {
    let store = h.store().await;
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
    assert_eq!(first.submission.state, SubmissionState::InFlight);
    assert_eq!(
        first
            .submission
            .lease_expires_at
            .map(|t| t.timestamp_millis()),
        Some(first.expires_at.timestamp_millis())
    );

    // The first worker stalls past its lease; the reaper returns the work.
    let reaped = store
        .reap_expired_leases(t0 + chrono::Duration::seconds(11), &ReapPolicy::default())
        .await
        .unwrap();
    assert_eq!(reaped.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(reaped[0].state, SubmissionState::Queued);
    assert_eq!(reaped[0].partner, "bank");
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Queued);
    assert_eq!(s.lease_expires_at, None);

    let second = store
        .claim(ClaimRequest::new("bank", 1, LEASE).at(t0 + chrono::Duration::seconds(12)))
        .await
        .unwrap()
        .remove(0);
    assert_ne!(first.token, second.token);
    assert_eq!(second.attempt, 2);

    // The first worker wakes up and reports: refused, journaled (and that
    // journal line is committed), nothing changed.
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
    let other = h.store().await;
    let timeline = other.timeline(id).await.unwrap();
    let stale = timeline.last().unwrap();
    assert_eq!(stale.kind, EventKind::StaleResultIgnored);
    let data = stale.data.as_ref().unwrap();
    assert_eq!(data["attempt"], 1);
    assert_eq!(data["lease_token"], first.token.to_string());
    assert_eq!(data["http_status"], 200);
    assert_eq!(data["state"], "in_flight");

    let done = store
        .complete(
            &second,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(done.state, SubmissionState::Succeeded);
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));
    assert_eq!(attempts[1].outcome, Some(AttemptOutcome::Succeeded));
}

pub async fn expired_leases_come_back_and_are_journaled(h: &Harness) {
    let store = h.store().await;
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
    assert!(
        store
            .reap_expired_leases(t0 + chrono::Duration::seconds(4), &ReapPolicy::default())
            .await
            .unwrap()
            .is_empty()
    );
    let reaped = store
        .reap_expired_leases(t0 + chrono::Duration::seconds(6), &ReapPolicy::default())
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
        let data = event.data.as_ref().unwrap();
        assert_eq!(data["attempt"], 1);
        assert_eq!(data["lease_token"], lease.token.to_string());
        let attempts = store.attempts(id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));
        assert!(attempts[0].finished_at.is_some());
        let s = store.get(id).await.unwrap();
        assert_eq!(s.replays, 0, "a rescue is not a replay");
    }
    let again = ClaimRequest::new("bank", 10, LEASE).at(t0 + chrono::Duration::seconds(6));
    assert_eq!(store.claim(again).await.unwrap().len(), 3);
}

pub async fn retries_wait_for_their_due_time(h: &Harness) {
    let store = h.store().await;
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
    assert_eq!(s.due_at.timestamp_millis(), due.timestamp_millis());
    assert!(
        store
            .claim(ClaimRequest::new("bank", 10, LEASE).at(store.now()))
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
    let retry = events
        .iter()
        .find(|e| e.kind == EventKind::RetryScheduled)
        .unwrap();
    assert_eq!(retry.data.as_ref().unwrap()["http_status"], 503);
    assert_eq!(retry.reason.as_deref(), Some("unavailable"));
}

pub async fn a_claims_line_is_read_from_its_attempt_in_its_place(h: &Harness) {
    use EventKind::*;
    let store = h.store().await;
    let a = store
        .enqueue(submission("bank", "a"))
        .await
        .unwrap()
        .submission;
    let first = claim_one(&store, "bank").await;
    let b = store
        .enqueue(submission("bank", "b"))
        .await
        .unwrap()
        .submission;
    store
        .complete(
            &first,
            AttemptReport::new(AttemptOutcome::Transient).http_status(503),
            StateChange::to(SubmissionState::Queued).due_at(Utc::now()),
        )
        .await
        .unwrap();
    // `a` claimed again, with `b`: one claim placed for both, each line in
    // its place among its own submission's lines.
    let leases = store
        .claim(ClaimRequest::new("bank", 2, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 2);
    for lease in &leases {
        store
            .complete(
                lease,
                AttemptReport::new(AttemptOutcome::Succeeded).http_status(200),
                StateChange::to(SubmissionState::Succeeded),
            )
            .await
            .unwrap();
    }
    // No claim stored a line.
    assert_eq!(
        h.count_raw("SELECT COUNT(*) FROM liaison_events WHERE kind = 'claimed'")
            .await,
        0,
        "{}",
        h.name()
    );
    let timeline = store.timeline(a.id).await.unwrap();
    let kinds: Vec<_> = timeline.iter().map(|line| line.kind.clone()).collect();
    assert_eq!(
        kinds,
        [Enqueued, Claimed, RetryScheduled, Claimed, Succeeded],
        "{}",
        h.name()
    );
    assert!(timeline.windows(2).all(|w| w[0].seq < w[1].seq));
    let second = leases.iter().find(|l| l.submission.id == a.id).unwrap();
    let attempts = store.attempts(a.id).await.unwrap();
    for (line, (lease, attempt)) in [&timeline[1], &timeline[3]]
        .into_iter()
        .zip([(&first, &attempts[0]), (second, &attempts[1])])
    {
        assert_eq!(
            (line.from_state, line.to_state),
            (
                Some(SubmissionState::Queued),
                Some(SubmissionState::InFlight)
            )
        );
        assert_eq!(line.actor.as_str(), "system:dispatcher");
        assert_eq!(line.at, attempt.started_at);
        let data = line.data.as_ref().unwrap();
        assert_eq!(data["attempt"], lease.attempt);
        assert_eq!(data["lease_token"], lease.token.to_string());
    }
    let kinds: Vec<_> = store
        .timeline(b.id)
        .await
        .unwrap()
        .into_iter()
        .map(|line| line.kind)
        .collect();
    assert_eq!(kinds, [Enqueued, Claimed, Succeeded]);

    // An attempt an earlier build started has no place recorded and its
    // line stored: read as stored, once.
    h.execute_raw(&format!(
        "UPDATE liaison_attempts SET claim_seq = NULL WHERE submission_id = '{b}'; \
         INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor) \
         VALUES ('{b}', 1, 'claimed', 'queued', 'in_flight', 'system:dispatcher')",
        b = b.id
    ))
    .await;
    let claimed: Vec<_> = store
        .timeline(b.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|line| line.kind == Claimed)
        .collect();
    assert_eq!(claimed.len(), 1, "{}: {claimed:?}", h.name());
    assert_eq!(claimed[0].at.timestamp_millis(), 1);
}

pub async fn not_before_and_priority_shape_the_claim_order(h: &Harness) {
    let store = h.store().await;
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
        .claim(ClaimRequest::new("bank", 10, LEASE).at(store.now()))
        .await
        .unwrap();
    let keys: Vec<_> = leases
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["high", "low"]);
    let leases = store
        .claim(ClaimRequest::new("bank", 10, LEASE).at(later))
        .await
        .unwrap();
    assert_eq!(leases[0].submission.idempotency_key, "tomorrow");
    assert_eq!(
        leases[0]
            .submission
            .not_before
            .map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis())
    );
}

pub async fn one_claim_takes_at_most_1024_in_claim_order(h: &Harness) {
    let store = h.store().await;
    // 1,100 due, in three priorities interleaved.
    for chunk in 0..11 {
        let batch = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                submission("bank", &format!("k{n}")).priority(n % 3)
            })
            .collect();
        store.enqueue_batch(batch).await.unwrap();
    }
    let leases = store
        .claim(ClaimRequest::new("bank", 5000, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1024, "a claim is capped, whatever its limit");
    // Claim order: priority first, then enqueue order within it.
    let order: Vec<(i32, u32)> = leases
        .iter()
        .map(|l| {
            let n: u32 = l.submission.idempotency_key[1..].parse().unwrap();
            (-l.submission.priority, n)
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "leases come in claim order");
    assert_eq!(order[0], (-2, 2));
    let tokens: HashSet<_> = leases.iter().map(|l| l.token).collect();
    assert_eq!(tokens.len(), 1024, "each lease has its own token");
    for lease in [&leases[0], &leases[511], &leases[1023]] {
        assert_eq!(lease.attempt, 1);
        assert_eq!(lease.submission.state, SubmissionState::InFlight);
        let attempts = store.attempts(lease.submission.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "the claim started the attempt");
        assert_eq!(attempts[0].number, 1);
        assert_eq!(attempts[0].finished_at, None);
    }
    // The rest is still due, and the next claim takes it.
    let rest = store
        .claim(ClaimRequest::new("bank", 5000, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(rest.len(), 76);
    assert!(rest.iter().all(|l| !tokens.contains(&l.token)));
}

pub async fn claims_are_per_partner(h: &Harness) {
    let store = h.store().await;
    store.enqueue(submission("bank", "k")).await.unwrap();
    store.enqueue(submission("lab", "k")).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("lab", 10, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].submission.partner, "lab");
    let err = store
        .claim(ClaimRequest::new("", 10, LEASE).at(store.now()))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input());
    assert!(
        store
            .claim(ClaimRequest::new("bank", 0, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty()
    );
}

fn keyed(key: &str, order: &str) -> NewSubmission {
    NewSubmission::new("lab", "order", json!({ "k": key }))
        .idempotency_key(key)
        .ordering_key(order)
}

pub async fn an_ordering_key_is_sent_one_at_a_time_in_enqueue_order(h: &Harness) {
    let store = h.store().await;
    store.enqueue(keyed("a1", "patient-1")).await.unwrap();
    store.enqueue(keyed("a2", "patient-1")).await.unwrap();
    store.enqueue(keyed("b1", "patient-2")).await.unwrap();
    store.enqueue(submission("lab", "free")).await.unwrap();

    let first = store
        .claim(ClaimRequest::new("lab", 10, LEASE).at(store.now()))
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
        .claim(ClaimRequest::new("lab", 10, LEASE).at(store.now()))
        .await
        .unwrap();
    let keys: Vec<_> = next
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["a1"]);

    store
        .complete(
            &next[0],
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult),
        )
        .await
        .unwrap();
    let last = store
        .claim(ClaimRequest::new("lab", 10, LEASE).at(store.now()))
        .await
        .unwrap();
    let keys: Vec<_> = last
        .iter()
        .map(|l| l.submission.idempotency_key.as_str())
        .collect();
    assert_eq!(keys, ["a2"]);
}

/// Concurrent claimers, each taking one at a time, still send one keyed
/// submission at a time and in enqueue order.
pub async fn concurrent_claimers_respect_ordering_keys(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    let batch: Vec<_> = (0..40)
        .map(|i| keyed(&format!("o{i:02}"), "one-key"))
        .collect();
    stores[0].enqueue_batch(batch).await.unwrap();
    let mut sent = Vec::new();
    while sent.len() < 40 {
        let mut tasks = Vec::new();
        for t in 0..4 {
            let s = stores[t % 2].clone();
            tasks.push(tokio::spawn(async move {
                s.claim(ClaimRequest::new("lab", 3, LEASE).at(s.now()))
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = Vec::new();
        for task in tasks {
            claimed.extend(task.await.unwrap());
        }
        assert_eq!(claimed.len(), 1, "one keyed submission in flight at a time");
        let lease = claimed.remove(0);
        sent.push(lease.submission.idempotency_key.clone());
        stores[1]
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Succeeded),
                StateChange::to(SubmissionState::Succeeded),
            )
            .await
            .unwrap();
    }
    let expected: Vec<_> = (0..40).map(|i| format!("o{i:02}")).collect();
    assert_eq!(sent, expected);
}

pub async fn a_dead_letter_holds_its_successors_unless_configured_otherwise(h: &Harness) {
    let store = h.store().await;
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
            .claim(ClaimRequest::new("lab", 10, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty()
    );
    let mut pass = ClaimRequest::new("lab", 10, LEASE).at(store.now());
    pass.dead_letter_blocks_ordering = false;
    let leases = store.claim(pass).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].submission.idempotency_key, "a2");
}

pub async fn a_partner_reference_belongs_to_one_submission(h: &Harness) {
    let store = h.store().await;
    store.enqueue(submission("bank", "a")).await.unwrap();
    store.enqueue(submission("bank", "b")).await.unwrap();
    store.enqueue(submission("lab", "c")).await.unwrap();
    let mut leases = store
        .claim(ClaimRequest::new("bank", 2, LEASE).at(store.now()))
        .await
        .unwrap();
    let accept = |r: &str| {
        StateChange::to(SubmissionState::AwaitingResult)
            .external_ref(r)
            .result_deadline(Utc::now() + chrono::Duration::hours(1))
    };
    let report = || AttemptReport::new(AttemptOutcome::Accepted).http_status(202);
    let a = store
        .complete(&leases[0], report(), accept("REF-1"))
        .await
        .unwrap();
    assert_eq!(a.external_ref.as_deref(), Some("REF-1"));
    assert!(a.result_deadline.is_some());
    let b = leases.remove(1);
    let before = store.get(b.submission.id).await.unwrap();
    let err = store
        .complete(&b, report(), accept("REF-1"))
        .await
        .unwrap_err();
    assert!(err.is_reference_taken(), "{err:?}");
    match &err {
        liaison::Error::ReferenceTaken {
            partner,
            reference,
            holder,
        } => {
            assert_eq!((partner.as_str(), reference.as_str()), ("bank", "REF-1"));
            assert_eq!(*holder, Some(a.id), "the holder is named");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get(b.submission.id).await.unwrap(), before);
    // Another partner may use the same reference.
    let c = claim_one(&store, "lab").await;
    store.complete(&c, report(), accept("REF-1")).await.unwrap();
}
