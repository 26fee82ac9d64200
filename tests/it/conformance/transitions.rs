//! The transition table, enforced by every store.

use liaison::store::{AttemptReport, ClaimRequest, FinishedAttempt, Replay, StateChange};
use liaison::{Actor, AttemptOutcome, ErrorKind, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::harness::{Harness, LEASE, claim_one, drive_to, submission};

pub async fn every_pair_of_states_follows_the_table(h: &Harness) {
    let store = h.store().await;
    let mut checked = 0;
    for (i, from) in SubmissionState::ALL.into_iter().enumerate() {
        for (j, to) in SubmissionState::ALL.into_iter().enumerate() {
            let partner = format!("p{i}-{j}");
            let (id, lease) = drive_to(&store, &partner, from).await;
            let before = store.get(id).await.unwrap();
            let events_before = store.timeline(id).await.unwrap().len();

            let result = if to == SubmissionState::InFlight {
                // Only a claim puts work in flight.
                let claimed = store
                    .claim(ClaimRequest::new(&partner, 10, LEASE).at(store.now()))
                    .await
                    .unwrap();
                Ok(claimed.len())
            } else if let (Some(lease), false) = (&lease, to == SubmissionState::Cancelled) {
                store
                    .complete(
                        lease,
                        AttemptReport::new(AttemptOutcome::Succeeded),
                        StateChange::to(to),
                    )
                    .await
                    .map(|_| 1)
            } else {
                store.transition(id, StateChange::to(to)).await.map(|_| 1)
            };

            let after = store.get(id).await.unwrap();
            let events_after = store.timeline(id).await.unwrap();
            let name = h.name();
            if from.can_become(to) {
                assert_eq!(
                    result.as_ref().ok(),
                    Some(&1),
                    "{name}: {from} -> {to} should be applied: {result:?}"
                );
                assert_eq!(after.state, to, "{name}: {from} -> {to}");
                assert_eq!(
                    events_after.len(),
                    events_before + 1,
                    "{name}: {from} -> {to} journals one event"
                );
                let last = events_after.last().unwrap();
                assert_eq!((last.from_state, last.to_state), (Some(from), Some(to)));
                assert_eq!(
                    after.terminal_at.is_some(),
                    to.is_terminal(),
                    "{name}: {from} -> {to}"
                );
            } else {
                match &result {
                    Ok(0) => assert_eq!(to, SubmissionState::InFlight),
                    Err(e) => assert_eq!(
                        e.kind(),
                        ErrorKind::InvalidTransition,
                        "{name}: {from} -> {to}: {e}"
                    ),
                    Ok(n) => panic!("{name}: {from} -> {to} must be refused, applied {n}"),
                }
                assert_eq!(after, before, "{name}: {from} -> {to} refused but changed");
                assert_eq!(
                    events_after.len(),
                    events_before,
                    "{name}: {from} -> {to} refused but journaled"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 81);
}

pub async fn an_attempt_in_flight_is_settled_only_under_its_lease(h: &Harness) {
    let store = h.store().await;
    let (id, _lease) = drive_to(&store, "p", SubmissionState::InFlight).await;
    let err = store
        .transition(id, StateChange::to(SubmissionState::Succeeded))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTransition);
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::InFlight
    );
}

pub async fn cancelling_in_flight_closes_the_attempt_and_fences_the_worker(h: &Harness) {
    let store = h.store().await;
    let (id, lease) = drive_to(&store, "p", SubmissionState::InFlight).await;
    let lease = lease.unwrap();
    store
        .transition(
            id,
            StateChange::to(SubmissionState::Cancelled)
                .actor(Actor::person("alice"))
                .reason("claim withdrawn"),
        )
        .await
        .unwrap();
    let late = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap_err();
    assert!(late.is_stale_lease(), "{late}");
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Cancelled);
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Cancelled));
    assert_eq!(attempts[0].error.as_deref(), Some("claim withdrawn"));
    let timeline = store.timeline(id).await.unwrap();
    let cancel = timeline
        .iter()
        .find(|e| e.kind == EventKind::Cancelled)
        .unwrap();
    assert_eq!(cancel.actor.as_str(), "alice");
    assert_eq!(cancel.reason.as_deref(), Some("claim withdrawn"));
    assert_eq!(timeline.last().unwrap().kind, EventKind::StaleResultIgnored);
}

