//! Retention: exactly the payloads due are purged, never an unfinished
//! submission's; timelines stay; space is given back.

use std::time::Duration;

use chrono::Utc;
use liaison::engine::{EngineSettings, Liaison};
use liaison::rusqlite;
use liaison::store::{NewCallback, OutboxStore};
use liaison::{Actor, NewSubmission, SubmissionState};
use serde_json::json;

use crate::support::{drive_new_to, store};

fn with_payload(partner: &str, key: &str, bytes: usize) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "patient": "x".repeat(bytes) }),
    )
    .idempotency_key(key)
}

#[tokio::test]
async fn a_purge_removes_exactly_what_is_due() {
    use SubmissionState::*;
    let (_dir, store) = store();
    let (early, _) = drive_new_to(&store, with_payload("a", "early", 10), Succeeded).await;
    let (failed, _) = drive_new_to(&store, with_payload("b", "failed", 10), Failed).await;
    let (queued, _) = drive_new_to(&store, with_payload("c", "queued", 10), Queued).await;
    let (waiting, _) = drive_new_to(&store, with_payload("d", "waiting", 10), AwaitingResult).await;
    let (stuck, _) = drive_new_to(&store, with_payload("e", "stuck", 10), Stuck).await;
    let body = |id: &str| {
        NewCallback::new("a", format!("{{\"ref\":\"{id}\"}}").into_bytes())
            .body_hash(id)
            .size(10)
    };
    let old_callback = store.record_callback(body("old")).await.unwrap();
    store
        .settle_callback(
            old_callback,
            liaison::store::Settlement::Malformed { reason: "x".into() },
        )
        .await
        .unwrap();
    let waiting_callback = store.record_callback(body("pending")).await.unwrap();

    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (late, _) = drive_new_to(&store, with_payload("f", "late", 10), Succeeded).await;

    let report = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(
        report.payloads, 2,
        "the two that finished before the cutoff"
    );
    assert_eq!(
        report.callback_bodies, 1,
        "the settled callback, not the one still waiting"
    );
    assert!(!report.more);
    for id in [early, failed] {
        let s = store.get(id).await.unwrap();
        assert_eq!(s.payload, None);
        assert_eq!(
            store.timeline(id).await.unwrap()[0].kind,
            liaison::EventKind::Enqueued
        );
    }
    for id in [queued, waiting, stuck, late] {
        assert!(
            store.get(id).await.unwrap().payload.is_some(),
            "unfinished or not yet due"
        );
    }
    assert_eq!(store.callback(old_callback).await.unwrap().body, None);
    assert!(
        store
            .callback(waiting_callback)
            .await
            .unwrap()
            .body
            .is_some()
    );

    // A purged failure cannot be sent again, and says why.
    let liaison = Liaison::builder(store.clone()).build().unwrap();
    let err = liaison
        .replay(failed, Actor::person("ops"), "retry")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("purged"), "{err}");
    // The fingerprint survives: the key still deduplicates the same payload.
    let again = store.enqueue(with_payload("a", "early", 10)).await.unwrap();
    assert!(again.deduplicated);
}

fn pages(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    conn.query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn the_file_gives_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let store = liaison::store::SqliteStore::open(&path).unwrap();
    for i in 0..300 {
        drive_new_to(
            &store,
            with_payload(&format!("p{i}"), "k", 20_000),
            SubmissionState::Succeeded,
        )
        .await;
    }
    let before = pages(&path);
    let liaison = Liaison::builder(store.clone())
        .settings(EngineSettings::default().payload_retention(Duration::ZERO))
        .build()
        .unwrap();
    let report = liaison.run_retention().await.unwrap();
    assert_eq!(report.payloads, 300);
    let after = pages(&path);
    assert!(after * 3 < before, "pages before {before}, after {after}");
}
