//! PostgreSQL only: the state counters (migration 0003, kept as deltas
//! folded later since 0018) follow the host's transactions, use the store's
//! own tables whatever the host's search path, start exact when an existing
//! database is upgraded, and no transaction waits for another over them.

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
         DROP INDEX liaison_submissions_created;
         DROP INDEX liaison_submissions_unpurged;
         DROP INDEX liaison_callbacks_unpurged;
         DROP INDEX liaison_callbacks_settled;
         DROP INDEX liaison_correlations_by_value;
         DROP TABLE liaison_correlations;
         DROP INDEX liaison_submissions_updated;
         DROP TABLE liaison_alert_notifications;
         DROP TABLE liaison_alert_sink_failures;
         DROP INDEX liaison_submissions_partner_leases;
         ALTER TABLE liaison_partners DROP COLUMN rate_tat_us;
         DROP TABLE liaison_roles;
         ALTER TABLE liaison_partners DROP COLUMN circuit_failures,
             DROP COLUMN circuit_until, DROP COLUMN circuit_probe;
         CREATE INDEX liaison_submissions_terminal
             ON liaison_submissions (terminal_at) WHERE terminal_at IS NOT NULL;
         DROP FUNCTION liaison_wake_submission() CASCADE;
         DROP VIEW liaison_state_totals;
         DROP TRIGGER liaison_state_deltas_insert ON liaison_submissions;
         DROP TRIGGER liaison_state_deltas_update ON liaison_submissions;
         DROP TRIGGER liaison_state_deltas_delete ON liaison_submissions;
         DROP FUNCTION liaison_state_deltas_insert();
         DROP FUNCTION liaison_state_deltas_update();
         DROP FUNCTION liaison_state_deltas_delete();
         DROP FUNCTION liaison_state_counts_fold();
         DROP TABLE liaison_state_deltas;
         DROP TABLE liaison_state_counts;
         ALTER TABLE liaison_attempts DROP COLUMN claim_seq;
         ALTER TABLE liaison_submissions DROP COLUMN counted;
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
         DROP TABLE liaison_ops_journal;
         ALTER TABLE liaison_partners DROP COLUMN limit_waiters;
         CREATE INDEX liaison_submissions_lease
             ON liaison_submissions (lease_expires_at) WHERE state = 'in_flight';
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

/// No counter row is shared between transactions: a host transaction that
/// enqueued for a partner and checked its deferred constraints (which
/// took the partner's counter lock until migration 0018) and stays open
/// holds no other enqueue of that partner back.
#[tokio::test]
async fn an_open_transaction_holds_no_other_enqueue_of_its_partner_back() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let config = schema
        .config(Settings::default())
        .lock_timeout(Duration::from_millis(300));
    let store = PostgresStore::connect(&schema.url, config).await.unwrap();
    let mut conn = client(&schema.url).await;
    let tx = conn.transaction().await.unwrap();
    store
        .enqueue_in_transaction(&tx, submission("bank", "held-open").business_value(3))
        .await
        .unwrap();
    tx.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
        .await
        .unwrap();
    // Meanwhile the same partner's work goes on: enqueue, claim, complete.
    store
        .enqueue(submission("bank", "other").business_value(4))
        .await
        .expect("not held back by the open transaction");
    assert_eq!(counts(&store, "bank").await, queued(1, 4));
    tx.commit().await.unwrap();
    assert_eq!(counts(&store, "bank").await, queued(2, 7));
}

