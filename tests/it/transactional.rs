//! Enqueue inside the host's own transaction.

use liaison::rusqlite::{self, TransactionBehavior};
use liaison::store::{ListFilter, OutboxStore, SqliteStore};

use crate::support::{store, submission};

fn business_rows(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM claims", [], |row| row.get(0))
        .unwrap()
}

fn host(store: &SqliteStore) -> rusqlite::Connection {
    let conn = store.connect().unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS claims (id TEXT PRIMARY KEY, cents INTEGER NOT NULL)",
    )
    .unwrap();
    conn
}

#[tokio::test]
async fn host_commit_keeps_both_rows() {
    let (_dir, store) = store();
    let mut conn = host(&store);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO claims VALUES ('C-1', 12500)", [])
        .unwrap();
    let enqueued = store
        .enqueue_in_transaction(
            &tx,
            submission("clearinghouse", "C-1").correlation("claim_id", "C-1"),
        )
        .unwrap();
    tx.commit().unwrap();

    assert_eq!(business_rows(&conn), 1);
    let stored = store.get(enqueued.submission.id).await.unwrap();
    assert_eq!(stored.idempotency_key, "C-1");
    assert_eq!(store.timeline(stored.id).await.unwrap().len(), 1);
    // Its correlation field was indexed in the host's transaction.
    let found = store
        .list(&ListFilter::default().correlation("claim_id", "C-1"))
        .await
        .unwrap();
    assert_eq!(found, [stored]);
}

#[tokio::test]
async fn host_rollback_keeps_neither() {
    let (_dir, store) = store();
    let mut conn = host(&store);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO claims VALUES ('C-2', 100)", [])
        .unwrap();
    let enqueued = store
        .enqueue_in_transaction(&tx, submission("clearinghouse", "C-2"))
        .unwrap();
    tx.rollback().unwrap();

    assert_eq!(business_rows(&conn), 0);
    assert!(
        store
            .get(enqueued.submission.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
    // The key was rolled back with it: enqueueing it again creates the submission.
    let again = store
        .enqueue(submission("clearinghouse", "C-2"))
        .await
        .unwrap();
    assert!(!again.deduplicated);
}

/// C-3 again with another payload: a conflict once C-3 is stored.
fn c3_changed() -> liaison::NewSubmission {
    liaison::NewSubmission::new(
        "clearinghouse",
        "claim.submit",
        serde_json::json!({"changed": 1}),
    )
    .idempotency_key("C-3")
}

#[tokio::test]
async fn a_failed_enqueue_leaves_the_host_transaction_usable() {
    let (_dir, store) = store();
    store
        .enqueue(submission("clearinghouse", "C-3"))
        .await
        .unwrap();
    let mut conn = host(&store);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO claims VALUES ('C-3', 100)", [])
        .unwrap();
    let conflicting = c3_changed();
    let err = store.enqueue_in_transaction(&tx, conflicting).unwrap_err();
    assert!(err.is_conflict());
    // The host decides: here it commits its own row anyway.
    tx.commit().unwrap();
    assert_eq!(business_rows(&conn), 1);
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_batch_enqueue_leaves_none_of_it_and_the_host_work_stays() {
    let (_dir, store) = store();
    store
        .enqueue(submission("clearinghouse", "C-3"))
        .await
        .unwrap();
    let mut conn = host(&store);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO claims VALUES ('C-6', 100)", [])
        .unwrap();
    let conflicting = c3_changed();
    // The first is new and written before the second conflicts.
    let err = store
        .enqueue_batch_in_transaction(&tx, vec![submission("clearinghouse", "C-6"), conflicting])
        .unwrap_err();
    assert!(err.is_conflict());
    tx.commit().unwrap();
    assert_eq!(business_rows(&conn), 1, "the host's own row stays");
    let stored = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|s| s.idempotency_key.as_str())
            .collect::<Vec<_>>(),
        ["C-3"],
        "nothing of the failed enqueue is kept"
    );
    // Its key is free: the same enqueue, corrected, goes through.
    store
        .enqueue(submission("clearinghouse", "C-6"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_transaction_on_another_database_is_refused() {
    let (_dir, store) = store();
    let (_other_dir, other) = crate::support::store();
    let mut conn = other.connect().unwrap();
    let tx = conn.transaction().unwrap();
    let err = store
        .enqueue_in_transaction(&tx, submission("clearinghouse", "C-4"))
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    drop(tx);
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
    assert!(other.list(&ListFilter::default()).await.unwrap().is_empty());
}
