//! Result deliveries: recorded in the transaction that finishes a
//! submission (only for partners whose results go to the host), claimed in
//! enqueue order per ordering key, ended under their lease, parked and
//! re-run.

use std::time::Duration;

use chrono::Utc;
use liaison::store::{
    AttemptReport, DeliveryClaim, DeliveryEnd, DeliveryFilter, DeliveryLease, Note, StateChange,
};
use liaison::{
    Actor, AttemptOutcome, DeliveryState, EventKind, NewSubmission, SubmissionId, SubmissionState,
};
use serde_json::json;

use super::harness::{Harness, Store, claim_one, drive_to};

const LEASE: Duration = Duration::from_secs(30);

async fn claim(store: &Store, partner: &str) -> Vec<DeliveryLease> {
    // Dated by the store's clock, by which the deliveries were made due: by
    // the host's, a claim right after a re-run could miss it by the clocks'
    // few microseconds on PostgreSQL.
    store
        .claim_deliveries(DeliveryClaim::new(vec![partner.into()], 10, LEASE).at(store.now()))
        .await
        .unwrap()
}

/// Enqueue (with an ordering key), send and finish one submission.
async fn finished(store: &Store, partner: &str, key: &str, ordering: &str) -> SubmissionId {
    let id = store
        .enqueue(
            NewSubmission::new(partner, "order", json!({ "key": key }))
                .idempotency_key(key)
                .ordering_key(ordering),
        )
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(store, partner).await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    id
}

pub async fn a_delivery_is_recorded_with_each_finishing_change_when_enabled(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let name = h.name();
    // Not enabled: nothing recorded.
    let (quiet, _) = drive_to(&store, "quiet", Succeeded).await;
    assert!(
        store
            .deliveries(&DeliveryFilter::default().submission(quiet))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );

    store.set_result_delivery("lab", true).await.unwrap();
    let (waiting, _) = drive_to(&store, "lab", AwaitingResult).await;
    assert!(
        store
            .deliveries(&DeliveryFilter::default().partner("lab"))
            .await
            .unwrap()
            .is_empty(),
        "{name}: an acceptance finishes nothing"
    );
    store
        .transition(waiting, StateChange::to(Failed).error("denied"))
        .await
        .unwrap();
    store
        .transition(
            waiting,
            StateChange::to(ResolvedManually)
                .actor(Actor::person("ops"))
                .reason("paid on the portal"),
        )
        .await
        .unwrap();
    let recorded = store
        .deliveries(&DeliveryFilter::default().submission(waiting))
        .await
        .unwrap();
    let states: Vec<_> = recorded.iter().map(|d| d.final_state).collect();
    assert_eq!(states, [Failed, ResolvedManually], "{name}");
    assert!(
        recorded
            .iter()
            .all(|d| d.state == DeliveryState::Pending && d.attempts == 0),
        "{name}: {recorded:?}"
    );

    // Switched off again: a new finish records nothing more.
    store.set_result_delivery("lab", false).await.unwrap();
    let later = finished(&store, "lab", "after-off", "o-9").await;
    assert!(
        store
            .deliveries(&DeliveryFilter::default().submission(later))
            .await
            .unwrap()
            .is_empty(),
        "{name}"
    );
}

