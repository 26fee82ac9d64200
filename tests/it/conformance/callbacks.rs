//! Callbacks at the store: stored raw, settled once, repeats and conflicts
//! recognised, early callbacks matched when the acceptance is recorded.

use chrono::{DateTime, Utc};
use liaison::callback::{CallbackId, CallbackReport, Correlation, Disposition, ReportedOutcome};
use liaison::store::{
    AttemptReport, CallbackFilter, FinishedAttempt, NewCallback, Note, OverdueClaim, Settlement,
    StateChange,
};
use liaison::{Actor, AttemptOutcome, EventKind, SubmissionId, SubmissionState};

use super::harness::{Harness, Store, claim_one, drive_to, submission};

pub fn raw(partner: &str, body: &str) -> NewCallback {
    NewCallback::new(partner, body.as_bytes())
        .header("content-type", "application/json")
        .header("webhook-id", "msg_1")
}

pub fn report(
    correlation: Correlation,
    event: Option<&str>,
    outcome: ReportedOutcome,
) -> Settlement {
    Settlement::Report {
        report: {
            let mut report = CallbackReport::new(correlation, outcome);
            report.event_id = event.map(str::to_owned);
            report
        },
        unmatched_until: soon(),
    }
}

fn soon() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(1)
}

fn failed(reason: &str) -> ReportedOutcome {
    ReportedOutcome::Failed {
        reason: reason.into(),
    }
}

/// Record a callback and settle it.
async fn deliver(
    store: &Store,
    body: &str,
    settlement: Settlement,
) -> (CallbackId, liaison::callback::CallbackReceipt) {
    let id = store.record_callback(raw("lab", body)).await.unwrap();
    let receipt = store.settle_callback(id, settlement).await.unwrap();
    (id, receipt)
}

/// A submission of "lab" accepted under reference `reference`.
pub async fn accepted(store: &Store, key: &str, reference: &str) -> SubmissionId {
    let id = store
        .enqueue(submission("lab", key))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(store, "lab").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
            StateChange::to(SubmissionState::AwaitingResult).external_ref(reference),
        )
        .await
        .unwrap();
    id
}

pub fn count(events: &[liaison::Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

pub async fn a_callback_is_stored_raw_and_applied_once(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    let body = r#"{"ref":"REF-1","status":"ok","event":"evt-1"}"#;
    let by_ref = || Correlation::ExternalRef("REF-1".into());
    let (cb, receipt) = deliver(
        &store,
        body,
        report(by_ref(), Some("evt-1"), ReportedOutcome::Succeeded),
    )
    .await;
    assert_eq!(receipt.disposition, Disposition::Applied);
    assert_eq!(receipt.http_status, 200);
    assert_eq!(receipt.submission_id, Some(id));
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Succeeded);
    assert!(s.terminal_at.is_some());

    let stored = store.callback(cb).await.unwrap();
    assert_eq!(stored.body.as_deref(), Some(body.as_bytes()));
    assert_eq!(stored.headers[1], ("webhook-id".into(), "msg_1".into()));
    assert_eq!(stored.event_id.as_deref(), Some("evt-1"));
    assert_eq!(stored.correlation, Some(by_ref()));
    assert_eq!(stored.disposition, Disposition::Applied);
    assert_eq!(stored.submission_id, Some(id));
    assert!(stored.processed_at.is_some());
    assert_eq!(stored.size, body.len() as u64);

    // The same event again, with another body: a duplicate, not applied again.
    let (_, again) = deliver(
        &store,
        r#"{"ref":"REF-1","status":"ok","event":"evt-1","retry":1}"#,
        report(by_ref(), Some("evt-1"), ReportedOutcome::Succeeded),
    )
    .await;
    assert_eq!(again.disposition, Disposition::Duplicate);
    assert_eq!(again.http_status, 200);
    assert_eq!(again.submission_id, Some(id));
    // The same body again, without an event id: a duplicate too.
    let plain = r#"{"ref":"REF-1","status":"ok"}"#;
    let (_, first_plain) = deliver(
        &store,
        plain,
        report(by_ref(), None, ReportedOutcome::Succeeded),
    )
    .await;
    assert_eq!(
        first_plain.disposition,
        Disposition::Duplicate,
        "already succeeded"
    );
    let (_, by_body) = deliver(
        &store,
        plain,
        report(by_ref(), None, ReportedOutcome::Succeeded),
    )
    .await;
    assert_eq!(by_body.disposition, Disposition::Duplicate);
    assert_eq!(
        by_body.detail.as_deref(),
        Some("the same body was received before")
    );

    let timeline = store.timeline(id).await.unwrap();
    assert_eq!(
        count(&timeline, EventKind::Succeeded),
        1,
        "one state change"
    );
    let event = timeline.last().unwrap();
    assert_eq!(event.actor.as_str(), "system:callbacks");
    assert_eq!(event.data.as_ref().unwrap()["callback_id"], cb.to_string());

    let listed = store
        .list_callbacks(&CallbackFilter::default().submission_id(id))
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.last().unwrap().id, cb, "newest first");
}

