//! What only SQLite has: one database file that writers in other threads,
//! each with its own runtime, open for themselves. Everything a store
//! promises on any backend lives in `conformance`.

use std::collections::HashSet;

use liaison::store::{ListFilter, OutboxStore, SqliteStore};

use crate::support::{store, submission};

/// One key enqueued at once by tasks sharing a store and by plain threads,
/// each opening the same file under its own runtime: one submission, created
/// by exactly one of them. (`conformance::ledger` covers two instances in
/// one runtime.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_of_one_key_from_threads_on_one_file_create_one_submission() {
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

/// Rows changed outside liaison (or damaged) are reported as corrupt data,
/// never as the caller's bad input: a state that does not parse, and a
/// ledger key whose submission is gone while its retention lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_data_that_does_not_decode_or_fit_is_corrupt_not_bad_input() {
    let (dir, store) = store();
    let damaged = store
        .enqueue(submission("bank", "damaged"))
        .await
        .unwrap()
        .submission
        .id;
    let orphan = store
        .enqueue(submission("bank", "orphan"))
        .await
        .unwrap()
        .submission
        .id;
    let outside = rusqlite::Connection::open(dir.path().join("outbox.db")).unwrap();
    outside
        .execute(
            "UPDATE liaison_submissions SET state = 'no_such_state' WHERE id = ?1",
            [damaged.to_string()],
        )
        .unwrap();
    outside
        .execute(
            "DELETE FROM liaison_submissions WHERE id = ?1",
            [orphan.to_string()],
        )
        .unwrap();
    let err = store.get(damaged).await.unwrap_err();
    assert!(err.is_corrupt() && !err.is_invalid_input(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    let err = store
        .enqueue(submission("bank", "orphan"))
        .await
        .unwrap_err();
    assert!(err.is_corrupt(), "{err:?}");
    assert!(err.to_string().contains(&orphan.to_string()), "{err}");
}

/// The mode bits of `path`.
#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn a_database_liaison_creates_and_its_wal_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let store = SqliteStore::open(&path).unwrap();
    for i in 0..3 {
        store
            .enqueue(submission("lab", &format!("k{i}")))
            .await
            .unwrap();
    }
    let side = |suffix: &str| {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    // While the store is open, after writes: the WAL and shared memory exist.
    for file in [path.clone(), side("-wal"), side("-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);
    assert_eq!(mode(&path), 0o600);
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_database_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    std::fs::File::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::open(&path).unwrap();
    store.enqueue(submission("lab", "k")).await.unwrap();
    assert_eq!(mode(&path), 0o640);
    drop(store);
    assert_eq!(mode(&path), 0o640);
}

/// A submission's correlation rows go with it: whatever deletes a
/// submission row with foreign keys enforced (the store's connections
/// enforce them) deletes its rows in `liaison_correlations` too.
#[tokio::test]
async fn deleting_a_submission_deletes_its_correlation_rows() {
    let (dir, store) = store();
    let gone = store
        .enqueue(submission("bank", "gone").correlation("claim_id", "C-1"))
        .await
        .unwrap()
        .submission
        .id;
    let kept = store
        .enqueue(submission("bank", "kept").correlation("claim_id", "C-1"))
        .await
        .unwrap()
        .submission
        .id;
    let outside = rusqlite::Connection::open(dir.path().join("outbox.db")).unwrap();
    outside.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let rows = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row("SELECT COUNT(*) FROM liaison_correlations", [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert_eq!(rows(&outside), 2);
    outside
        .execute(
            "DELETE FROM liaison_submissions WHERE id = ?1",
            [gone.to_string()],
        )
        .unwrap();
    assert_eq!(rows(&outside), 1);
    let found = store
        .list(&ListFilter::default().correlation("claim_id", "C-1"))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), [kept]);
}
