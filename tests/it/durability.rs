//! What is committed survives closing and reopening; schema versions are checked.

use liaison::rusqlite;
use liaison::store::{
    AttemptReport, ClaimRequest, ListFilter, OutboxStore, SCHEMA_VERSION, SqliteStore, StateChange,
};
use liaison::{AttemptOutcome, ErrorKind, SubmissionState};

use crate::support::{LEASE, submission};

#[tokio::test]
async fn everything_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let (ids, accepted) = {
        let store = SqliteStore::open(&path).unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                store
                    .enqueue(submission("bank", &format!("k{i}")))
                    .await
                    .unwrap()
                    .submission
                    .id,
            );
        }
        let lease = store
            .claim(ClaimRequest::new("bank", 1, LEASE).at(store.now()))
            .await
            .unwrap()
            .remove(0);
        let accepted = store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Accepted).http_status(202),
                StateChange::to(SubmissionState::AwaitingResult).external_ref("REF-1"),
            )
            .await
            .unwrap();
        (ids, accepted)
    }; // the store is dropped here: its writer finishes and closes

    let store = SqliteStore::open(&path).unwrap();
    let all = store.list(&ListFilter::default().limit(100)).await.unwrap();
    assert_eq!(all.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    let again = store.get(accepted.id).await.unwrap();
    assert_eq!(again, accepted);
    assert_eq!(again.external_ref.as_deref(), Some("REF-1"));
    assert_eq!(store.timeline(accepted.id).await.unwrap().len(), 3);
    assert_eq!(
        store.attempts(accepted.id).await.unwrap()[0].http_status,
        Some(202)
    );
    // The ledger survived too.
    assert!(
        store
            .enqueue(submission("bank", "k3"))
            .await
            .unwrap()
            .deduplicated
    );

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("SELECT MAX(version) FROM liaison_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.enqueue(submission("bank", "k")).await.unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO liaison_migrations (version, name, applied_at) VALUES (?1, 'from the future', 0)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaTooNew);
    assert!(err.to_string().contains("upgrade liaison"), "{err}");
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM liaison_submissions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1, "refusing must not touch the data");
}

#[tokio::test]
async fn opening_twice_applies_migrations_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    drop(SqliteStore::open(&path).unwrap());
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    // Each version once, up to this build's (versions given to branches
    // not merged yet leave gaps).
    let (rows, distinct, newest): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT version), MAX(version) FROM liaison_migrations",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(rows, distinct);
    assert_eq!(newest, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn an_unwritable_path_is_a_storage_error() {
    let err = SqliteStore::open("/nonexistent-dir/for/liaison/outbox.db").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver cause is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_past_the_busy_timeout_is_a_retryable_busy_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let store = SqliteStore::open_with(
        &path,
        liaison::store::SqliteConfig::default().busy_timeout(std::time::Duration::from_millis(200)),
    )
    .unwrap();
    let kept = store.enqueue(submission("bank", "before")).await.unwrap();

    // Another process's writer (here: another connection) holds the write
    // lock for longer than the store will wait.
    let host = rusqlite::Connection::open(&path).unwrap();
    host.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store
        .enqueue(submission("bank", "during"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
    assert!(err.is_retryable() && err.is_storage(), "{err:?}");
    host.execute_batch("ROLLBACK").unwrap();

    // Nothing of the refused enqueue was written; the same call now works,
    // and the store is still usable for everything else.
    let listed = store
        .list(&ListFilter::default().partner("bank"))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        [kept.submission.id]
    );
    let retried = store.enqueue(submission("bank", "during")).await.unwrap();
    assert!(!retried.deduplicated);
    assert_eq!(
        store
            .list(&ListFilter::default().partner("bank"))
            .await
            .unwrap()
            .len(),
        2
    );
}
