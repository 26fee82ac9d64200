//! Result documents: kept with the submission whichever way they arrive,
//! replaced or kept by the rules, never cut, purged with the payload.

use std::time::Duration;

use chrono::Utc;
use liaison::callback::{CallbackReport, Correlation, Disposition, ReportedOutcome};
use liaison::store::{AttemptReport, ListFilter, PurgeCutoffs, Replay, Settlement, StateChange};
use liaison::{Actor, AttemptOutcome, EventKind, ResultDocument, SubmissionState};
use serde_json::json;

use super::callbacks::{accepted, raw};
use super::harness::{Harness, claim_one, drive_to, submission};

fn doc(value: serde_json::Value) -> ResultDocument {
    ResultDocument::capture(value, 64 * 1024)
}

fn settle_with(
    reference: &str,
    outcome: ReportedOutcome,
    document: serde_json::Value,
) -> Settlement {
    Settlement::Report {
        report: CallbackReport::new(Correlation::ExternalRef(reference.into()), outcome)
            .result(document),
        unmatched_until: Utc::now() + chrono::Duration::hours(1),
    }
}

pub async fn a_result_is_kept_with_the_submission_and_left_out_of_light_lists(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    store
        .enqueue(submission("clearinghouse", "C-1"))
        .await
        .unwrap();
    let lease = claim_one(&store, "clearinghouse").await;
    let approved = json!({"status": "approved", "paid": 1250, "claim_no": "CH-77"});
    let done = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded).http_status(200),
            StateChange::to(SubmissionState::Succeeded).result(doc(approved.clone())),
        )
        .await
        .unwrap();
    assert_eq!(done.result, Some(doc(approved.clone())), "{name}");
    let read = store.get(done.id).await.unwrap();
    assert_eq!(
        read.result.as_ref().and_then(ResultDocument::document),
        Some(&approved),
        "{name}"
    );

    let full = store
        .list(&ListFilter::default().partner("clearinghouse"))
        .await
        .unwrap();
    assert_eq!(full[0].result, Some(doc(approved)), "{name}");
    let light = store
        .list(
            &ListFilter::default()
                .partner("clearinghouse")
                .without_payload(),
        )
        .await
        .unwrap();
    assert_eq!(
        light[0].result, None,
        "{name}: a light list reads no document"
    );
}

pub async fn a_replay_clears_the_result_and_a_manual_resolution_keeps_or_replaces_it(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let name = h.name();
    let denied = json!({"status": "denied", "codes": ["CO-16"]});
    let (id, lease) = drive_to(&store, "lab", InFlight).await;
    let failed = store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(Failed)
                .error("CO-16")
                .result(doc(denied.clone())),
        )
        .await
        .unwrap();
    assert_eq!(failed.result, Some(doc(denied.clone())), "{name}");

    // Resolved by hand without a document: the partner's stays.
    let resolved = store
        .transition(
            id,
            StateChange::to(ResolvedManually)
                .actor(Actor::person("ops"))
                .reason("paid by phone"),
        )
        .await
        .unwrap();
    assert_eq!(resolved.result, Some(doc(denied)), "{name}");

    // Another failed one is replayed: its new cycle starts without a result.
    let (other, lease) = drive_to(&store, "lab2", InFlight).await;
    store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(Failed).result(doc(json!({"status": "denied"}))),
        )
        .await
        .unwrap();
    let replayed = store
        .replay(
            other,
            Replay::new(Actor::person("ops"), "corrected the member id"),
        )
        .await
        .unwrap();
    assert_eq!(replayed.state, Queued, "{name}");
    assert_eq!(replayed.result, None, "{name}");

    // Resolved by hand with a document: it replaces what was there.
    let (third, lease) = drive_to(&store, "lab3", InFlight).await;
    store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(Failed).result(doc(json!({"status": "denied"}))),
        )
        .await
        .unwrap();
    let portal = json!({"status": "approved on the portal", "paid": 900});
    let resolved = store
        .transition(
            third,
            StateChange::to(ResolvedManually)
                .actor(Actor::person("ops"))
                .reason("approved on appeal")
                .result(doc(portal.clone())),
        )
        .await
        .unwrap();
    assert_eq!(resolved.result, Some(doc(portal)), "{name}");
}