/// Each write answers with the row as written, built from what it was
/// given and (for a change) the row read under its lock; no store reads it
/// back. The answer must be what a read returns: enqueues alone and in a
/// batch with every field set, then acceptance, a missed deadline, replays
/// under a fresh and the same key, a batch of results and a cancel, with
/// times that are not whole milliseconds.
pub async fn every_change_answers_with_the_row_a_read_returns(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let partner = "answers";
    let odd = || store.now() + chrono::Duration::nanoseconds(456_789);

    // An enqueue, alone and in a batch, with every field set.
    let full = |key: &str| {
        NewSubmission::new(
            "answers-full",
            "claim.submit",
            json!({ "claim": key, "amount": 12.5, "lines": [1, 2, {"sku": "a\u{0}b"}] }),
        )
        .idempotency_key(key)
        .ordering_key("patient-7")
        .correlation("order", key)
        .business_value_in(12_500, "EUR")
        .business_deadline(odd() + chrono::Duration::days(2))
        .priority(3)
        .not_before(odd() + chrono::Duration::minutes(5))
    };
    let one = store.enqueue(full("full-1")).await.unwrap().submission;
    assert_eq!(one, store.get(one.id).await.unwrap(), "an enqueue");
    for enqueued in store
        .enqueue_batch(vec![full("full-2"), full("full-3")])
        .await
        .unwrap()
    {
        let s = enqueued.submission;
        assert_eq!(s, store.get(s.id).await.unwrap(), "a batch's enqueue");
    }
    let id = store
        .enqueue(submission(partner, "answers-key"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, partner).await;
    let accepted = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(AwaitingResult)
                .external_ref("R-answers")
                .result_deadline(odd() + chrono::Duration::hours(1))
                .at(odd()),
        )
        .await
        .unwrap();
    assert_eq!(accepted, store.get(id).await.unwrap(), "accepted");
    let stuck = store
        .transition(id, StateChange::to(Stuck).at(odd()))
        .await
        .unwrap();
    assert_eq!(stuck, store.get(id).await.unwrap(), "stuck");
    let fresh = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "try again").fresh_key(true),
        )
        .await
        .unwrap();
    assert_eq!(fresh.replays, 1);
    assert_eq!(
        fresh,
        store.get(id).await.unwrap(),
        "replayed under a fresh key"
    );

    // A batch of results: this one fails, another succeeds beside it.
    let other = store
        .enqueue(submission(partner, "answers-other"))
        .await
        .unwrap()
        .submission
        .id;
    let leases = store
        .claim(ClaimRequest::new(partner, 2, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 2);
    let finished = leases
        .iter()
        .map(|lease| {
            let change = if lease.submission.id == id {
                StateChange::to(Failed).error("refused").at(odd())
            } else {
                StateChange::to(Succeeded).at(odd())
            };
            FinishedAttempt::new(
                lease.clone(),
                AttemptReport::new(AttemptOutcome::Failed),
                change,
            )
        })
        .collect();
    for answer in store.complete_batch(finished).await.unwrap() {
        let answer = answer.unwrap();
        assert_eq!(
            answer,
            store.get(answer.id).await.unwrap(),
            "a batch's answer"
        );
    }
    assert_eq!(store.get(other).await.unwrap().state, Succeeded);

    let kept = store
        .replay(id, Replay::new(Actor::person("ops"), "once more"))
        .await
        .unwrap();
    assert_eq!(kept.replays, 2);
    assert_eq!(kept, store.get(id).await.unwrap(), "replayed under its key");
    let cancelled = store
        .transition(id, StateChange::to(Cancelled).at(odd()))
        .await
        .unwrap();
    assert_eq!(cancelled, store.get(id).await.unwrap(), "cancelled");
}
