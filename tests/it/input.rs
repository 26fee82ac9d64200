//! Bad input is refused with a clear error and writes nothing.

use liaison::store::{ListFilter, OutboxStore, SqliteConfig};
use liaison::{Error, NewSubmission};
use serde_json::json;

use crate::support::{store, store_with, submission};

#[tokio::test]
async fn an_oversized_payload_is_refused_at_the_default_cap() {
    let (_dir, store) = store();
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
    assert!(err.is_invalid_input());
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

#[tokio::test]
async fn the_payload_cap_is_configurable() {
    let (_dir, store) = store_with(SqliteConfig::default().max_payload_bytes(64));
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

#[tokio::test]
async fn one_bad_item_refuses_the_whole_batch() {
    let (_dir, store) = store();
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
}

#[tokio::test]
async fn a_batch_may_repeat_a_key_with_the_same_payload() {
    let (_dir, store) = store();
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

#[tokio::test]
async fn bad_names_and_unknown_ids_get_clear_errors() {
    let (_dir, store) = store();
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
    let missing = liaison::SubmissionId::new();
    let err = store.get(missing).await.unwrap_err();
    assert!(err.is_not_found());
    assert!(err.to_string().contains(&missing.to_string()));
    assert!(
        "not-a-uuid"
            .parse::<liaison::SubmissionId>()
            .unwrap_err()
            .is_invalid_input()
    );
}

#[tokio::test]
async fn list_filters_and_pages() {
    let (_dir, store) = store();
    for i in 0..5 {
        store
            .enqueue(submission("bank", &format!("b{i}")))
            .await
            .unwrap();
        store
            .enqueue(submission("lab", &format!("l{i}")))
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
        .list(&ListFilter {
            after: Some(page1[3].id),
            ..ListFilter::default().limit(4)
        })
        .await
        .unwrap();
    assert_eq!(page2.len(), 4);
    assert!(page1.iter().all(|a| page2.iter().all(|b| a.id < b.id)));
    let by_key = store
        .list(&ListFilter::default().idempotency_key("l3"))
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    let stuck = store
        .list(&ListFilter::default().state(liaison::SubmissionState::Stuck))
        .await
        .unwrap();
    assert!(stuck.is_empty());
}
