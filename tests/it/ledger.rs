//! The idempotency-key ledger.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use liaison::store::{ListFilter, OutboxStore, SqliteConfig, SqliteStore, StateChange};
use liaison::{Error, ErrorKind, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use crate::support::{store, store_with, submission};

#[tokio::test]
async fn same_key_and_payload_returns_the_existing_submission() {
    let (_dir, store) = store();
    let first = store
        .enqueue(
            NewSubmission::new("bank", "pay", json!({"b": 2, "a": {"y": 1, "x": 0}}))
                .idempotency_key("pay-1"),
        )
        .await
        .unwrap();
    assert!(!first.deduplicated);
    // Same payload with keys in another order: the same canonical fingerprint.
    let payload: serde_json::Value =
        serde_json::from_str(r#"{ "a": { "x": 0, "y": 1 }, "b": 2 }"#).unwrap();
    let again = store
        .enqueue(NewSubmission::new("bank", "pay", payload).idempotency_key("pay-1"))
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(again.submission.id, first.submission.id);
    let all = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    let timeline = store.timeline(first.submission.id).await.unwrap();
    assert_eq!(timeline.last().unwrap().kind, EventKind::Deduplicated);
}

#[tokio::test]
async fn same_key_with_another_payload_is_a_conflict_naming_the_holder() {
    let (_dir, store) = store();
    let first = store.enqueue(submission("bank", "pay-1")).await.unwrap();
    let err = store
        .enqueue(
            NewSubmission::new(
                "bank",
                "claim.submit",
                json!({"claim": "pay-1", "amount": 1}),
            )
            .idempotency_key("pay-1"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::IdempotencyConflict);
    assert!(err.is_conflict());
    match err {
        Error::IdempotencyConflict {
            partner,
            key,
            existing,
        } => {
            assert_eq!((partner.as_str(), key.as_str()), ("bank", "pay-1"));
            assert_eq!(existing, first.submission.id);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn keys_are_per_partner() {
    let (_dir, store) = store();
    let a = store.enqueue(submission("bank", "k")).await.unwrap();
    let b = store.enqueue(submission("lab", "k")).await.unwrap();
    assert!(!b.deduplicated);
    assert_ne!(a.submission.id, b.submission.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_of_one_key_create_one_submission() {
    let (dir, store) = store();
    let path = dir.path().join("outbox.db");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue(submission("bank", "same")).await
        }));
    }
    // Other writers on the same file, from plain threads with their own runtimes.
    let mut threads = Vec::new();
    for _ in 0..4 {
        let path = path.clone();
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let s = SqliteStore::open(&path).unwrap();
                s.enqueue(submission("bank", "same")).await
            })
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let e = task.await.unwrap().unwrap();
        ids.insert(e.submission.id);
        fresh += usize::from(!e.deduplicated);
    }
    for thread in threads {
        let e = thread.join().unwrap().unwrap();
        ids.insert(e.submission.id);
        fresh += usize::from(!e.deduplicated);
    }
    assert_eq!(ids.len(), 1, "one submission for one key");
    assert_eq!(fresh, 1, "exactly one enqueue created it");
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_keys_are_rejected_and_nothing_is_written() {
    let (_dir, store) = store();
    for key in [
        "".to_string(),
        "x".repeat(256),
        "line\nbreak".into(),
        "tab\tkey".into(),
    ] {
        let err = store.enqueue(submission("bank", &key)).await.unwrap_err();
        match &err {
            Error::InvalidInput { field, .. } => assert_eq!(*field, "idempotency_key"),
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(err.to_string().contains("idempotency_key"), "{err}");
    }
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
    // 255 bytes is the limit, and is fine; so are SQL metacharacters.
    store
        .enqueue(submission("bank", &"y".repeat(255)))
        .await
        .unwrap();
    let odd = "'; DROP TABLE liaison_submissions; --";
    let e = store.enqueue(submission("bank", odd)).await.unwrap();
    assert_eq!(
        store.get(e.submission.id).await.unwrap().idempotency_key,
        odd
    );
}

#[tokio::test]
async fn a_generated_key_makes_every_enqueue_new() {
    let (_dir, store) = store();
    let a = store
        .enqueue(NewSubmission::new("bank", "ping", json!({})))
        .await
        .unwrap();
    let b = store
        .enqueue(NewSubmission::new("bank", "ping", json!({})))
        .await
        .unwrap();
    assert_ne!(a.submission.idempotency_key, b.submission.idempotency_key);
    assert!(!b.deduplicated);
}

#[tokio::test]
async fn pruning_removes_only_expired_keys_of_terminal_submissions() {
    let day = Duration::from_secs(24 * 3600);
    let (_dir, store) = store_with(SqliteConfig::default().ledger_retention(Some(day)));
    let open = store
        .enqueue(submission("bank", "open"))
        .await
        .unwrap()
        .submission
        .id;
    let done = store
        .enqueue(submission("bank", "done"))
        .await
        .unwrap()
        .submission
        .id;
    store
        .transition(done, StateChange::to(SubmissionState::Cancelled))
        .await
        .unwrap();

    // Before retention ends nothing goes.
    assert_eq!(store.prune_ledger(Utc::now()).await.unwrap(), 0);
    let later = Utc::now() + chrono::Duration::days(2);
    assert_eq!(
        store.prune_ledger(later).await.unwrap(),
        1,
        "only the terminal one"
    );

    // The pruned key is free: a different payload is accepted as new work.
    let reused = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({"other": true}))
                .idempotency_key("done"),
        )
        .await
        .unwrap();
    assert!(!reused.deduplicated);
    assert_ne!(reused.submission.id, done);
    // The open one still guards its key.
    let err = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({"other": true}))
                .idempotency_key("open"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { existing, .. } if existing == open));
}

#[tokio::test]
async fn an_expired_key_of_finished_work_is_free_even_before_pruning() {
    let (_dir, store) =
        store_with(SqliteConfig::default().ledger_retention(Some(Duration::from_millis(1))));
    let first = store
        .enqueue(submission("bank", "k"))
        .await
        .unwrap()
        .submission
        .id;
    let held = store.enqueue(submission("bank", "k")).await.unwrap();
    assert!(
        held.deduplicated,
        "still queued: the key holds whatever its age"
    );
    store
        .transition(first, StateChange::to(SubmissionState::Cancelled))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store.enqueue(submission("bank", "k")).await.unwrap();
    assert!(!again.deduplicated);
    assert_ne!(again.submission.id, first);
}