pub async fn deliveries_of_one_ordering_key_go_in_enqueue_order(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    store.set_result_delivery("lab", true).await.unwrap();
    let first = finished(&store, "lab", "a-1", "patient-1").await;
    let second = finished(&store, "lab", "a-2", "patient-1").await;
    let other = finished(&store, "lab", "b-1", "patient-2").await;

    let leases = claim(&store, "lab").await;
    let claimed: Vec<_> = leases.iter().map(|l| l.delivery.submission_id).collect();
    assert_eq!(
        claimed,
        [first, other],
        "{name}: the second of patient-1 waits"
    );
    assert!(claim(&store, "lab").await.is_empty(), "{name}: all leased");

    // The first fails: it is retried later and still holds the second.
    let first_lease = &leases[0];
    store
        .finish_delivery(
            first_lease,
            DeliveryEnd::Retry {
                due_at: Utc::now() + chrono::Duration::hours(1),
                error: "host database locked".into(),
            },
        )
        .await
        .unwrap();
    store
        .finish_delivery(&leases[1], DeliveryEnd::Delivered)
        .await
        .unwrap();
    assert!(claim(&store, "lab").await.is_empty(), "{name}");

    // Once it is due again and delivered, the second goes.
    let later = Utc::now() + chrono::Duration::hours(2);
    let again = store
        .claim_deliveries(DeliveryClaim::new(vec!["lab".into()], 10, LEASE).at(later))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "{name}");
    assert_eq!(again[0].delivery.submission_id, first, "{name}");
    assert_eq!(again[0].delivery.attempts, 2, "{name}");
    store
        .finish_delivery(&again[0], DeliveryEnd::Delivered)
        .await
        .unwrap();
    let next = claim(&store, "lab").await;
    let claimed: Vec<_> = next.iter().map(|l| l.delivery.submission_id).collect();
    assert_eq!(claimed, [second], "{name}");

    let timeline = store.timeline(first).await.unwrap();
    let kinds: Vec<_> = timeline
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::ResultDelivered | EventKind::ResultDeliveryFailed
            )
        })
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [EventKind::ResultDeliveryFailed, EventKind::ResultDelivered],
        "{name}"
    );
}