/// Statements append deltas; a health read folds them into the counts and
/// reads the same totals before and after the fold.
#[tokio::test]
async fn deltas_are_folded_and_the_totals_are_exact_either_way() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let store = schema.open(Settings::default()).await;
    let batch = (0..5)
        .map(|i| submission("bank", &format!("k{i}")).business_value(10))
        .collect();
    store.enqueue_batch(batch).await.unwrap();
    store.enqueue(submission("lab", "x")).await.unwrap();
    let conn = client(&schema.url).await;
    let s = &schema.name;
    let deltas = || async {
        conn.query_one(
            &format!("SELECT COUNT(*) FROM {s}.liaison_state_deltas"),
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    let totals = || async {
        conn.query(
            &format!("SELECT partner, state, n, value FROM {s}.liaison_state_totals ORDER BY 1, 2"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect::<Vec<(String, String, i64, i64)>>()
    };
    // One delta row per statement and (partner, state, currency), not
    // folded yet: the batch of five is one.
    assert_eq!(deltas().await, 2);
    let before = totals().await;
    assert_eq!(
        before,
        [
            ("bank".to_string(), "queued".to_string(), 5, 50),
            ("lab".to_string(), "queued".to_string(), 1, 0)
        ]
    );
    assert_eq!(counts(&store, "bank").await, queued(5, 50));
    assert_eq!(deltas().await, 0, "the health read folded them");
    assert_eq!(totals().await, before);
}

/// The store's inserts count their rows themselves, each once, by whichever
/// of its three statements they take (one enqueue, a run of a batch, one
/// item of a batch); a row inserted without the `counted` mark, as an
/// instance of an earlier build still running against this schema inserts
/// it, is counted by the schema's trigger (migration 0027).
#[tokio::test]
async fn every_insert_is_counted_once_whether_the_store_or_an_earlier_build_made_it() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let store = schema.open(Settings::default()).await;
    store
        .enqueue(submission("bank", "O-1").business_value(1))
        .await
        .unwrap();
    store
        .enqueue_batch(vec![
            submission("bank", "O-2").business_value(10),
            submission("bank", "O-3").business_value(100),
        ])
        .await
        .unwrap();
    // A key repeated within a batch: each item around it is a run of one.
    let repeated = store
        .enqueue_batch(vec![
            submission("bank", "O-4").business_value(1_000),
            submission("bank", "O-4").business_value(1_000),
            submission("bank", "O-5").business_value(10_000),
        ])
        .await
        .unwrap();
    assert!(repeated[1].deduplicated);
    let conn = client(&schema.url).await;
    let s = &schema.name;
    let earlier_build = |key: &'static str| {
        format!(
            "INSERT INTO {s}.liaison_submissions (id, partner, kind, payload, fingerprint, \
                 idempotency_key, state, business_value, due_at, created_at, updated_at, \
                 cycle_started_at) \
             VALUES (gen_random_uuid(), 'bank', 'claim.submit', '{{}}', 'f', '{key}', 'queued', \
                 100000, 1, 1, 1, 1)"
        )
    };
    conn.batch_execute(&format!(
        "{}; {}",
        earlier_build("O-6"),
        earlier_build("O-7")
    ))
    .await
    .unwrap();
    assert_eq!(counts(&store, "bank").await, queued(7, 211_111));
    let table: (i64, i64) = conn
        .query_one(
            &format!(
                "SELECT COUNT(*), SUM(business_value)::BIGINT FROM {s}.liaison_submissions \
                 WHERE partner = 'bank' AND state = 'queued'"
            ),
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(table, (7, 211_111));
}

/// The store's state changes count themselves, each once, by whichever of
/// its three statements makes them (a claim, one result, a batch of
/// results); a change made without flipping `counted`, as an instance of an
/// earlier build or a host's own SQL makes it, is counted by the schema's
/// trigger, and an update that changes no counted column counts nothing
/// (migration 0029).
#[tokio::test]
async fn every_state_change_is_counted_once_whether_the_store_or_another_made_it() {
    use liaison::AttemptOutcome;
    use liaison::store::{AttemptReport, ClaimRequest, FinishedAttempt, StateChange};

    let Some(schema) = Schema::create().await else {
        return;
    };
    let store = schema.open(Settings::default()).await;
    let batch = (0..7)
        .map(|i| submission("bank", &format!("M-{i}")).business_value(10_i64.pow(i)))
        .collect();
    store.enqueue_batch(batch).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("bank", 4, Duration::from_secs(60)).at(Utc::now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 4);
    // One result alone, two in one batch; the fourth stays in flight.
    let done = |lease: &liaison::store::Lease, outcome, to| {
        FinishedAttempt::new(
            lease.clone(),
            AttemptReport::new(outcome),
            StateChange::to(to),
        )
    };
    let one = done(
        &leases[0],
        AttemptOutcome::Succeeded,
        SubmissionState::Succeeded,
    );
    store
        .complete(&one.lease, one.report, one.change)
        .await
        .unwrap();
    let answers = store
        .complete_batch(vec![
            done(
                &leases[1],
                AttemptOutcome::Succeeded,
                SubmissionState::Succeeded,
            ),
            done(&leases[2], AttemptOutcome::Failed, SubmissionState::Failed),
        ])
        .await
        .unwrap();
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // What another writer does: two queued rows cancelled in one statement,
    // and a change of no counted column.
    let conn = client(&schema.url).await;
    let s = &schema.name;
    conn.batch_execute(&format!(
        "UPDATE {s}.liaison_submissions SET state = 'cancelled', updated_at = 2 \
             WHERE idempotency_key IN ('M-4', 'M-5'); \
         UPDATE {s}.liaison_submissions SET last_error = 'noted' WHERE idempotency_key = 'M-6'"
    ))
    .await
    .unwrap();

    let table: BTreeMap<SubmissionState, Totals> = conn
        .query(
            &format!(
                "SELECT state, COUNT(*), SUM(business_value)::BIGINT FROM {s}.liaison_submissions \
                 WHERE partner = 'bank' GROUP BY state"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let state: String = row.get(0);
            let count: i64 = row.get(1);
            let value: i64 = row.get(2);
            (
                state.parse().unwrap(),
                Totals::of(count as u64, None, value),
            )
        })
        .collect();
    let expected: BTreeMap<SubmissionState, Totals> = [
        (SubmissionState::Succeeded, Totals::of(2, None, 11)),
        (SubmissionState::Failed, Totals::of(1, None, 100)),
        (SubmissionState::InFlight, Totals::of(1, None, 1_000)),
        (SubmissionState::Cancelled, Totals::of(2, None, 110_000)),
        (SubmissionState::Queued, Totals::of(1, None, 1_000_000)),
    ]
    .into_iter()
    .collect();
    assert_eq!(table, expected, "the table as the steps above left it");
    assert_eq!(counts(&store, "bank").await, expected);
}
