//! PostgreSQL only: the state counters (migration 0003) are kept by a
//! trigger deferred to commit, so they follow the host's transactions, use
//! the store's own tables whatever the host's search path, and start exact
//! when an existing database is upgraded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use liaison::store::{OutboxStore, PostgresStore, StatsQuery, Totals};
use liaison::{EventKind, SubmissionState};

use super::harness::pg::{Schema, client};
use super::harness::{Settings, Store, drive_to, submission};

fn query(partners: &[&str]) -> StatsQuery {
    StatsQuery::new(Duration::from_secs(3600))
        .at(Utc::now() + chrono::Duration::seconds(1))
        .partners(partners.iter().copied())
}

async fn counts(store: &PostgresStore, partner: &str) -> BTreeMap<SubmissionState, Totals> {
    store
        .stats(&query(&[partner]))
        .await
        .unwrap()
        .remove(0)
        .by_state
}

fn queued(count: u64, value: i64) -> BTreeMap<SubmissionState, Totals> {
    [(SubmissionState::Queued, Totals::of(count, None, value))]
        .into_iter()
        .filter(|(_, t)| t.count > 0)
        .collect()
}

#[tokio::test]
async fn host_transactions_are_counted_when_they_commit_in_the_stores_schema() {
    let Some(ours) = Schema::create().await else {
        return;
    };
    let Some(other) = Schema::create().await else {
        return;
    };
    let store = ours.open(Settings::default()).await;
    let bystander = other.open(Settings::default()).await;
    let mut conn = client(&ours.url).await;
    // The host works in another liaison's schema: our counters must still
    // be the ones kept.
    conn.batch_execute(&format!("SET search_path = {}", other.name))
        .await
        .unwrap();

    let tx = conn.transaction().await.unwrap();
    store
        .enqueue_in_transaction(&tx, submission("bank", "C-1").business_value(700))
        .await
        .unwrap();
    assert_eq!(
        counts(&store, "bank").await,
        queued(0, 0),
        "not before commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(counts(&store, "bank").await, queued(1, 700));
    assert_eq!(counts(&bystander, "bank").await, queued(0, 0));

    // Rolled back, or undone by a failed batch: not counted.
    let tx = conn.transaction().await.unwrap();
    store
        .enqueue_in_transaction(&tx, submission("bank", "C-2").business_value(5))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    let conflicting = liaison::NewSubmission::new("bank", "x", serde_json::json!({"other": 1}))
        .idempotency_key("C-1");
    let err = store
        .enqueue_batch_in_transaction(
            &tx,
            vec![submission("bank", "C-3").business_value(9), conflicting],
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    tx.commit().await.unwrap();
    assert_eq!(counts(&store, "bank").await, queued(1, 700));
    assert_eq!(counts(&bystander, "bank").await, queued(0, 0));
}

#[tokio::test]
async fn an_upgrade_from_version_2_starts_with_exact_counts() {
    use SubmissionState::*;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let store: Store = Arc::new(schema.open(Settings::default()).await);
    let (awaiting, _) = drive_to(&store, "bank", AwaitingResult).await;
    drive_to(&store, "lab", Succeeded).await;
    drive_to(&store, "shop", Queued).await;
    drive_to(&store, "shop2", DeadLettered).await;
    let before = store.stats(&query(&[])).await.unwrap();
    drop(store);

    // Take the database back to version 2, as an older liaison left it.
    let conn = client(&schema.url).await;
    conn.batch_execute(&format!(
        "SET search_path = {};
         DROP INDEX liaison_submissions_unpurged;
         DROP INDEX liaison_callbacks_unpurged;
         DROP INDEX liaison_callbacks_settled;
         DROP TABLE liaison_correlations;
         DROP INDEX liaison_submissions_updated;
         DROP TABLE liaison_alert_notifications;
         DROP TABLE liaison_alert_sink_failures;
         CREATE INDEX liaison_submissions_terminal
             ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL;
         DROP FUNCTION liaison_wake_submission() CASCADE;
         DROP FUNCTION liaison_state_counts_track() CASCADE;
         DROP FUNCTION liaison_state_counts_add(TEXT, TEXT, TEXT, BIGINT, BIGINT);
         DROP TABLE liaison_state_counts;
         ALTER TABLE liaison_submissions DROP COLUMN currency;
         ALTER TABLE liaison_submissions DROP COLUMN business_deadline;
         ALTER TABLE liaison_submissions DROP COLUMN accepted_at;
         DROP INDEX liaison_submissions_partner_terminal;
         DROP INDEX liaison_callbacks_received;
         ALTER TABLE liaison_submissions DROP COLUMN result_document;
         DROP TABLE liaison_deliveries;
         ALTER TABLE liaison_partners DROP COLUMN deliver_results;
         DROP INDEX liaison_submissions_worker_crashed;
         ALTER TABLE liaison_submissions DROP COLUMN lease_expiries;
         DROP TABLE liaison_instances;
         ALTER TABLE liaison_partners DROP COLUMN last_served_at;
         ALTER TABLE liaison_partners DROP COLUMN expected_traffic;
         DROP INDEX liaison_callbacks_quarantine;
         ALTER TABLE liaison_callbacks DROP COLUMN dismissed_by, DROP COLUMN dismissed_at,
             DROP COLUMN dismissed_reason, DROP COLUMN dismissed_from;
         DROP INDEX liaison_submissions_uncleared;
         ALTER TABLE liaison_submissions DROP COLUMN personal_cleared_at;
         DROP INDEX liaison_callbacks_uncleared;
         ALTER TABLE liaison_callbacks DROP COLUMN personal_cleared_at;
         DROP TABLE liaison_secrets;
         DELETE FROM liaison_migrations WHERE version > 2;",
        schema.name
    ))
    .await
    .unwrap();

    let store = schema.open(Settings::default()).await;
    let after = store.stats(&query(&[])).await.unwrap();
    let by_state = |all: &[liaison::store::PartnerStats]| {
        all.iter()
            .map(|p| (p.partner.clone(), p.by_state.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(by_state(&after), by_state(&before));
    // Acceptance times come back from the timeline's `accepted` events.
    let accepted = store
        .timeline(awaiting)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::Accepted)
        .unwrap()
        .at;
    let created = store.get(awaiting).await.unwrap().created_at;
    let bank = after.iter().find(|p| p.partner == "bank").unwrap();
    assert_eq!(
        bank.enqueue_to_accepted_ms,
        [(accepted - created).num_milliseconds()]
    );
    // And the trigger counts from here on, per currency.
    store.enqueue(submission("bank", "new")).await.unwrap();
    store
        .enqueue(submission("bank", "eur").business_value_in(700, "EUR"))
        .await
        .unwrap();
    store
        .enqueue(submission("bank", "usd").business_value_in(5, "USD"))
        .await
        .unwrap();
    let mut queued = Totals::of(3, None, 0);
    queued.value = liaison::Money::default()
        .plus(liaison::Currency::from_code("EUR").ok(), 700)
        .plus(liaison::Currency::from_code("USD").ok(), 5);
    assert_eq!(
        counts(&store, "bank").await,
        [(AwaitingResult, Totals::of(1, None, 0)), (Queued, queued)]
            .into_iter()
            .collect()
    );
}
