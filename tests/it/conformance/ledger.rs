//! The idempotency-key ledger.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use liaison::store::{ListFilter, StateChange};
use liaison::{Error, ErrorKind, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::harness::{Harness, Settings, submission};

pub async fn same_key_and_payload_returns_the_existing_submission(h: &Harness) {
    let store = h.store().await;
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
    assert_eq!(again.submission, first.submission);
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
    let timeline = store.timeline(first.submission.id).await.unwrap();
    assert_eq!(timeline.last().unwrap().kind, EventKind::Deduplicated);
    assert_eq!(timeline.last().unwrap().actor.as_str(), "system:enqueue");
}

pub async fn an_enqueued_line_is_read_from_the_row_and_never_twice(h: &Harness) {
    let store = h.store().await;
    let one = store.enqueue(submission("bank", "line-1")).await.unwrap();
    let batch = store
        .enqueue_batch(vec![
            submission("bank", "line-2"),
            submission("bank", "line-3"),
        ])
        .await
        .unwrap();
    let all: Vec<_> = std::iter::once(one)
        .chain(batch)
        .map(|enqueued| enqueued.submission)
        .collect();
    // An enqueue, alone or in a batch, stores no line: its row says it all.
    assert_eq!(
        h.count_raw("SELECT COUNT(*) FROM liaison_events").await,
        0,
        "{}",
        h.name()
    );
    for new in &all {
        let timeline = store.timeline(new.id).await.unwrap();
        let [line] = timeline.as_slice() else {
            panic!("{}: one line, got {timeline:?}", h.name());
        };
        assert_eq!(
            (
                line.seq,
                &line.kind,
                line.at,
                line.from_state,
                line.to_state
            ),
            (
                0,
                &EventKind::Enqueued,
                new.created_at,
                None,
                Some(SubmissionState::Queued)
            ),
            "{}",
            h.name()
        );
        assert_eq!(line.actor.as_str(), "system:enqueue");
        assert_eq!(line.submission_id, new.id);
    }
    // Stored lines follow it.
    assert!(
        store
            .enqueue(submission("bank", "line-1"))
            .await
            .unwrap()
            .deduplicated
    );
    let timeline = store.timeline(all[0].id).await.unwrap();
    let kinds: Vec<_> = timeline.iter().map(|line| line.kind.clone()).collect();
    assert_eq!(kinds, [EventKind::Enqueued, EventKind::Deduplicated]);
    assert!(timeline[1].seq > timeline[0].seq);
    // A line an earlier version stored is answered as stored, once.
    h.execute_raw(&format!(
        "INSERT INTO liaison_events (submission_id, at, kind, to_state, actor) \
         VALUES ('{}', 1, 'enqueued', 'queued', 'system:enqueue')",
        all[1].id
    ))
    .await;
    let timeline = store.timeline(all[1].id).await.unwrap();
    let [line] = timeline.as_slice() else {
        panic!("{}: the stored line alone, got {timeline:?}", h.name());
    };
    assert_eq!(
        (&line.kind, line.at.timestamp_millis()),
        (&EventKind::Enqueued, 1)
    );
    assert!(line.seq > 0, "{}", h.name());
}

pub async fn same_key_with_another_payload_is_a_conflict_naming_the_holder(h: &Harness) {
    let store = h.store().await;
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
    assert!(err.is_conflict(), "{err:?}");
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
    // Nothing was journaled for the refused enqueue.
    assert_eq!(store.timeline(first.submission.id).await.unwrap().len(), 1);
}

pub async fn keys_are_per_partner(h: &Harness) {
    let store = h.store().await;
    let a = store.enqueue(submission("bank", "k")).await.unwrap();
    let b = store.enqueue(submission("lab", "k")).await.unwrap();
    assert!(!b.deduplicated);
    assert_ne!(a.submission.id, b.submission.id);
}

pub async fn concurrent_enqueues_of_one_key_create_one_submission(h: &Harness) {
    // Two instances, as two processes would have, sharing one database.
    let stores = [h.store().await, h.store().await];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue(submission("bank", "same")).await
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let e = task.await.unwrap().unwrap();
        ids.insert(e.submission.id);
        fresh += usize::from(!e.deduplicated);
    }
    assert_eq!(ids.len(), 1, "one submission for one key");
    assert_eq!(fresh, 1, "exactly one enqueue created it");
    assert_eq!(
        stores[0].list(&ListFilter::default()).await.unwrap().len(),
        1
    );
    let id = ids.into_iter().next().unwrap();
    let dedups = stores[1]
        .timeline(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::Deduplicated)
        .count();
    assert_eq!(dedups, 15);
}

