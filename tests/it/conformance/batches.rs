//! Batches: finished attempts recorded together (`complete_batch`) answer
//! and write exactly what recording each alone would; a batch enqueue keeps
//! input order and sees its own keys.

use std::time::Duration;

use liaison::callback::{Correlation, Disposition, ReportedOutcome};
use liaison::store::{AttemptReport, ClaimRequest, FinishedAttempt, ListFilter, StateChange};
use liaison::{AttemptOutcome, EventKind, SubmissionState};
use serde_json::json;

use super::callbacks::{raw, report};
use super::harness::{Harness, LEASE, Settings, drive_to, submission};

fn finished(
    lease: &liaison::store::Lease,
    outcome: AttemptOutcome,
    change: StateChange,
) -> FinishedAttempt {
    FinishedAttempt::new(lease.clone(), AttemptReport::new(outcome), change)
}

pub async fn a_batch_of_results_answers_and_writes_as_each_alone_would(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let batch = (0..6)
        .map(|i| submission("bank", &format!("b{i}")))
        .collect();
    let ids: Vec<_> = store
        .enqueue_batch(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.submission.id)
        .collect();
    let leases = store
        .claim(ClaimRequest::new("bank", 6, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 6);
    let lease = |i: usize| leases.iter().find(|l| l.submission.id == ids[i]).unwrap();
    // Cancelled under its worker: that worker's result is stale.
    store
        .transition(ids[3], StateChange::to(Cancelled))
        .await
        .unwrap();
    // An earlier submission holds a reference that one result names.
    let (holder, holder_lease) = drive_to(&store, "bank", InFlight).await;
    let holder_lease = holder_lease.unwrap();
    store
        .complete(
            &holder_lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(AwaitingResult).external_ref("R-held"),
        )
        .await
        .unwrap();

    let answers = store
        .complete_batch(vec![
            finished(
                lease(0),
                AttemptOutcome::Accepted,
                StateChange::to(AwaitingResult).external_ref("R-0"),
            ),
            finished(
                lease(1),
                AttemptOutcome::Succeeded,
                StateChange::to(Succeeded),
            ),
            finished(
                lease(2),
                AttemptOutcome::Transient,
                StateChange::to(Queued)
                    .error("502")
                    .due_at(chrono::Utc::now() + chrono::Duration::hours(1)),
            ),
            finished(
                lease(3),
                AttemptOutcome::Succeeded,
                StateChange::to(Succeeded),
            ),
            // The same reference as the first item of this batch.
            finished(
                lease(4),
                AttemptOutcome::Accepted,
                StateChange::to(AwaitingResult).external_ref("R-0"),
            ),
            // Not in the table.
            finished(
                lease(5),
                AttemptOutcome::Succeeded,
                StateChange::to(ResolvedManually),
            ),
            // A second result for the first: it finds the lease used.
            finished(lease(1), AttemptOutcome::Failed, StateChange::to(Failed)),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 7, "{}", h.name());
    assert_eq!(answers[0].as_ref().unwrap().state, AwaitingResult);
    assert_eq!(
        answers[0].as_ref().unwrap().external_ref.as_deref(),
        Some("R-0")
    );
    assert_eq!(answers[1].as_ref().unwrap().state, Succeeded);
    assert_eq!(answers[2].as_ref().unwrap().state, Queued);
    assert!(
        answers[3].as_ref().unwrap_err().is_stale_lease(),
        "{}",
        h.name()
    );
    let taken = answers[4].as_ref().unwrap_err();
    assert!(taken.is_reference_taken(), "{}: {taken:?}", h.name());
    assert!(taken.to_string().contains(&ids[0].to_string()), "{taken}");
    assert!(answers[5].as_ref().unwrap_err().is_invalid_transition());
    assert!(answers[6].as_ref().unwrap_err().is_stale_lease());

    // What each wrote, as `complete` would have.
    let state = |i: usize| {
        let store = store.clone();
        let id = ids[i];
        async move { store.get(id).await.unwrap().state }
    };
    assert_eq!(state(3).await, Cancelled);
    assert_eq!(state(4).await, InFlight, "a refused item changes nothing");
    assert_eq!(state(5).await, InFlight);
    let open = |i: usize| {
        let store = store.clone();
        let id = ids[i];
        async move {
            store
                .attempts(id)
                .await
                .unwrap()
                .last()
                .unwrap()
                .finished_at
                .is_none()
        }
    };
    assert!(!open(0).await && !open(1).await && !open(2).await);
    assert!(
        open(4).await && open(5).await,
        "refused: attempt still open"
    );
    let kinds = |i: usize| {
        let store = store.clone();
        let id = ids[i];
        async move {
            store
                .timeline(id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        kinds(1).await,
        [
            EventKind::Enqueued,
            EventKind::Claimed,
            EventKind::Succeeded,
            EventKind::StaleResultIgnored,
        ],
        "{}",
        h.name()
    );
    assert!(kinds(3).await.contains(&EventKind::StaleResultIgnored));
    let retry = store.timeline(ids[2]).await.unwrap().pop().unwrap();
    assert_eq!(retry.data.unwrap()["outcome"], "transient");
    assert_eq!(
        store.attempts(ids[2]).await.unwrap()[0].outcome,
        Some(AttemptOutcome::Transient)
    );

    // The refused one is recorded alone afterwards, as the engine does.
    let alone = store
        .complete(
            lease(4),
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(AwaitingResult),
        )
        .await
        .unwrap();
    assert_eq!(alone.state, AwaitingResult);
    // Nothing left half-written: the holder keeps its reference.
    assert_eq!(
        store.get(holder).await.unwrap().external_ref.as_deref(),
        Some("R-held")
    );
}

pub async fn a_batch_applies_callbacks_that_arrived_before_it(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let cb = store.record_callback(raw("lab", "early")).await.unwrap();
    let receipt = store
        .settle_callback(
            cb,
            report(
                Correlation::ExternalRef("REF-early".into()),
                Some("e-1"),
                ReportedOutcome::Succeeded,
            ),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Unmatched);
    let batch = (0..3)
        .map(|i| submission("lab", &format!("L{i}")))
        .collect();
    store.enqueue_batch(batch).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("lab", 3, LEASE).at(store.now()))
        .await
        .unwrap();
    let answers = store
        .complete_batch(
            leases
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let reference = if i == 1 {
                        "REF-early".to_string()
                    } else {
                        format!("REF-{i}")
                    };
                    finished(
                        l,
                        AttemptOutcome::Accepted,
                        StateChange::to(AwaitingResult).external_ref(reference),
                    )
                })
                .collect(),
        )
        .await
        .unwrap();
    let states: Vec<_> = answers.iter().map(|a| a.as_ref().unwrap().state).collect();
    assert_eq!(
        states,
        [AwaitingResult, Succeeded, AwaitingResult],
        "{}",
        h.name()
    );
    let settled = store.callback(cb).await.unwrap();
    assert_eq!(settled.disposition, Disposition::Applied);
    assert_eq!(settled.submission_id, Some(leases[1].submission.id));
}

pub async fn a_batch_gives_each_submission_the_callbacks_waiting_for_it(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    // Four callbacks arrive before any acceptance: two for REF-a (a
    // progress report, then the result), one for REF-b, one for a
    // reference no submission of the batch holds.
    let mut early = Vec::new();
    for (body, reference, event, outcome) in [
        (
            "a-1",
            "REF-a",
            "e-a1",
            ReportedOutcome::Progress { note: None },
        ),
        ("a-2", "REF-a", "e-a2", ReportedOutcome::Succeeded),
        (
            "b-1",
            "REF-b",
            "e-b1",
            ReportedOutcome::Failed {
                reason: "declined".into(),
            },
        ),
        ("x-1", "REF-x", "e-x1", ReportedOutcome::Succeeded),
    ] {
        let cb = store.record_callback(raw("lab", body)).await.unwrap();
        let receipt = store
            .settle_callback(
                cb,
                report(
                    Correlation::ExternalRef(reference.into()),
                    Some(event),
                    outcome,
                ),
            )
            .await
            .unwrap();
        assert_eq!(receipt.disposition, Disposition::Unmatched, "{}", h.name());
        early.push(cb);
    }
    let batch = (0..3)
        .map(|i| submission("lab", &format!("W{i}")))
        .collect();
    store.enqueue_batch(batch).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("lab", 3, LEASE).at(store.now()))
        .await
        .unwrap();
    let references = ["REF-a", "REF-b", "REF-c"];
    let answers = store
        .complete_batch(
            leases
                .iter()
                .zip(references)
                .map(|(l, reference)| {
                    finished(
                        l,
                        AttemptOutcome::Accepted,
                        StateChange::to(AwaitingResult).external_ref(reference),
                    )
                })
                .collect(),
        )
        .await
        .unwrap();
    let states: Vec<_> = answers.iter().map(|a| a.as_ref().unwrap().state).collect();
    assert_eq!(states, [Succeeded, Failed, AwaitingResult], "{}", h.name());
    for (i, submission) in [(1, 0), (2, 1)] {
        let settled = store.callback(early[i]).await.unwrap();
        assert_eq!(settled.disposition, Disposition::Applied, "{}", h.name());
        assert_eq!(
            settled.submission_id,
            Some(leases[submission].submission.id),
            "{}",
            h.name()
        );
    }
    // The progress report was taken by its submission too, before the
    // result; the stranger still waits.
    let progress = store.callback(early[0]).await.unwrap();
    assert_eq!(progress.submission_id, Some(leases[0].submission.id));
    assert_ne!(progress.disposition, Disposition::Unmatched, "{}", h.name());
    let stranger = store.callback(early[3]).await.unwrap();
    assert_eq!(stranger.disposition, Disposition::Unmatched, "{}", h.name());
    assert_eq!(stranger.submission_id, None);
}