/// `record_and_settle_callback`: stored and settled in one transaction,
/// with the same verdicts as storing, then settling.
pub async fn a_callback_stored_and_settled_at_once_is_kept_and_judged_alike(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let id = accepted(&store, "C-1", "REF-1").await;
    let body = r#"{"ref":"REF-1","status":"ok","event":"evt-1"}"#;
    let by_ref = || Correlation::ExternalRef("REF-1".into());
    let receipt = store
        .record_and_settle_callback(
            raw("lab", body),
            report(by_ref(), Some("evt-1"), ReportedOutcome::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Applied, "{name}");
    assert_eq!(receipt.submission_id, Some(id), "{name}");
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Succeeded,
        "{name}"
    );
    let stored = store.callback(receipt.callback_id).await.unwrap();
    assert_eq!(stored.body.as_deref(), Some(body.as_bytes()), "{name}");
    assert_eq!(stored.disposition, Disposition::Applied, "{name}");
    assert_eq!(stored.event_id.as_deref(), Some("evt-1"), "{name}");
    assert_eq!(stored.correlation, Some(by_ref()), "{name}");
    assert_eq!(stored.submission_id, Some(id), "{name}");
    assert_eq!(stored.headers, raw("lab", body).headers, "{name}");
    assert!(stored.processed_at.is_some(), "{name}");

    // The partner's retry of the same event: a duplicate, applied once.
    let again = store
        .record_and_settle_callback(
            raw("lab", body),
            report(by_ref(), Some("evt-1"), ReportedOutcome::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(again.disposition, Disposition::Duplicate, "{name}");
    assert_ne!(again.callback_id, receipt.callback_id, "{name}");
    let timeline = store.timeline(id).await.unwrap();
    assert_eq!(count(&timeline, EventKind::Succeeded), 1, "{name}");

    // A rejection is stored with its body, or as metadata only past the cap.
    for metadata_only in [false, true] {
        let rejected = store
            .record_and_settle_callback(
                raw("lab", "forged"),
                Settlement::Rejected {
                    reason: "bad signature".into(),
                    metadata_only,
                },
            )
            .await
            .unwrap();
        assert_eq!(rejected.disposition, Disposition::Rejected, "{name}");
        let stored = store.callback(rejected.callback_id).await.unwrap();
        assert_eq!(stored.disposition, Disposition::Rejected, "{name}");
        assert_eq!(
            stored.body.is_none(),
            metadata_only,
            "{name}: metadata only {metadata_only}"
        );
        assert_eq!(stored.size, 6, "{name}");
    }

    // One that does not parse is kept whole with the reason.
    let malformed = store
        .record_and_settle_callback(
            raw("lab", "{"),
            Settlement::Malformed {
                reason: "EOF while parsing".into(),
            },
        )
        .await
        .unwrap();
    let stored = store.callback(malformed.callback_id).await.unwrap();
    assert_eq!(stored.disposition, Disposition::Malformed, "{name}");
    assert_eq!(stored.error.as_deref(), Some("EOF while parsing"), "{name}");
    assert_eq!(stored.body.as_deref(), Some(&b"{"[..]), "{name}");
    assert_eq!(stored.correlation, None, "{name}");

    // One that arrives before the acceptance it reports on waits with what
    // it reports, and the acceptance applies it.
    let early = store
        .enqueue(submission("lab", "C-2"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "lab").await;
    let by_ref2 = || Correlation::ExternalRef("REF-2".into());
    let body2 = r#"{"ref":"REF-2","status":"ok","event":"evt-2"}"#;
    let waiting = store
        .record_and_settle_callback(
            raw("lab", body2),
            report(by_ref2(), Some("evt-2"), ReportedOutcome::Succeeded),
        )
        .await
        .unwrap();
    assert_eq!(waiting.disposition, Disposition::Unmatched, "{name}");
    let stored = store.callback(waiting.callback_id).await.unwrap();
    assert_eq!(stored.correlation, Some(by_ref2()), "{name}");
    assert_eq!(stored.event_id.as_deref(), Some("evt-2"), "{name}");
    assert_eq!(stored.submission_id, None, "{name}");
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("REF-2"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(early).await.unwrap().state,
        SubmissionState::Succeeded,
        "{name}"
    );
    let stored = store.callback(waiting.callback_id).await.unwrap();
    assert_eq!(stored.disposition, Disposition::Applied, "{name}");
    assert_eq!(stored.submission_id, Some(early), "{name}");
}

pub async fn a_repeated_event_with_another_outcome_is_conflicting(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    let by_ref = || Correlation::ExternalRef("REF-1".into());
    deliver(
        &store,
        "a",
        report(by_ref(), Some("evt-1"), ReportedOutcome::Succeeded),
    )
    .await;
    let (cb, conflict) = deliver(
        &store,
        "b",
        report(by_ref(), Some("evt-1"), failed("rejected")),
    )
    .await;
    assert_eq!(conflict.disposition, Disposition::Conflicting);
    assert_eq!(conflict.submission_id, Some(id));
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    let timeline = store.timeline(id).await.unwrap();
    let note = timeline.last().unwrap();
    assert_eq!(note.kind, EventKind::ConflictingCallback);
    assert_eq!(note.data.as_ref().unwrap()["callback_id"], cb.to_string());
    // Another event reporting otherwise about a settled submission: conflicting.
    let (_, other) = deliver(&store, "c", report(by_ref(), Some("evt-2"), failed("no"))).await;
    assert_eq!(other.disposition, Disposition::Conflicting);
    assert_eq!(
        other.detail.as_deref(),
        Some("the submission is already succeeded; the callback reports otherwise")
    );
    let quarantined = store
        .list_callbacks(&CallbackFilter::quarantined().partner("lab"))
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 2);
}

pub async fn a_failure_and_progress_are_applied_as_reported(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    let by_id = || Correlation::SubmissionId(id);
    let (_, progress) = deliver(
        &store,
        "p",
        report(
            by_id(),
            Some("e1"),
            ReportedOutcome::Progress {
                note: Some("half way".into()),
            },
        ),
    )
    .await;
    assert_eq!(progress.disposition, Disposition::Applied);
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::AwaitingResult
    );
    let (_, result) = deliver(
        &store,
        "f",
        report(by_id(), Some("e2"), failed("bad member id")),
    )
    .await;
    assert_eq!(result.disposition, Disposition::Applied);
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Failed);
    assert_eq!(s.last_error.as_deref(), Some("bad member id"));
    let (_, late_progress) = deliver(
        &store,
        "p2",
        report(
            by_id(),
            Some("e3"),
            ReportedOutcome::Progress { note: None },
        ),
    )
    .await;
    assert_eq!(late_progress.disposition, Disposition::Duplicate);
    let timeline = store.timeline(id).await.unwrap();
    let progress = timeline
        .iter()
        .find(|e| e.kind == EventKind::Progress)
        .unwrap();
    assert_eq!(progress.reason.as_deref(), Some("half way"));
    assert_eq!(count(&timeline, EventKind::Failed), 1);
}

