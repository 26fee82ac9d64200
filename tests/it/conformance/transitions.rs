//! The transition table, enforced by every store.

use liaison::store::{AttemptReport, ClaimRequest, StateChange};
use liaison::{Actor, AttemptOutcome, ErrorKind, EventKind, SubmissionState};

use super::harness::{Harness, LEASE, drive_to};

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
