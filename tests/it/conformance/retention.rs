//! Retention: a purge removes exactly the payloads and callback bodies that
//! are due, in bounded batches, and keeps what happened.

use std::time::Duration;

use chrono::Utc;
use liaison::callback::Disposition;
use liaison::store::{NewCallback, PurgeCutoffs, PurgeReport, Replay, Settlement, StateChange};
use liaison::{Actor, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::harness::{Harness, Store, drive_to};

fn callback(partner: &str, hash: &str, disposition: Disposition) -> NewCallback {
    NewCallback::new(partner, format!("{{\"ref\":\"{hash}\"}}").into_bytes())
        .body_hash(hash)
        .size(12)
        .disposition(disposition, None)
}

async fn has_payload(store: &Store, id: liaison::SubmissionId) -> bool {
    store.get(id).await.unwrap().payload.is_some()
}

pub async fn a_purge_removes_exactly_what_is_due(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let name = h.name();
    let (succeeded, _) = drive_to(&store, "a", Succeeded).await;
    let (failed, _) = drive_to(&store, "b", Failed).await;
    let (cancelled, _) = drive_to(&store, "c", Cancelled).await;
    let mut unfinished = Vec::new();
    for (partner, state) in [
        ("d", Queued),
        ("e", InFlight),
        ("f", AwaitingResult),
        ("g", Stuck),
    ] {
        unfinished.push(drive_to(&store, partner, state).await.0);
    }
    let settled = store
        .record_callback(callback("a", "settled", Disposition::Received))
        .await
        .unwrap();
    store
        .settle_callback(settled, Settlement::Malformed { reason: "x".into() })
        .await
        .unwrap();
    let pending = store
        .record_callback(callback("a", "pending", Disposition::Received))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (late, _) = drive_to(&store, "h", Succeeded).await;
    let late_callback = store
        .record_callback(callback("a", "late", Disposition::TooLarge))
        .await
        .unwrap();

    let report = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(
        (report.payloads, report.callback_bodies, report.more),
        (3, 1, false),
        "{name}: the three finished before the cutoff and the settled callback"
    );
    for id in [succeeded, failed, cancelled] {
        let s = store.get(id).await.unwrap();
        assert_eq!(s.payload, None, "{name}");
        // What happened stays.
        assert_eq!(
            store.timeline(id).await.unwrap()[0].kind,
            EventKind::Enqueued
        );
    }
    for id in unfinished.iter().copied().chain([late]) {
        assert!(has_payload(&store, id).await, "{name}: unfinished or newer");
    }
    assert_eq!(store.callback(settled).await.unwrap().body, None, "{name}");
    for id in [pending, late_callback] {
        assert!(
            store.callback(id).await.unwrap().body.is_some(),
            "{name}: waiting to be processed, or newer"
        );
    }
    assert_eq!(
        store.purge(cutoff.into()).await.unwrap(),
        PurgeReport::default(),
        "{name}: nothing left"
    );

    // A purged failure cannot be sent again, and says why.
    let err = store
        .replay(failed, Replay::new(Actor::person("ops"), "retry"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_transition(), "{name}: {err}");
    assert!(err.to_string().contains("purged"), "{name}: {err}");
    // The fingerprint survives: the key still deduplicates the same payload.
    let again = store
        .enqueue(super::harness::submission("a", "a-key"))
        .await
        .unwrap();
    assert!(again.deduplicated, "{name}");
    assert_eq!(again.submission.id, succeeded);
}

pub async fn a_purge_works_in_batches_and_says_when_more_is_due(h: &Harness) {
    // One batch and a fifth (the batch is 250 rows).
    const N: usize = 300;
    let store = h.store().await;
    let name = h.name();
    let batch: Vec<_> = (0..N)
        .map(|i| {
            NewSubmission::new("bulk", "claim.submit", json!({ "n": i }))
                .idempotency_key(format!("k{i}"))
        })
        .collect();
    let ids: Vec<_> = store
        .enqueue_batch(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.submission.id)
        .collect();
    // Finish them all (cancelled), and store as many settled callbacks,
    // from a few tasks at once.
    let mut tasks = Vec::new();
    for chunk in ids.chunks(N / 8) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                store
                    .transition(id, StateChange::to(SubmissionState::Cancelled))
                    .await
                    .unwrap();
                store
                    .record_callback(callback("bulk", &id.to_string(), Disposition::TooLarge))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let unfinished = drive_to(&store, "bulk", SubmissionState::Queued).await.0;
    let cutoff = Utc::now();

    let first = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(
        (first.payloads, first.callback_bodies, first.more),
        (250, 250, true),
        "{name}: one bounded batch"
    );
    let second = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(
        (second.payloads, second.callback_bodies, second.more),
        (50, 50, false),
        "{name}: the rest"
    );
    assert_eq!(
        store.purge(cutoff.into()).await.unwrap(),
        PurgeReport::default()
    );
    for id in [ids[0], ids[N / 2], ids[N - 1]] {
        assert!(!has_payload(&store, id).await, "{name}");
    }
    assert!(has_payload(&store, unfinished).await, "{name}");
}

/// Bodies of callbacks that failed verification go by their own cutoff:
/// earlier than other bodies by default, and never by the other's.
pub async fn rejected_bodies_have_their_own_cutoff(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let before = Utc::now() - chrono::Duration::days(1);
    let settle = |hash: &'static str, settlement: Settlement| {
        let store = store.clone();
        async move {
            let id = store
                .record_callback(callback("a", hash, Disposition::Received))
                .await
                .unwrap();
            store.settle_callback(id, settlement).await.unwrap();
            id
        }
    };
    let rejected = settle(
        "rejected",
        Settlement::Rejected {
            reason: "sig".into(),
            metadata_only: false,
        },
    )
    .await;
    let malformed = settle("malformed", Settlement::Malformed { reason: "x".into() }).await;
    let refused = store
        .record_callback(callback("nobody", "refused", Disposition::Rejected))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = Utc::now();
    let body = |id| {
        let store = store.clone();
        async move { store.callback(id).await.unwrap().body.is_some() }
    };

    // Rejected bodies are due, the others not: only the rejected go.
    let report = store.purge(PurgeCutoffs::new(before, after)).await.unwrap();
    assert_eq!(report.callback_bodies, 2, "{name}");
    assert!(!body(rejected).await, "{name}: rejected after verification");
    assert!(!body(refused).await, "{name}: rejected at once");
    assert!(body(malformed).await, "{name}: not due yet");

    // The other way round: a malformed body goes, a rejected one would stay.
    let kept = settle(
        "kept",
        Settlement::Rejected {
            reason: "sig".into(),
            metadata_only: false,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = Utc::now();
    let report = store.purge(PurgeCutoffs::new(later, before)).await.unwrap();
    assert_eq!(report.callback_bodies, 1, "{name}");
    assert!(!body(malformed).await, "{name}: due");
    assert!(
        body(kept).await,
        "{name}: rejected, not due by its own cutoff"
    );
}

/// Rows of callbacks go too: those to unknown names by their cutoff, those
/// settled for good by theirs; never one still received or unmatched, nor
/// one about an unfinished submission; timelines stay as they were.
pub async fn callback_rows_are_deleted_past_their_cutoffs(h: &Harness) {
    use liaison::callback::{CallbackReport, Correlation, ReportedOutcome};
    let store = h.store().await;
    let name = h.name();
    let never = chrono::DateTime::<Utc>::MIN_UTC;
    let report = |correlation: Correlation, outcome: ReportedOutcome| Settlement::Report {
        report: CallbackReport::new(correlation, outcome),
        unmatched_until: Utc::now() + chrono::Duration::hours(1),
    };
    let rejected = || Settlement::Rejected {
        reason: "sig".into(),
        metadata_only: false,
    };
    let settle = |partner: &'static str, hash: String, settlement: Option<Settlement>| {
        let store = store.clone();
        async move {
            let id = store
                .record_callback(callback(partner, &hash, Disposition::Received))
                .await
                .unwrap();
            if let Some(settlement) = settlement {
                store.settle_callback(id, settlement).await.unwrap();
            }
            id
        }
    };
    let unknown = |hash: &str, disposition| {
        let store = store.clone();
        let new = callback("nobody", hash, disposition).without_body();
        async move { store.record_callback(new).await.unwrap() }
    };

    // Before the cutoffs.
    let (done, _) = drive_to(&store, "lab", SubmissionState::AwaitingResult).await;
    let (open, _) = drive_to(&store, "open", SubmissionState::AwaitingResult).await;
    let applied = settle(
        "lab",
        "applied".into(),
        Some(report(
            Correlation::SubmissionId(done),
            ReportedOutcome::Succeeded,
        )),
    )
    .await;
    assert_eq!(
        store.get(done).await.unwrap().state,
        SubmissionState::Succeeded
    );
    let progress = settle(
        "open",
        "progress".into(),
        Some(report(
            Correlation::SubmissionId(open),
            ReportedOutcome::Progress { note: None },
        )),
    )
    .await;
    assert_eq!(
        store.callback(progress).await.unwrap().disposition,
        Disposition::Applied
    );
    let received = settle("lab", "received".into(), None).await;
    let unmatched = settle(
        "lab",
        "unmatched".into(),
        Some(report(
            Correlation::ExternalRef("nothing".into()),
            ReportedOutcome::Succeeded,
        )),
    )
    .await;
    assert_eq!(
        store.callback(unmatched).await.unwrap().disposition,
        Disposition::Unmatched
    );
    let forged = settle("lab", "forged".into(), Some(rejected())).await;
    let probe = unknown("probe", Disposition::Rejected).await;
    let probe_big = unknown("probe-big", Disposition::TooLarge).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // After them.
    let forged_later = settle("lab", "forged-later".into(), Some(rejected())).await;
    let probe_later = unknown("probe-later", Disposition::Rejected).await;

    let timeline = store.timeline(done).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| format!("{:?}", e.data).contains(&applied.to_string())),
        "{name}: the timeline refers to the callback: {timeline:#?}"
    );
    let exists = |id| {
        let store = store.clone();
        async move { store.callback(id).await.is_ok() }
    };
    let configured = ["lab", "open"];

    // Unknown names only: rows of configured partners stay whatever their
    // disposition.
    let report = store
        .purge(PurgeCutoffs::new(never, never).rows(never, cutoff, configured))
        .await
        .unwrap();
    assert_eq!(
        (
            report.unknown_callbacks,
            report.settled_callbacks,
            report.more
        ),
        (2, 0, false),
        "{name}: {report:?}"
    );
    assert!(!exists(probe).await, "{name}");
    assert!(!exists(probe_big).await, "{name}");
    assert!(exists(probe_later).await, "{name}: not due");
    assert!(exists(forged).await, "{name}: a configured partner's");

    // Settled for good.
    let report = store
        .purge(PurgeCutoffs::new(never, never).rows(cutoff, never, configured))
        .await
        .unwrap();
    assert_eq!(
        (
            report.unknown_callbacks,
            report.settled_callbacks,
            report.more
        ),
        (0, 2, false),
        "{name}: {report:?}"
    );
    assert!(!exists(applied).await, "{name}");
    assert!(!exists(forged).await, "{name}");
    assert!(
        exists(progress).await,
        "{name}: its submission is unfinished"
    );
    assert!(exists(received).await, "{name}: not processed yet");
    assert!(exists(unmatched).await, "{name}: waiting for a match");
    assert!(exists(forged_later).await, "{name}: not due");
    assert!(exists(probe_later).await, "{name}: not due");
    assert_eq!(
        store.timeline(done).await.unwrap(),
        timeline,
        "{name}: the timeline stays"
    );
    assert_eq!(
        store.get(done).await.unwrap().state,
        SubmissionState::Succeeded
    );
    assert_eq!(
        store
            .purge(PurgeCutoffs::new(never, never).rows(cutoff, cutoff, configured))
            .await
            .unwrap(),
        PurgeReport::default(),
        "{name}: nothing left"
    );
}