pub async fn an_early_callback_waits_and_is_applied_with_the_acceptance(h: &Harness) {
    let store = h.store().await;
    // By reference, before any submission has it: unmatched, 202.
    let (by_ref_cb, waiting) = deliver(
        &store,
        "r",
        report(
            Correlation::ExternalRef("REF-9".into()),
            Some("e-ref"),
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    assert_eq!(waiting.disposition, Disposition::Unmatched);
    assert_eq!(waiting.http_status, 202);
    assert_eq!(waiting.submission_id, None);

    let id = store
        .enqueue(submission("lab", "C-9"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "lab").await;
    let s = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("REF-9"),
        )
        .await
        .unwrap();
    assert_eq!(
        s.state,
        SubmissionState::Succeeded,
        "applied with the acceptance"
    );
    let cb = store.callback(by_ref_cb).await.unwrap();
    assert_eq!(cb.disposition, Disposition::Applied);
    assert_eq!(cb.submission_id, Some(id));

    // By submission id while in flight: unmatched but named, then applied.
    let id2 = store
        .enqueue(submission("lab", "C-10"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "lab").await;
    let (early, receipt) = deliver(
        &store,
        "i",
        report(
            Correlation::SubmissionId(id2),
            Some("e-id"),
            failed("declined"),
        ),
    )
    .await;
    assert_eq!(receipt.disposition, Disposition::Unmatched);
    assert_eq!(receipt.submission_id, Some(id2));
    let s = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref("REF-10"),
        )
        .await
        .unwrap();
    assert_eq!(s.state, SubmissionState::Failed);
    assert_eq!(
        store.callback(early).await.unwrap().disposition,
        Disposition::Applied
    );
    // A transient failure does not match it: it stays waiting.
    let id3 = store
        .enqueue(submission("lab", "C-11"))
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(&store, "lab").await;
    let (early, _) = deliver(
        &store,
        "k",
        report(
            Correlation::IdempotencyKey("C-11".into()),
            None,
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Transient),
            StateChange::to(SubmissionState::Queued),
        )
        .await
        .unwrap();
    assert_eq!(
        store.callback(early).await.unwrap().disposition,
        Disposition::Unmatched
    );
    assert_eq!(store.get(id3).await.unwrap().state, SubmissionState::Queued);
}

pub async fn a_late_callback_after_cancel_is_noted(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    store
        .transition(
            id,
            StateChange::to(SubmissionState::Cancelled).actor(Actor::person("bob")),
        )
        .await
        .unwrap();
    let (_, late) = deliver(
        &store,
        "l",
        report(
            Correlation::ExternalRef("REF-1".into()),
            None,
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    assert_eq!(late.disposition, Disposition::Late);
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Cancelled
    );
    let last = store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::LateCallback);
}

pub async fn rejected_and_malformed_are_quarantined_and_reprocessable(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    let cb = store.record_callback(raw("lab", "garbled")).await.unwrap();
    let r = store
        .settle_callback(
            cb,
            Settlement::Malformed {
                reason: "not JSON".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (r.disposition, r.http_status),
        (Disposition::Malformed, 400)
    );
    assert_eq!(
        store.callback(cb).await.unwrap().error.as_deref(),
        Some("not JSON")
    );
    let bad = store.record_callback(raw("lab", "forged")).await.unwrap();
    let r = store
        .settle_callback(
            bad,
            Settlement::Rejected {
                reason: "signature".into(),
                metadata_only: false,
            },
        )
        .await
        .unwrap();
    assert_eq!((r.disposition, r.http_status), (Disposition::Rejected, 401));
    let quarantined = store
        .list_callbacks(&CallbackFilter::quarantined())
        .await
        .unwrap();
    assert_eq!(
        quarantined.iter().map(|c| c.id).collect::<Vec<_>>(),
        [bad, cb]
    );

    // Reprocessed after a fix, it applies.
    let r = store
        .settle_callback(
            cb,
            report(
                Correlation::ExternalRef("REF-1".into()),
                None,
                ReportedOutcome::Succeeded,
            ),
        )
        .await
        .unwrap();
    assert_eq!(r.disposition, Disposition::Applied);
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    // A settled callback cannot be settled again.
    let err = store
        .settle_callback(cb, Settlement::Malformed { reason: "x".into() })
        .await
        .unwrap_err();
    assert!(
        err.is_already_settled() && !err.is_invalid_input(),
        "{err:?}"
    );
    let missing = store
        .callback(store.record_callback(raw("lab", "x")).await.unwrap())
        .await
        .unwrap();
    assert_eq!(missing.disposition, Disposition::Received);

    // Stored with a disposition decided at once (too large): kept, settled.
    let mut big = raw("lab", "");
    big.body = None;
    big.size = 10 << 20;
    big.disposition = Disposition::TooLarge;
    big.error = Some("above the cap".into());
    let too_large = store
        .callback(store.record_callback(big).await.unwrap())
        .await
        .unwrap();
    assert_eq!(too_large.disposition, Disposition::TooLarge);
    assert_eq!(too_large.body, None);
    assert_eq!(too_large.size, 10 << 20);
    assert!(too_large.processed_at.is_some());
}

pub async fn unmatched_callbacks_expire_into_quarantine(h: &Harness) {
    let store = h.store().await;
    let cb = store.record_callback(raw("lab", "u")).await.unwrap();
    let until = Utc::now() + chrono::Duration::minutes(5);
    let r = store
        .settle_callback(
            cb,
            Settlement::Report {
                report: CallbackReport::new(
                    Correlation::ExternalRef("nobody".into()),
                    ReportedOutcome::Succeeded,
                ),
                unmatched_until: until,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.disposition, Disposition::Unmatched);
    assert_eq!(store.expire_unmatched(Utc::now()).await.unwrap(), 0);
    assert_eq!(
        store
            .expire_unmatched(until + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        1
    );
    let stored = store.callback(cb).await.unwrap();
    assert_eq!(stored.disposition, Disposition::Expired);
    assert!(stored.disposition.is_quarantined());
}

pub async fn overdue_results_are_listed_and_deadlines_move(h: &Harness) {
    let store = h.store().await;
    let t0 = Utc::now();
    let mut ids = Vec::new();
    for (i, minutes) in [10, 5, 60].into_iter().enumerate() {
        store
            .enqueue(submission("lab", &format!("d{i}")))
            .await
            .unwrap();
        let lease = claim_one(&store, "lab").await;
        let s = store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Accepted),
                StateChange::to(SubmissionState::AwaitingResult)
                    .result_deadline(t0 + chrono::Duration::minutes(minutes)),
            )
            .await
            .unwrap();
        ids.push(s.id);
    }
    let at = t0 + chrono::Duration::minutes(30);
    let overdue = store.overdue_results(at, 10).await.unwrap();
    assert_eq!(
        overdue.iter().map(|s| s.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    assert_eq!(store.overdue_results(at, 1).await.unwrap().len(), 1);

    let moved = store
        .defer_deadline(
            ids[1],
            at + chrono::Duration::minutes(10),
            Note::new(EventKind::Polled, Actor::system("deadlines")).reason("still processing"),
        )
        .await
        .unwrap();
    assert_eq!(
        moved.result_deadline.map(|t| t.timestamp_millis()),
        Some((at + chrono::Duration::minutes(10)).timestamp_millis())
    );
    assert_eq!(
        store.timeline(ids[1]).await.unwrap().pop().unwrap().kind,
        EventKind::Polled
    );
    assert_eq!(store.overdue_results(at, 10).await.unwrap().len(), 1);

    // Past its deadline it goes Stuck, keeping the deadline; a late result still counts.
    let stuck = store
        .transition(ids[0], StateChange::to(SubmissionState::Stuck))
        .await
        .unwrap();
    assert!(stuck.result_deadline.is_some());
    let err = store
        .defer_deadline(
            ids[0],
            at,
            Note::new(EventKind::Polled, Actor::system("deadlines")),
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_transition(), "{err:?}");
    let (_, late) = deliver(
        &store,
        "late",
        report(
            Correlation::SubmissionId(ids[0]),
            None,
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    assert_eq!(late.disposition, Disposition::Applied);
    assert_eq!(
        store.get(ids[0]).await.unwrap().state,
        SubmissionState::Succeeded
    );
    let (other, _) = drive_to(&store, "bank", SubmissionState::Queued).await;
    assert!(
        store
            .overdue_results(at, 10)
            .await
            .unwrap()
            .iter()
            .all(|s| s.id != other)
    );
}

/// Accepted submissions of `partner` whose result deadline is `deadline`.
async fn awaiting(
    store: &Store,
    partner: &str,
    n: usize,
    deadline: DateTime<Utc>,
) -> Vec<SubmissionId> {
    let mut ids = Vec::new();
    for i in 0..n {
        store
            .enqueue(submission(partner, &format!("{partner}-o{i}")))
            .await
            .unwrap();
        let lease = claim_one(store, partner).await;
        let s = store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Accepted),
                StateChange::to(SubmissionState::AwaitingResult)
                    .result_deadline(deadline - chrono::Duration::milliseconds(i as i64)),
            )
            .await
            .unwrap();
        ids.push(s.id);
    }
    ids
}

pub async fn overdue_results_are_taken_once_for_polling(h: &Harness) {
    let a = h.store().await;
    let b = h.store().await;
    let t0 = Utc::now();
    let lab = awaiting(&a, "lab", 40, t0).await;
    let bank = awaiting(&a, "bank", 3, t0).await;
    let take = |partner: &str, now: DateTime<Utc>, limit: usize| {
        OverdueClaim::new(partner, limit, std::time::Duration::from_secs(60)).at(now)
    };
    let at = t0 + chrono::Duration::seconds(1);

    // Two instances taking at once share the work out: none taken twice.
    let (x, y) = tokio::join!(
        a.claim_overdue(take("lab", at, 25)),
        b.claim_overdue(take("lab", at, 25))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut taken: Vec<SubmissionId> = x.iter().chain(&y).map(|s| s.id).collect();
    assert_eq!(taken.len(), 40, "{} + {}", x.len(), y.len());
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 40, "no submission taken twice");
    // Most overdue first within one take (later i: earlier deadline).
    let deadlines: Vec<_> = lab
        .iter()
        .rev()
        .filter(|id| x.iter().any(|s| s.id == **id))
        .collect();
    assert_eq!(x.iter().map(|s| &s.id).collect::<Vec<_>>(), deadlines);
    // The hold moved the deadline: nothing is overdue again until it ends.
    assert!(x.iter().all(|s| s.result_deadline.unwrap() > at));
    assert!(
        a.claim_overdue(take("lab", at, 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        a.overdue_results(at, 100)
            .await
            .unwrap()
            .iter()
            .all(|s| s.partner != "lab")
    );
    let after_hold = at + chrono::Duration::seconds(61);
    assert_eq!(
        a.claim_overdue(take("lab", after_hold, 100))
            .await
            .unwrap()
            .len(),
        40
    );

    // Only the named partner, only submissions awaiting a result.
    drive_to(&a, "bank", SubmissionState::Queued).await;
    let banks = b.claim_overdue(take("bank", at, 100)).await.unwrap();
    let mut got: Vec<_> = banks.iter().map(|s| s.id).collect();
    got.sort();
    let mut want = bank.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(
        b.claim_overdue(take("nobody", after_hold, 100))
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing was journaled by taking.
    let timeline = a.timeline(bank[0]).await.unwrap();
    assert_eq!(timeline.last().unwrap().kind, EventKind::Accepted);
}

pub async fn callbacks_are_listed_newest_or_oldest_first(h: &Harness) {
    let store = h.store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .record_callback(raw("lab", &format!(r#"{{"n":{i}}}"#)))
                .await
                .unwrap(),
        );
        store.record_callback(raw("other", "{}")).await.unwrap();
    }
    let listed = |filter: CallbackFilter| {
        let store = &store;
        async move {
            store
                .list_callbacks(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<CallbackId>>()
        }
    };
    let lab = || {
        CallbackFilter::default()
            .partner("lab")
            .disposition(Disposition::Received)
            .limit(3)
    };
    assert_eq!(listed(lab()).await, [ids[4], ids[3], ids[2]]);
    assert_eq!(listed(lab().oldest_first()).await, [ids[0], ids[1], ids[2]]);
    let all = listed(CallbackFilter::default().oldest_first().limit(2)).await;
    assert_eq!(all[0], ids[0]);
}

/// A rejection settled as metadata only clears the body and keeps only the
/// allowlisted headers, in the same settle; without the flag both stay.
pub async fn a_rejection_settled_as_metadata_only_clears_body_and_headers(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let with_headers = || {
        NewCallback::new("lab", b"{\"forged\":true}".to_vec())
            .header("Content-Type", "application/json")
            .header("user-agent", "forger/1.0")
            .header("webhook-signature", "v1,AAAA")
            .header("x-padding", "p".repeat(4096))
            .body_hash(uuid::Uuid::new_v4().simple().to_string())
    };
    let mut ids = Vec::new();
    for metadata_only in [false, true] {
        let id = store.record_callback(with_headers()).await.unwrap();
        let r = store
            .settle_callback(
                id,
                Settlement::Rejected {
                    reason: "signature".into(),
                    metadata_only,
                },
            )
            .await
            .unwrap();
        assert_eq!((r.disposition, r.http_status), (Disposition::Rejected, 401));
        ids.push(id);
    }
    let kept = store.callback(ids[0]).await.unwrap();
    assert!(kept.body.is_some(), "{name}");
    assert_eq!(kept.headers.len(), 4, "{name}");
    let dropped = store.callback(ids[1]).await.unwrap();
    assert_eq!(dropped.disposition, Disposition::Rejected, "{name}");
    assert_eq!(dropped.error.as_deref(), Some("signature"), "{name}");
    assert!(dropped.body.is_none(), "{name}: body kept");
    let names: Vec<&str> = dropped.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Content-Type", "user-agent"], "{name}");

    // Stored and settled at once, its one insert keeps the same.
    let at_once = store
        .record_and_settle_callback(
            with_headers(),
            Settlement::Rejected {
                reason: "signature".into(),
                metadata_only: true,
            },
        )
        .await
        .unwrap();
    let dropped = store.callback(at_once.callback_id).await.unwrap();
    assert_eq!(dropped.error.as_deref(), Some("signature"), "{name}");
    assert!(dropped.body.is_none(), "{name}: body kept");
    let names: Vec<&str> = dropped.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Content-Type", "user-agent"], "{name}");
}

/// The partner's quarantine now, by disposition, as health reads it.
async fn quarantine_of(store: &Store, partner: &str) -> Vec<(Disposition, u64)> {
    let stats = store
        .stats(
            &liaison::store::StatsQuery::new(std::time::Duration::from_secs(60)).partner(partner),
        )
        .await
        .unwrap();
    stats[0].quarantined.clone().into_iter().collect()
}

pub async fn dismissing_takes_a_callback_out_of_the_quarantine_and_its_counts(h: &Harness) {
    let store = h.store().await;
    let id = accepted(&store, "C-1", "REF-1").await;
    let (first, _) = deliver(
        &store,
        r#"{"ok":1}"#,
        report(
            Correlation::ExternalRef("REF-1".into()),
            Some("e-1"),
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    let (conflicting, r) = deliver(
        &store,
        r#"{"ok":0}"#,
        report(
            Correlation::ExternalRef("REF-1".into()),
            Some("e-1"),
            failed("no"),
        ),
    )
    .await;
    assert_eq!(r.disposition, Disposition::Conflicting);
    let malformed = store.record_callback(raw("lab", "garbled")).await.unwrap();
    store
        .settle_callback(
            malformed,
            Settlement::Malformed {
                reason: "not JSON".into(),
            },
        )
        .await
        .unwrap();
    let other = store.record_callback(raw("bank", "garbled")).await.unwrap();
    store
        .settle_callback(
            other,
            Settlement::Malformed {
                reason: "not JSON".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        quarantine_of(&store, "lab").await,
        [(Disposition::Conflicting, 1), (Disposition::Malformed, 1)],
        "{}: per partner and disposition",
        h.name()
    );

    // Refused, nothing changed: blank actor or reason, outside the
    // quarantine, unknown.
    let ops = || Actor::person("dana");
    let err = store
        .dismiss_callback(malformed, Actor::person(" "), "why".into())
        .await
        .unwrap_err();
    assert!(
        matches!(err, liaison::Error::InvalidInput { field: "actor", .. }),
        "{err:?}"
    );
    let err = store
        .dismiss_callback(malformed, ops(), "  ".into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            liaison::Error::InvalidInput {
                field: "reason",
                ..
            }
        ),
        "{err:?}"
    );
    let err = store
        .dismiss_callback(first, ops(), "why".into())
        .await
        .unwrap_err();
    assert!(err.is_not_quarantined(), "{err:?}");
    assert!(
        matches!(err, liaison::Error::NotQuarantined { disposition: Disposition::Applied, id } if id == first)
    );
    let err = store
        .dismiss_callback(
            "0190a7b2-58f1-7c2e-9a35-5d0e8b1f2c3d".parse().unwrap(),
            ops(),
            "why".into(),
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(
        store.callback(malformed).await.unwrap().disposition,
        Disposition::Malformed
    );
    assert_eq!(quarantine_of(&store, "lab").await.len(), 2);
    let timeline = store.timeline(id).await.unwrap().len();

    // The conflicting one, matched to the submission: journaled there.
    let done = store
        .dismiss_callback(conflicting, ops(), " settled with the partner ".into())
        .await
        .unwrap();
    assert_eq!(done.disposition, Disposition::Dismissed);
    assert_eq!(done.submission_id, Some(id), "its match stays");
    assert!(done.error.is_some(), "its error stays");
    let dismissal = done.dismissal.clone().unwrap();
    assert_eq!(
        (dismissal.actor, dismissal.reason.as_str(), dismissal.from),
        (ops(), "settled with the partner", Disposition::Conflicting)
    );
    assert_eq!(store.callback(conflicting).await.unwrap(), done);
    let events = store.timeline(id).await.unwrap();
    assert_eq!(events.len(), timeline + 1);
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::CallbackDismissed);
    assert_eq!(last.reason.as_deref(), Some("settled with the partner"));
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    assert_eq!(
        quarantine_of(&store, "lab").await,
        [(Disposition::Malformed, 1)]
    );
    assert!(
        store
            .list_callbacks(&CallbackFilter::quarantined().partner("lab"))
            .await
            .unwrap()
            .iter()
            .all(|c| c.id != conflicting)
    );
    let err = store
        .dismiss_callback(conflicting, ops(), "again".into())
        .await
        .unwrap_err();
    assert!(err.is_not_quarantined(), "{err:?}");

    // The malformed one, matched to nothing; then reprocessed on purpose:
    // it is settled again, its dismissal kept as history.
    store
        .dismiss_callback(malformed, ops(), "test message".into())
        .await
        .unwrap();
    assert_eq!(quarantine_of(&store, "lab").await, []);
    assert_eq!(
        quarantine_of(&store, "bank").await,
        [(Disposition::Malformed, 1)]
    );
    let again = store
        .settle_callback(
            malformed,
            Settlement::Malformed {
                reason: "still not JSON".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(again.disposition, Disposition::Malformed);
    let back = store.callback(malformed).await.unwrap();
    assert_eq!(
        back.dismissal.map(|d| d.reason),
        Some("test message".to_owned())
    );
    assert_eq!(
        quarantine_of(&store, "lab").await,
        [(Disposition::Malformed, 1)]
    );
}

pub async fn an_early_callback_delivered_twice_is_applied_once(h: &Harness) {
    let store = h.store().await;
    // The partner delivers one event twice before the acceptance is
    // recorded: the first waits, the second is its duplicate.
    let early = || {
        report(
            Correlation::ExternalRef("REF-T".into()),
            Some("e-twice"),
            ReportedOutcome::Succeeded,
        )
    };
    let (first, waiting) = deliver(&store, "t1", early()).await;
    assert_eq!(waiting.disposition, Disposition::Unmatched);
    let (second, again) = deliver(&store, "t2", early()).await;
    assert_eq!(again.disposition, Disposition::Duplicate);

    let id = accepted(&store, "C-T", "REF-T").await;
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Succeeded, "the result is applied");
    assert_eq!(
        store.callback(first).await.unwrap().disposition,
        Disposition::Applied
    );
    assert_eq!(
        store.callback(second).await.unwrap().disposition,
        Disposition::Duplicate
    );
    assert_eq!(
        count(&store.timeline(id).await.unwrap(), EventKind::Succeeded),
        1
    );

    // The second delivery reports otherwise (a conflict of the first): the
    // first, which arrived before it, is still what is applied.
    let (first, _) = deliver(
        &store,
        "u1",
        report(
            Correlation::ExternalRef("REF-U".into()),
            Some("e-u"),
            failed("declined"),
        ),
    )
    .await;
    let (second, again) = deliver(
        &store,
        "u2",
        report(
            Correlation::ExternalRef("REF-U".into()),
            Some("e-u"),
            ReportedOutcome::Succeeded,
        ),
    )
    .await;
    assert_eq!(again.disposition, Disposition::Conflicting);
    let id = accepted(&store, "C-U", "REF-U").await;
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Failed);
    assert_eq!(s.last_error.as_deref(), Some("declined"));
    assert_eq!(
        store.callback(first).await.unwrap().disposition,
        Disposition::Applied
    );
    assert_eq!(
        store.callback(second).await.unwrap().disposition,
        Disposition::Conflicting
    );
}

/// What became of one run of [`early_callbacks_for_four`]: each
/// submission's state and timeline kinds, each callback's disposition and
/// submission (which of the four), in delivery order.
type EarlyRun = (
    Vec<(SubmissionState, Vec<EventKind>)>,
    Vec<(Disposition, Option<usize>)>,
);

/// Four submissions in flight, early callbacks for them (three events for
/// one, the last a conflict, one event delivered twice for another, one by submission id, and
/// one for a key), then their acceptances, in one batch (`batch`) or one
/// at a time. Keys, references, event ids and bodies are all told apart by
/// `batch`, so both runs can share one store.
async fn early_callbacks_for_four(h: &Harness, batch: bool) -> EarlyRun {
    let store = h.store().await;
    let tag = if batch { "batch" } else { "single" };
    let t = |s: &str| format!("{tag}-{s}");
    let mut ids = Vec::new();
    let mut leases = Vec::new();
    for key in ["E-1", "E-2", "E-3", "E-4"] {
        ids.push(
            store
                .enqueue(submission("lab", &t(key)))
                .await
                .unwrap()
                .submission
                .id,
        );
        leases.push(claim_one(&store, "lab").await);
    }
    let by_ref = |r: &str| Correlation::ExternalRef(t(r));
    let progress = ReportedOutcome::Progress {
        note: Some("half way".into()),
    };
    let deliveries = [
        (t("a1"), report(by_ref("R-1"), Some(&t("ev-1")), progress)),
        (
            t("a2"),
            report(by_ref("R-1"), Some(&t("ev-2")), ReportedOutcome::Succeeded),
        ),
        // A third event for the first: it comes after the success.
        (
            t("a3"),
            report(by_ref("R-1"), Some(&t("ev-5")), failed("changed mind")),
        ),
        (
            t("b1"),
            report(by_ref("R-2"), Some(&t("ev-3")), failed("declined")),
        ),
        (
            t("b1"),
            report(by_ref("R-2"), Some(&t("ev-3")), failed("declined")),
        ),
        (
            t("c1"),
            report(
                Correlation::SubmissionId(ids[2]),
                None,
                ReportedOutcome::Succeeded,
            ),
        ),
        (
            t("d1"),
            report(
                Correlation::IdempotencyKey(t("E-4")),
                Some(&t("ev-4")),
                failed("no"),
            ),
        ),
    ];
    let mut callbacks = Vec::new();
    for (body, settlement) in deliveries {
        callbacks.push(deliver(&store, &body, settlement).await.0);
    }
    let finished: Vec<FinishedAttempt> = leases
        .into_iter()
        .zip(["R-1", "R-2", "R-3", "R-4"])
        .map(|(lease, reference)| {
            FinishedAttempt::new(
                lease,
                AttemptReport::new(AttemptOutcome::Accepted),
                StateChange::to(SubmissionState::AwaitingResult).external_ref(t(reference)),
            )
        })
        .collect();
    if batch {
        // The first three alone (each names its submission: settled in
        // rounds), then the fourth (a key: settled one at a time).
        let mut rest = finished;
        let last = rest.split_off(3);
        for part in [rest, last] {
            for answer in store.complete_batch(part).await.unwrap() {
                answer.unwrap();
            }
        }
    } else {
        for f in finished {
            store.complete(&f.lease, f.report, f.change).await.unwrap();
        }
    }
    let mut submissions = Vec::new();
    for id in &ids {
        let kinds = store
            .timeline(*id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        submissions.push((store.get(*id).await.unwrap().state, kinds));
    }
    let mut ends = Vec::new();
    for id in callbacks {
        let cb = store.callback(id).await.unwrap();
        let named = cb
            .submission_id
            .map(|s| ids.iter().position(|id| *id == s).unwrap());
        ends.push((cb.disposition, named));
    }
    (submissions, ends)
}

pub async fn early_callbacks_settled_by_a_batch_end_as_one_at_a_time(h: &Harness) {
    let (submissions, ends) = early_callbacks_for_four(h, true).await;
    use Disposition::*;
    use SubmissionState::*;
    let states: Vec<SubmissionState> = submissions.iter().map(|(s, _)| *s).collect();
    assert_eq!(states, [Succeeded, Failed, Succeeded, Failed]);
    assert_eq!(
        ends,
        [
            (Applied, Some(0)),
            (Applied, Some(0)),
            (Conflicting, Some(0)),
            (Applied, Some(1)),
            (Duplicate, None),
            (Applied, Some(2)),
            (Applied, Some(3)),
        ]
    );
    let of = |kinds: &[EventKind], kind: EventKind| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(of(&submissions[0].1, EventKind::Progress), 1);
    for (_, kinds) in &submissions {
        let ends = of(kinds, EventKind::Succeeded) + of(kinds, EventKind::Failed);
        assert_eq!(ends, 1, "{kinds:?}");
    }
    // The same, one acceptance at a time, on the same store: the same end.
    assert_eq!(
        early_callbacks_for_four(h, false).await,
        (submissions, ends)
    );
}