pub async fn invalid_keys_are_rejected_and_nothing_is_written(h: &Harness) {
    let store = h.store().await;
    for key in [
        "".to_string(),
        "x".repeat(256),
        "line\nbreak".into(),
        "tab\tkey".into(),
        "nul\0".into(),
    ] {
        let err = store.enqueue(submission("bank", &key)).await.unwrap_err();
        match &err {
            Error::InvalidInput { field, .. } => assert_eq!(*field, "idempotency_key"),
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(
            err.to_string().contains("idempotency_key"),
            "{key:?}: {err}"
        );
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

pub async fn a_generated_key_makes_every_enqueue_new(h: &Harness) {
    let store = h.store().await;
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

pub async fn pruning_removes_only_expired_keys_of_terminal_submissions(h: &Harness) {
    let day = Duration::from_secs(24 * 3600);
    let store = h
        .store_with(Settings::default().ledger_retention(Some(day)))
        .await;
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

    assert_eq!(store.prune_ledger(Utc::now()).await.unwrap(), 0);
    let later = Utc::now() + chrono::Duration::days(2);
    assert_eq!(
        store.prune_ledger(later).await.unwrap(),
        1,
        "only the terminal one"
    );

    let reused = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({"other": true}))
                .idempotency_key("done"),
        )
        .await
        .unwrap();
    assert!(!reused.deduplicated);
    assert_ne!(reused.submission.id, done);
    let err = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({"other": true}))
                .idempotency_key("open"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { existing, .. } if existing == open));
}

pub async fn an_expired_key_of_finished_work_is_free_even_before_pruning(h: &Harness) {
    let store = h
        .store_with(Settings::default().ledger_retention(Some(Duration::from_millis(1))))
        .await;
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

/// What goes in comes back as the same JSON value: numbers as written,
/// key order, escapes, large integers.
pub async fn payloads_and_correlation_round_trip_exactly(h: &Harness) {
    let store = h.store().await;
    let text = r#"{"z":1,"a":[1.0,100.0,1.5e300,-0.0,18446744073709551615,-9223372036854775808],
        "s":"tab\t nul\u0000 é 😀 \"q\"","nested":{"b":null,"a":true}}"#;
    let payload: serde_json::Value = serde_json::from_str(text).unwrap();
    let e = store
        .enqueue(
            NewSubmission::new("bank", "pay", payload.clone())
                .idempotency_key("exact")
                .correlation("claim_id", "C-1")
                .correlation("patient", "P-9")
                .business_value(12_500)
                .priority(-3),
        )
        .await
        .unwrap();
    let got = store.get(e.submission.id).await.unwrap();
    assert_eq!(got.payload.as_ref(), Some(&payload));
    assert_eq!(
        serde_json::to_string(&got.payload).unwrap(),
        serde_json::to_string(&payload).unwrap()
    );
    assert_eq!(got, e.submission);
    assert_eq!(
        got.correlation.get("claim_id").map(String::as_str),
        Some("C-1")
    );
    assert_eq!(got.business_value, Some(12_500));
    assert_eq!(got.priority, -3);
    // The store keys the fingerprint (see `privacy`): not the plain SHA-256.
    assert!(got.fingerprint.is_keyed());
    assert_ne!(got.fingerprint, liaison::Fingerprint::of(&payload));
    // And the same payload deduplicates.
    assert!(
        store
            .enqueue(NewSubmission::new("bank", "pay", payload).idempotency_key("exact"))
            .await
            .unwrap()
            .deduplicated
    );
}
