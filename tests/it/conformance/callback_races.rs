//! Callbacks settled concurrently, by several instances: applied once.

use liaison::callback::{Correlation, Disposition, ReportedOutcome};
use liaison::store::{AttemptReport, StateChange};
use liaison::{AttemptOutcome, EventKind, SubmissionState};

use super::callbacks::{accepted, count, raw, report};
use super::harness::{Harness, claim_one, submission};

pub async fn a_callback_racing_its_acceptance_is_applied(h: &Harness) {
    // Many rounds of a callback (by partner reference) settled on one
    // instance while another records the acceptance it depends on: however
    // they interleave, the result is applied exactly once.
    let (a, b) = (h.store().await, h.store().await);
    for round in 0..20 {
        let key = format!("race-{round}");
        let reference = format!("R-{round}");
        let id = a
            .enqueue(submission("lab", &key))
            .await
            .unwrap()
            .submission
            .id;
        let lease = claim_one(&a, "lab").await;
        let cb = b.record_callback(raw("lab", &key)).await.unwrap();
        let settle = {
            let (b, reference) = (b.clone(), reference.clone());
            tokio::spawn(async move {
                b.settle_callback(
                    cb,
                    report(
                        Correlation::ExternalRef(reference),
                        None,
                        ReportedOutcome::Succeeded,
                    ),
                )
                .await
                .unwrap()
            })
        };
        let complete = {
            let a = a.clone();
            tokio::spawn(async move {
                a.complete(
                    &lease,
                    AttemptReport::new(AttemptOutcome::Accepted),
                    StateChange::to(SubmissionState::AwaitingResult).external_ref(reference),
                )
                .await
                .unwrap()
            })
        };
        settle.await.unwrap();
        complete.await.unwrap();
        let s = a.get(id).await.unwrap();
        assert_eq!(s.state, SubmissionState::Succeeded, "round {round}");
        assert_eq!(
            a.callback(cb).await.unwrap().disposition,
            Disposition::Applied
        );
    }
}

pub async fn concurrent_deliveries_of_one_callback_apply_once(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    let id = accepted(&stores[0], "C-1", "REF-1").await;
    let body = r#"{"ref":"REF-1","status":"ok","event":"evt-1"}"#;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            stores[i % 2]
                .record_callback(raw("lab", body))
                .await
                .unwrap(),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cb) in ids.into_iter().enumerate() {
        let s = stores[i % 2].clone();
        tasks.spawn(async move {
            s.settle_callback(
                cb,
                report(
                    Correlation::ExternalRef("REF-1".into()),
                    Some("evt-1"),
                    ReportedOutcome::Succeeded,
                ),
            )
            .await
        });
    }
    let mut dispositions = Vec::new();
    while let Some(done) = tasks.join_next().await {
        dispositions.push(done.unwrap().expect("settled").disposition);
    }
    let applied = dispositions
        .iter()
        .filter(|d| **d == Disposition::Applied)
        .count();
    let duplicates = dispositions
        .iter()
        .filter(|d| **d == Disposition::Duplicate)
        .count();
    assert_eq!((applied, duplicates), (1, 199));
    let timeline = stores[1].timeline(id).await.unwrap();
    assert_eq!(
        count(&timeline, EventKind::Succeeded),
        1,
        "exactly one state change"
    );
}