pub async fn a_batch_enqueue_keeps_input_order_and_sees_its_own_keys(h: &Harness) {
    use SubmissionState::*;
    // Keys are free again as soon as their work is finished.
    let store = h
        .store_with(Settings::default().ledger_retention(Some(Duration::ZERO)))
        .await;
    let (finished_id, _) = drive_to(&store, "shop", Succeeded).await;
    let held = store
        .enqueue(submission("shop", "held"))
        .await
        .unwrap()
        .submission
        .id;
    let keyed = |key: &str| submission("shop", key).ordering_key("order-1");
    let answers = store
        .enqueue_batch(vec![
            // The key of finished work, free again: new work, first in line.
            keyed("shop-key"),
            keyed("new-1"),
            // The key of queued work with the same payload: that work.
            submission("shop", "held"),
            // The key of an earlier item of this batch: that item.
            keyed("new-1"),
            keyed("new-2"),
        ])
        .await
        .unwrap();
    let dedup: Vec<bool> = answers.iter().map(|a| a.deduplicated).collect();
    assert_eq!(dedup, [false, false, true, true, false], "{}", h.name());
    assert_ne!(answers[0].submission.id, finished_id);
    assert_eq!(answers[2].submission.id, held);
    assert_eq!(answers[3].submission.id, answers[1].submission.id);
    // Enqueue order is input order: the ordering key sends them so.
    let order: Vec<_> = store
        .list(&ListFilter::default().partner("shop").state(Queued))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        order,
        [
            held,
            answers[0].submission.id,
            answers[1].submission.id,
            answers[4].submission.id
        ]
    );
    let mut sent = Vec::new();
    for _ in 0..3 {
        let lease = store
            .claim(ClaimRequest::new("shop", 10, LEASE).at(store.now()))
            .await
            .unwrap();
        let keyed: Vec<_> = lease
            .iter()
            .filter(|l| l.submission.ordering_key.is_some())
            .collect();
        assert_eq!(keyed.len(), 1, "one at a time per ordering key");
        sent.push(keyed[0].submission.id);
        for l in lease {
            store
                .complete(
                    &l,
                    AttemptReport::new(AttemptOutcome::Succeeded),
                    StateChange::to(Succeeded),
                )
                .await
                .unwrap();
        }
    }
    assert_eq!(
        sent,
        [
            answers[0].submission.id,
            answers[1].submission.id,
            answers[4].submission.id
        ]
    );
    // The deduplicated items are journaled on the work they found.
    let journaled = store
        .timeline(answers[1].submission.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Deduplicated)
        .count();
    assert_eq!(journaled, 1);

    // A conflict anywhere in the batch: none of it is written.
    store.enqueue(submission("shop", "queued")).await.unwrap();
    let before = store.list(&ListFilter::default()).await.unwrap().len();
    let err = store
        .enqueue_batch(vec![
            submission("shop", "fresh"),
            liaison::NewSubmission::new("shop", "x", json!({"other": true}))
                .idempotency_key("queued"),
        ])
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(
        store.list(&ListFilter::default()).await.unwrap().len(),
        before
    );
}