pub async fn a_claim_over_several_partners_takes_the_oldest_due_of_all(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    store.set_result_delivery("lab", true).await.unwrap();
    store.set_result_delivery("bank", true).await.unwrap();
    let a1 = finished(&store, "lab", "a-1", "a-1").await;
    let b1 = finished(&store, "bank", "b-1", "b-1").await;
    let a2 = finished(&store, "lab", "a-2", "a-2").await;
    let b2 = finished(&store, "bank", "b-2", "b-2").await;
    let a3 = finished(&store, "lab", "a-3", "a-3").await;
    let partners = || vec!["bank".to_string(), "lab".to_string(), "lab".to_string()];
    let ids = |leases: &[DeliveryLease]| -> Vec<SubmissionId> {
        leases.iter().map(|l| l.delivery.submission_id).collect()
    };

    let first = store
        .claim_deliveries(DeliveryClaim::new(partners(), 3, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(
        ids(&first),
        [a1, b1, a2],
        "{name}: oldest first, across partners"
    );
    // The leased ones stay at the front of their partners' due order; the
    // next claim passes them and takes the rest.
    let rest = store
        .claim_deliveries(DeliveryClaim::new(partners(), 10, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(ids(&rest), [b2, a3], "{name}");
    assert!(
        store
            .claim_deliveries(DeliveryClaim::new(partners(), 10, LEASE).at(store.now()))
            .await
            .unwrap()
            .is_empty(),
        "{name}: all leased"
    );
    // Once the leases ended, the oldest is the first claimed again.
    let after_leases = Utc::now() + chrono::Duration::minutes(5);
    let again = store
        .claim_deliveries(DeliveryClaim::new(partners(), 1, LEASE).at(after_leases))
        .await
        .unwrap();
    assert_eq!(ids(&again), [a1], "{name}");
    assert_eq!(again[0].delivery.attempts, 2, "{name}");
}

pub async fn a_stale_lease_cannot_end_a_delivery_and_parked_ones_are_rerun(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    store.set_result_delivery("lab", true).await.unwrap();
    let id = finished(&store, "lab", "k-1", "o-1").await;
    let successor = finished(&store, "lab", "k-2", "o-1").await;

    let first = claim(&store, "lab").await.remove(0);
    // Its lease ends: another claimer takes it.
    let later = Utc::now() + chrono::Duration::seconds(31);
    let second = store
        .claim_deliveries(DeliveryClaim::new(vec!["lab".into()], 10, LEASE).at(later))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.delivery.id, first.delivery.id, "{name}");
    assert_ne!(second.token, first.token, "{name}");
    let stale = store
        .finish_delivery(&first, DeliveryEnd::Delivered)
        .await
        .unwrap_err();
    assert!(stale.is_stale_lease(), "{name}: {stale:?}");

    // Parked: not claimed again, and it holds back its ordering key.
    store
        .finish_delivery(
            &second,
            DeliveryEnd::Parked {
                error: "handler keeps failing".into(),
            },
        )
        .await
        .unwrap();
    let much_later = Utc::now() + chrono::Duration::days(1);
    assert!(
        store
            .claim_deliveries(DeliveryClaim::new(vec!["lab".into()], 10, LEASE).at(much_later))
            .await
            .unwrap()
            .is_empty(),
        "{name}: parked, and its successor waits"
    );
    let parked = store
        .deliveries(&DeliveryFilter::default().state(DeliveryState::Parked))
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{name}");
    assert_eq!(
        parked[0].last_error.as_deref(),
        Some("handler keeps failing"),
        "{name}"
    );

    // Only a parked delivery is re-run; then it goes with a fresh budget.
    let note = Note::new(EventKind::ResultDeliveryRerun, Actor::person("ops"))
        .reason("fixed the claims table");
    let rerun = store
        .rerun_delivery(parked[0].id, note.clone())
        .await
        .unwrap();
    assert_eq!(rerun.state, DeliveryState::Pending, "{name}");
    assert_eq!(rerun.attempts, 0, "{name}");
    let refused = store.rerun_delivery(parked[0].id, note).await.unwrap_err();
    assert!(refused.is_not_parked(), "{name}: {refused:?}");
    let leases = claim(&store, "lab").await;
    assert_eq!(leases.len(), 1, "{name}");
    assert_eq!(leases[0].delivery.submission_id, id, "{name}");
    assert_eq!(leases[0].delivery.attempts, 1, "{name}");
    store
        .finish_delivery(&leases[0], DeliveryEnd::Delivered)
        .await
        .unwrap();
    let next = claim(&store, "lab").await;
    assert_eq!(next[0].delivery.submission_id, successor, "{name}");
    let timeline = store.timeline(id).await.unwrap();
    for kind in [
        EventKind::ResultDeliveryParked,
        EventKind::ResultDeliveryRerun,
        EventKind::ResultDelivered,
    ] {
        assert!(
            timeline.iter().any(|e| e.kind == kind),
            "{name}: no {kind:?} in {timeline:?}"
        );
    }
}

pub async fn a_late_result_and_a_callback_after_cancel_are_delivered_as_the_timeline_says(
    h: &Harness,
) {
    use SubmissionState::*;
    use liaison::callback::{Correlation, Disposition, ReportedOutcome};
    let store = h.store().await;
    let name = h.name();
    store.set_result_delivery("lab", true).await.unwrap();
    let finals = |id: SubmissionId| {
        let store = store.clone();
        async move {
            store
                .deliveries(&DeliveryFilter::default().submission(id))
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.final_state)
                .collect::<Vec<_>>()
        }
    };
    // Stuck, then the partner's late result: one delivery, Succeeded.
    let late = super::callbacks::accepted(&store, "late-1", "R-LATE").await;
    store
        .transition(late, StateChange::to(Stuck))
        .await
        .unwrap();
    assert!(
        finals(late).await.is_empty(),
        "{name}: stuck is not finished"
    );
    let cb = store
        .record_callback(super::callbacks::raw("lab", "late"))
        .await
        .unwrap();
    let receipt = store
        .settle_callback(
            cb,
            super::callbacks::report(
                Correlation::ExternalRef("R-LATE".into()),
                Some("e-late"),
                ReportedOutcome::Succeeded,
            ),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Applied, "{name}");
    assert_eq!(finals(late).await, [Succeeded], "{name}");

    // Cancelled while awaiting its result, then the result arrives: the
    // host hears of the cancel only (the callback is noted as late).
    let cancelled = super::callbacks::accepted(&store, "cancel-1", "R-CANCEL").await;
    store
        .transition(
            cancelled,
            StateChange::to(Cancelled)
                .actor(Actor::person("ops"))
                .reason("withdrawn"),
        )
        .await
        .unwrap();
    let cb = store
        .record_callback(super::callbacks::raw("lab", "after-cancel"))
        .await
        .unwrap();
    let receipt = store
        .settle_callback(
            cb,
            super::callbacks::report(
                Correlation::ExternalRef("R-CANCEL".into()),
                Some("e-cancel"),
                ReportedOutcome::Succeeded,
            ),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Late, "{name}");
    assert_eq!(finals(cancelled).await, [Cancelled], "{name}");
}
