//! Bad input is refused with a clear error and writes nothing; lists filter and page.

use liaison::store::{AttemptReport, ListFilter, StateChange};
use liaison::{AttemptOutcome, Error, NewSubmission, SubmissionId, SubmissionState};
use serde_json::json;

use super::harness::{Harness, Settings, claim_one, submission};

pub async fn an_oversized_payload_is_refused_at_the_default_cap(h: &Harness) {
    let store = h.store().await;
    let big = "x".repeat(1024 * 1024 + 1);
    let err = store
        .enqueue(NewSubmission::new("bank", "pay", json!({ "blob": big })).idempotency_key("big"))
        .await
        .unwrap_err();
    match &err {
        Error::PayloadTooLarge { size, limit } => {
            assert_eq!(*limit, 1024 * 1024);
            assert!(*size > *limit);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_invalid_input(), "{err:?}");
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
    // The key was not taken by the refused enqueue.
    assert!(
        !store
            .enqueue(submission("bank", "big"))
            .await
            .unwrap()
            .deduplicated
    );
}

pub async fn the_payload_cap_is_configurable(h: &Harness) {
    let store = h
        .store_with(Settings::default().max_payload_bytes(64))
        .await;
    let err = store
        .enqueue(NewSubmission::new(
            "bank",
            "pay",
            json!({ "note": "y".repeat(64) }),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 64, .. }),
        "{err:?}"
    );
    store
        .enqueue(NewSubmission::new("bank", "pay", json!({ "ok": 1 })))
        .await
        .unwrap();
}

pub async fn one_bad_item_refuses_the_whole_batch(h: &Harness) {
    let store = h.store().await;
    let batch = vec![
        submission("bank", "a"),
        submission("bank", "b"),
        submission("bank", ""),
    ];
    let err = store.enqueue_batch(batch).await.unwrap_err();
    assert!(err.to_string().contains("batch item 2"), "{err}");
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());

    // A conflict found inside the transaction also rolls back the whole batch.
    store.enqueue(submission("bank", "held")).await.unwrap();
    let batch = vec![
        submission("bank", "c"),
        NewSubmission::new("bank", "other", json!({"changed": true})).idempotency_key("held"),
    ];
    assert!(store.enqueue_batch(batch).await.unwrap_err().is_conflict());
    let all = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1, "only the earlier 'held' submission");
    // Nor was its key kept: "c" is new work.
    assert!(
        !store
            .enqueue(submission("bank", "c"))
            .await
            .unwrap()
            .deduplicated
    );
}

pub async fn a_batch_may_repeat_a_key_with_the_same_payload(h: &Harness) {
    let store = h.store().await;
    let out = store
        .enqueue_batch(vec![
            submission("bank", "twice"),
            submission("bank", "twice"),
        ])
        .await
        .unwrap();
    assert!(!out[0].deduplicated);
    assert!(out[1].deduplicated);
    assert_eq!(out[0].submission.id, out[1].submission.id);
}

pub async fn bad_names_and_unknown_ids_get_clear_errors(h: &Harness) {
    let store = h.store().await;
    for (new, field) in [
        (
            NewSubmission::new("bank partner", "pay", json!({})),
            "partner",
        ),
        (NewSubmission::new("bank", "pay\u{7}", json!({})), "kind"),
        (
            NewSubmission::new("bank", "pay", json!({})).ordering_key("x".repeat(300)),
            "ordering_key",
        ),
        (
            NewSubmission::new("bank", "pay", json!({})).correlation("claim id", "1"),
            "correlation field name",
        ),
    ] {
        match store.enqueue(new).await.unwrap_err() {
            Error::InvalidInput { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let missing = SubmissionId::new();
    for err in [
        store.get(missing).await.unwrap_err(),
        store.timeline(missing).await.unwrap_err(),
        store.attempts(missing).await.unwrap_err(),
        store
            .transition(missing, StateChange::to(SubmissionState::Cancelled))
            .await
            .unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().contains(&missing.to_string()));
    }
    // A malformed id is bad input before any store sees it.
    assert!(
        "not-a-uuid"
            .parse::<SubmissionId>()
            .unwrap_err()
            .is_invalid_input()
    );
}

pub async fn list_filters_and_pages(h: &Harness) {
    let store = h.store().await;
    for i in 0..5 {
        store
            .enqueue(submission("bank", &format!("b{i}")))
            .await
            .unwrap();
        store
            .enqueue(submission("lab", &format!("l{i}")).ordering_key("o"))
            .await
            .unwrap();
    }
    let bank = store
        .list(&ListFilter::default().partner("bank"))
        .await
        .unwrap();
    assert_eq!(bank.len(), 5);
    assert!(bank.iter().all(|s| s.partner == "bank"));
    let page1 = store.list(&ListFilter::default().limit(4)).await.unwrap();
    let page2 = store
        .list(&ListFilter::default().limit(4).after(page1[3].id))
        .await
        .unwrap();
    assert_eq!(page2.len(), 4);
    assert!(page1.iter().all(|a| page2.iter().all(|b| a.id < b.id)));
    let by_key = store
        .list(&ListFilter::default().idempotency_key("l3"))
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    let ordered = store
        .list(&ListFilter::default().ordering_key("o"))
        .await
        .unwrap();
    assert_eq!(ordered.len(), 5);
    let kind = store
        .list(&ListFilter::default().kind("claim.submit").partner("lab"))
        .await
        .unwrap();
    assert_eq!(kind.len(), 5);
    let stuck = store
        .list(&ListFilter::default().state(SubmissionState::Stuck))
        .await
        .unwrap();
    assert!(stuck.is_empty(), "{stuck:?}");

    let lease = claim_one(&store, "bank").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    let some = store
        .list(
            &ListFilter::default()
                .state(SubmissionState::Succeeded)
                .state(SubmissionState::Stuck),
        )
        .await
        .unwrap();
    assert_eq!(
        some.iter().map(|s| s.id).collect::<Vec<_>>(),
        [lease.submission.id]
    );
    let t = page1[0].created_at;
    let from = store
        .list(
            &ListFilter::default()
                .created_from(t)
                .created_until(t + chrono::Duration::hours(1)),
        )
        .await
        .unwrap();
    assert_eq!(from.len(), 10);
}

/// Long texts are cut to 4 KiB on a character boundary, the same everywhere.
pub async fn long_texts_are_bounded(h: &Harness) {
    let store = h.store().await;
    store.enqueue(submission("bank", "k")).await.unwrap();
    let lease = claim_one(&store, "bank").await;
    let long = "é".repeat(5000);
    let s = store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Permanent).error(long.clone()),
            StateChange::to(SubmissionState::DeadLettered),
        )
        .await
        .unwrap();
    let kept = s.last_error.unwrap();
    assert!(kept.len() <= 4096 + '…'.len_utf8(), "{}", kept.len());
    assert!(kept.ends_with('…'));
    let attempt = store.attempts(s.id).await.unwrap().remove(0);
    assert_eq!(attempt.error.as_deref(), Some(kept.as_str()));
}