/// A batch of results over several partners records a result delivery for
/// each change that finishes a submission of a partner whose results go to
/// the host, and none for the others (nor for a change that finishes
/// nothing), whatever order the partners come in.
pub async fn a_batch_records_deliveries_only_for_partners_that_take_results(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let name = h.name();
    store.set_result_delivery("lab", true).await.unwrap();
    let mut leases = Vec::new();
    for (partner, key) in [("bank", "m0"), ("lab", "m1"), ("bank", "m2"), ("lab", "m3")] {
        store.enqueue(submission(partner, key)).await.unwrap();
        let mut claimed = store
            .claim(ClaimRequest::new(partner, 1, LEASE).at(store.now()))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "{name}: {key}");
        leases.push(claimed.remove(0));
    }
    let answers = store
        .complete_batch(vec![
            finished(
                &leases[0],
                AttemptOutcome::Succeeded,
                StateChange::to(Succeeded),
            ),
            finished(
                &leases[1],
                AttemptOutcome::Succeeded,
                StateChange::to(Succeeded),
            ),
            finished(
                &leases[2],
                AttemptOutcome::Permanent,
                StateChange::to(Failed).error("no"),
            ),
            // Accepted: nothing finished yet, so nothing to deliver.
            finished(
                &leases[3],
                AttemptOutcome::Accepted,
                StateChange::to(AwaitingResult),
            ),
        ])
        .await
        .unwrap();
    let states: Vec<_> = answers.into_iter().map(|a| a.unwrap().state).collect();
    assert_eq!(
        states,
        [Succeeded, Succeeded, Failed, AwaitingResult],
        "{name}"
    );

    let recorded = store
        .deliveries(&liaison::store::DeliveryFilter::default())
        .await
        .unwrap();
    let got: Vec<_> = recorded
        .iter()
        .map(|d| (d.submission_id, d.partner.as_str(), d.final_state))
        .collect();
    assert_eq!(
        got,
        [(leases[1].submission.id, "lab", Succeeded)],
        "{name}: only the lab submission that finished"
    );
}