pub async fn a_result_over_the_cap_is_a_marker_with_a_timeline_line(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let (id, lease) = drive_to(&store, "lab", SubmissionState::InFlight).await;
    let big = ResultDocument::capture(json!({"blob": "x".repeat(5000)}), 1024);
    let done = store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded).result(big.clone()),
        )
        .await
        .unwrap();
    assert!(
        matches!(done.result, Some(ResultDocument::TooLarge { limit: 1024, bytes }) if bytes > 5000),
        "{name}: {:?}",
        done.result
    );
    let timeline = store.timeline(id).await.unwrap();
    let line = timeline
        .iter()
        .find(|e| e.kind == EventKind::ResultNotKept)
        .unwrap_or_else(|| panic!("{name}: no line says the result was not kept"));
    assert!(
        line.reason
            .as_deref()
            .unwrap_or("")
            .contains("over the 1024-byte cap"),
        "{name}: {:?}",
        line.reason
    );
    // The marker comes after the transition it belongs to.
    let succeeded = timeline
        .iter()
        .position(|e| e.kind == EventKind::Succeeded)
        .unwrap();
    let marker = timeline
        .iter()
        .position(|e| e.kind == EventKind::ResultNotKept)
        .unwrap();
    assert!(succeeded < marker, "{name}");
}

pub async fn a_callback_result_is_kept_and_another_document_is_a_conflict(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let id = accepted(&store, "k-1", "R-1").await;
    let approved = json!({"status": "succeeded", "paid": 1250});

    let first = store.record_callback(raw("lab", "one")).await.unwrap();
    let receipt = store
        .settle_callback(
            first,
            settle_with("R-1", ReportedOutcome::Succeeded, approved.clone()),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Applied, "{name}");
    assert_eq!(
        store.get(id).await.unwrap().result,
        Some(doc(approved.clone())),
        "{name}"
    );

    // The same document again (a new body, no event id): a duplicate.
    let again = store.record_callback(raw("lab", "two")).await.unwrap();
    let receipt = store
        .settle_callback(
            again,
            settle_with("R-1", ReportedOutcome::Succeeded, approved.clone()),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Duplicate, "{name}");

    // The same outcome with another document: a conflict, not applied.
    let other = store.record_callback(raw("lab", "three")).await.unwrap();
    let receipt = store
        .settle_callback(
            other,
            settle_with(
                "R-1",
                ReportedOutcome::Succeeded,
                json!({"status": "succeeded", "paid": 99}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Conflicting, "{name}");
    assert_eq!(
        store.get(id).await.unwrap().result,
        Some(doc(approved)),
        "{name}"
    );
    let timeline = store.timeline(id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.kind == EventKind::ConflictingCallback
                && e.reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("another result document")),
        "{name}: {timeline:?}"
    );
}

pub async fn an_early_callback_brings_its_result_when_it_matches_later(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    store.enqueue(submission("lab", "early-1")).await.unwrap();
    let lease = claim_one(&store, "lab").await;
    let approved = json!({"status": "succeeded", "lab_no": "L-5"});
    let cb = store.record_callback(raw("lab", "early")).await.unwrap();
    let receipt = store
        .settle_callback(
            cb,
            settle_with("EARLY-1", ReportedOutcome::Succeeded, approved.clone()),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Unmatched, "{name}");
    let done = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("EARLY-1"),
        )
        .await
        .unwrap();
    assert_eq!(done.state, SubmissionState::Succeeded, "{name}");
    assert_eq!(done.result, Some(doc(approved)), "{name}");
}

pub async fn retention_purges_the_result_with_the_payload(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    // A result still on its way to the host is kept until delivered.
    store.set_result_delivery("host", true).await.unwrap();
    let (waiting, lease) = drive_to(&store, "host", SubmissionState::InFlight).await;
    store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded).result(doc(json!({"paid": 5}))),
        )
        .await
        .unwrap();
    let (id, lease) = drive_to(&store, "lab", SubmissionState::InFlight).await;
    store
        .complete(
            &lease.unwrap(),
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded).result(doc(json!({"ok": true}))),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    let report = store
        .purge(PurgeCutoffs::new(cutoff, cutoff))
        .await
        .unwrap();
    assert_eq!(report.payloads, 1, "{name}");
    let purged = store.get(id).await.unwrap();
    assert_eq!(purged.payload, None, "{name}");
    assert_eq!(purged.result, None, "{name}");
    let kept = store.get(waiting).await.unwrap();
    assert_eq!(
        kept.result,
        Some(doc(json!({"paid": 5}))),
        "{name}: undelivered"
    );

    // Once delivered, it goes at the next pass.
    let lease = store
        .claim_deliveries(
            liaison::store::DeliveryClaim::new(vec!["host".into()], 10, Duration::from_secs(30))
                .at(store.now()),
        )
        .await
        .unwrap()
        .remove(0);
    store
        .finish_delivery(&lease, liaison::store::DeliveryEnd::Delivered)
        .await
        .unwrap();
    let report = store
        .purge(PurgeCutoffs::new(cutoff, cutoff))
        .await
        .unwrap();
    assert_eq!(report.payloads, 1, "{name}");
    assert_eq!(store.get(waiting).await.unwrap().result, None, "{name}");
}
