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
