//! Migrations on SQLite: a database written by the release before
//! migration checksums (`tests/fixtures/schema-v6.db`) upgrades with its
//! data intact and its checksums recorded; a changed migration is refused.
//! (PostgreSQL: `conformance::postgres_only`.)

use std::path::{Path, PathBuf};

use liaison::callback::{CallbackReport, Correlation, Disposition, ReportedOutcome};
use liaison::ops::alerts::ProblemClass;
use liaison::rusqlite::{self, Connection};
use liaison::store::{
    CallbackFilter, ListFilter, NewCallback, OutboxStore, SCHEMA_VERSION, Settlement, SqliteStore,
};
use liaison::{Actor, ErrorKind, NewSubmission, SubmissionState};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The migrations as released: (version, name).
const RELEASED: [(i64, &str); 6] = [
    (1, "init"),
    (2, "replay_cycles"),
    (3, "health"),
    (4, "alerts"),
    (5, "wakeups"),
    (6, "retention"),
];

/// Every migration of this build: the released ones and those since.
const CURRENT: [(i64, &str); 29] = [
    (1, "init"),
    (2, "replay_cycles"),
    (3, "health"),
    (4, "alerts"),
    (5, "wakeups"),
    (6, "retention"),
    (7, "callback_rows"),
    (8, "results"),
    (9, "deliveries"),
    (10, "lookup"),
    (11, "poison"),
    (12, "silence"),
    (13, "callback_dismissals"),
    (14, "impact"),
    (15, "alert_notifications"),
    (16, "partner_limits"),
    (17, "shared_circuit"),
    (18, "no_hot_rows"),
    (19, "privacy"),
    (20, "ops_journal"),
    (21, "limit_waiters"),
    (22, "one_lease_index"),
    (23, "counts_in_writes"),
    (24, "created_index"),
    (25, "ordering_by_state"),
    (26, "created_index_sqlite"),
    (27, "inserts_count_themselves"),
    (28, "claims_read_from_attempts"),
    (29, "changes_count_themselves"),
];

/// Take migration 14 (impact) back out: its columns and indexes, and the
/// state counters as migration 3 made them (keyed without the currency).
fn undo_impact(conn: &Connection) {
    conn.execute_batch(
        "DROP INDEX liaison_submissions_business_deadline;
         DROP INDEX liaison_submissions_nearest_deadline;
         DROP TRIGGER IF EXISTS liaison_state_counts_insert;
         DROP TRIGGER IF EXISTS liaison_state_counts_update;
         DROP TRIGGER IF EXISTS liaison_state_counts_delete;
         DROP TABLE liaison_state_counts;
         ALTER TABLE liaison_submissions DROP COLUMN business_deadline;
         ALTER TABLE liaison_submissions DROP COLUMN currency;",
    )
    .unwrap();
    let v3 = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite/0003_health.sql"),
    )
    .unwrap();
    let counters = &v3[v3.find("CREATE TABLE liaison_state_counts").unwrap()..];
    conn.execute_batch(counters).unwrap();
}

/// SHA-256 (hex) of `migrations/sqlite/NNNN_name.sql`, read here.
fn file_checksum(version: i64, name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/sqlite")
        .join(format!("{version:04}_{name}.sql"));
    let sql = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::encode(Sha256::digest(sql))
}

/// A copy of the fixture in a temporary directory (the fixture itself is
/// never opened by the store).
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema-v6.db"),
        &path,
    )
    .unwrap();
    (dir, path)
}

/// `liaison_migrations` as (version, name, applied_at, checksum).
fn recorded(conn: &Connection) -> Vec<(i64, String, i64, Option<String>)> {
    let mut stmt = conn
        .prepare(
            "SELECT version, name, applied_at, checksum FROM liaison_migrations ORDER BY version",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn columns(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('liaison_migrations')")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn same_payload(partner: &str, key: &str) -> NewSubmission {
    NewSubmission::new(
        partner,
        "claim.submit",
        json!({ "claim": key, "amount": 12500 }),
    )
    .idempotency_key(key)
}

async fn check_fixture_data(store: &SqliteStore) {
    let all = store.list(&ListFilter::default().limit(100)).await.unwrap();
    let states: Vec<(&str, &str, SubmissionState)> = all
        .iter()
        .map(|s| (s.partner.as_str(), s.idempotency_key.as_str(), s.state))
        .collect();
    assert_eq!(
        states,
        [
            ("clearinghouse", "C-queued", SubmissionState::Queued),
            ("lab", "L-done", SubmissionState::Succeeded),
            ("lab", "L-waiting", SubmissionState::AwaitingResult),
            ("bank", "B-refused", SubmissionState::DeadLettered),
            ("bank", "B-cancelled", SubmissionState::Cancelled),
        ]
    );
    let done = &all[1];
    assert_eq!(done.external_ref.as_deref(), Some("REF-1"));
    assert_eq!(
        done.payload,
        Some(json!({ "claim": "L-done", "amount": 12500 }))
    );
    assert_eq!(all[2].external_ref.as_deref(), Some("REF-2"));
    assert!(!store.timeline(done.id).await.unwrap().is_empty());
    assert_eq!(store.attempts(all[3].id).await.unwrap().len(), 1);

    let callbacks = store
        .list_callbacks(&CallbackFilter::default())
        .await
        .unwrap();
    assert_eq!(callbacks.len(), 2, "{callbacks:?}");
    let applied = callbacks
        .iter()
        .find(|c| c.disposition == Disposition::Applied)
        .expect("the applied callback");
    assert_eq!(applied.submission_id, Some(done.id));
    assert_eq!(applied.event_id.as_deref(), Some("evt-1"));
    assert_eq!(
        applied.body.as_deref(),
        Some(br#"{"ref":"REF-1","status":"ok","event":"evt-1"}"#.as_slice())
    );
    assert!(
        callbacks
            .iter()
            .any(|c| c.disposition == Disposition::Malformed
                && c.body.as_deref() == Some(b"garbled".as_slice()))
    );

    let alerts = store.alerts(false, 10).await.unwrap();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let bank = alerts.iter().find(|a| a.partner == "bank").unwrap();
    assert_eq!(bank.class, ProblemClass::RejectedByPartner);
    assert!(bank.is_open());
    assert_eq!(
        bank.acknowledged_by,
        Some(Actor::person("alice@example.com"))
    );
    let lab = alerts.iter().find(|a| a.partner == "lab").unwrap();
    assert_eq!(lab.class, ProblemClass::PartnerUnavailable);
    assert!(!lab.is_open() && lab.resolved_at.is_some());
}

#[tokio::test]
async fn a_database_of_the_previous_release_upgrades_and_records_checksums() {
    let (_dir, path) = fixture_copy();
    let before = {
        let conn = Connection::open(&path).unwrap();
        // The fixture is what the release wrote: no checksum column.
        assert_eq!(columns(&conn), ["version", "name", "applied_at"]);
        let mut stmt = conn
            .prepare("SELECT version, name, applied_at FROM liaison_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    };
    assert_eq!(
        before
            .iter()
            .map(|(v, n, _)| (*v, n.as_str()))
            .collect::<Vec<_>>(),
        RELEASED
    );

    let store = SqliteStore::open(&path).expect("the previous release's database opens");
    check_fixture_data(&store).await;

    // Every applied migration now has this build's checksum; the rest of
    // each row is as the release recorded it.
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        columns(&conn),
        ["version", "name", "applied_at", "checksum"]
    );
    let after = recorded(&conn);
    let expected: Vec<_> = before
        .iter()
        .map(|(v, n, at)| (*v, n.clone(), *at, Some(file_checksum(*v, n))))
        .collect();
    assert_eq!(after[..expected.len()], expected[..]);
    // And the migrations released since were applied, with their checksums.
    let added: Vec<_> = after[expected.len()..]
        .iter()
        .map(|(v, n, _, sum)| (*v, n.clone(), sum.clone()))
        .collect();
    let since: Vec<_> = CURRENT[RELEASED.len()..]
        .iter()
        .map(|(v, n)| (*v, n.to_string(), Some(file_checksum(*v, n))))
        .collect();
    assert_eq!(added, since);
    let expected = after.clone();
    assert_eq!(SCHEMA_VERSION, 29, "a new migration: extend this test");

    // The store works on the upgraded file: the idempotency ledger still
    // holds its keys, and the submission awaiting a result takes its callback.
    let again = store
        .enqueue(same_payload("clearinghouse", "C-queued"))
        .await
        .unwrap();
    assert!(again.deduplicated);
    let waiting = store
        .list(&ListFilter::default().limit(100))
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.idempotency_key == "L-waiting")
        .unwrap();
    let body = r#"{"ref":"REF-2","status":"ok","event":"evt-2"}"#;
    let cb = store
        .record_callback(
            NewCallback::new("lab", body.as_bytes()).header("content-type", "application/json"),
        )
        .await
        .unwrap();
    let receipt = store
        .settle_callback(
            cb,
            Settlement::Report {
                report: CallbackReport::new(
                    Correlation::ExternalRef("REF-2".into()),
                    ReportedOutcome::Succeeded,
                )
                .event_id("evt-2"),
                unmatched_until: chrono::Utc::now() + chrono::Duration::hours(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(receipt.disposition, Disposition::Applied);
    assert_eq!(
        store.get(waiting.id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    // The release's quarantined callback reads as never dismissed, and can
    // be dismissed now (migration 13).
    let malformed = store
        .list_callbacks(&CallbackFilter::quarantined())
        .await
        .unwrap();
    assert_eq!(malformed.len(), 1);
    assert_eq!(malformed[0].dismissal, None);
    let dismissed = store
        .dismiss_callback(malformed[0].id, Actor::person("ops"), "test message".into())
        .await
        .unwrap();
    assert_eq!(dismissed.disposition, Disposition::Dismissed);
    assert_eq!(
        dismissed.dismissal.map(|d| (d.from, d.reason)),
        Some((Disposition::Malformed, "test message".to_owned()))
    );
    drop(store);

    // Reopening checks the recorded checksums and changes nothing.
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(recorded(&conn), expected);
    assert!(
        store
            .enqueue(same_payload("bank", "B-refused"))
            .await
            .unwrap()
            .deduplicated
    );
}

#[tokio::test]
async fn a_changed_migration_is_refused_and_nothing_is_touched() {
    let (_dir, path) = fixture_copy();
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let tampered = "0".repeat(64);
    conn.execute(
        "UPDATE liaison_migrations SET checksum = ?1 WHERE version = ?2",
        rusqlite::params![tampered, 4],
    )
    .unwrap();
    let before = recorded(&conn);

    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MigrationChanged, "{err}");
    assert!(
        err.to_string()
            .starts_with("migration 4 (alerts) was changed after it was applied"),
        "{err}"
    );
    assert!(err.is_storage() && !err.is_retryable());
    assert_eq!(recorded(&conn), before, "a refused open writes nothing");
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM liaison_submissions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 5);

    // Refused again on the next try; restoring the checksum lets it open.
    assert_eq!(
        SqliteStore::open(&path).unwrap_err().kind(),
        ErrorKind::MigrationChanged
    );
    conn.execute(
        "UPDATE liaison_migrations SET checksum = ?1 WHERE version = ?2",
        rusqlite::params![file_checksum(4, "alerts"), 4],
    )
    .unwrap();
    check_fixture_data(&SqliteStore::open(&path).unwrap()).await;
}

#[tokio::test]
async fn a_renamed_migration_is_refused_even_without_a_checksum() {
    let (_dir, path) = fixture_copy();
    // The release's table, one row renamed: not the migration this build has.
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE liaison_migrations SET name = ?1 WHERE version = ?2",
            rusqlite::params!["health_v2", 3],
        )
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MigrationChanged, "{err}");
    assert!(
        err.to_string().starts_with("migration 3 (health_v2) "),
        "{err}"
    );
    // Rolled back: the column was not even added.
    let conn = Connection::open(&path).unwrap();
    assert_eq!(columns(&conn), ["version", "name", "applied_at"]);
}

#[tokio::test]
async fn a_new_database_records_every_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    drop(SqliteStore::open(&path).unwrap());
    let rows = recorded(&Connection::open(&path).unwrap());
    assert_eq!(rows.len(), CURRENT.len());
    for ((version, name, _, checksum), (v, n)) in rows.iter().zip(CURRENT) {
        assert_eq!((*version, name.as_str()), (v, n));
        assert_eq!(checksum.as_deref(), Some(file_checksum(v, n).as_str()));
    }
}

/// A database at version 9 (before the correlation index) whose
/// submissions carry correlation fields (the fixture's, set by hand as
/// earlier releases stored them, and new ones) upgrades to 10 with every
/// field indexed: the correlation filter finds the old rows.
#[tokio::test]
async fn a_database_before_the_correlation_index_upgrades_and_finds_them() {
    let (_dir, path) = fixture_copy();
    let store = SqliteStore::open(&path).unwrap();
    let fresh = store
        .enqueue(same_payload("lab", "L-new").correlation("order_no", "SO-1"))
        .await
        .unwrap()
        .submission
        .id;
    drop(store);
    // Back to version 9, and correlation fields on two of the release's
    // submissions, as it stored them (a JSON object of strings).
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"DROP INDEX liaison_submissions_created;
           DROP INDEX liaison_submissions_worker_crashed;
           ALTER TABLE liaison_submissions DROP COLUMN lease_expiries;
           DROP TABLE liaison_instances;
           ALTER TABLE liaison_partners DROP COLUMN last_served_at;
           ALTER TABLE liaison_partners DROP COLUMN expected_traffic;
           DROP INDEX liaison_correlations_by_value;
           DROP TABLE liaison_correlations;
           DROP INDEX liaison_submissions_updated;
           DROP INDEX liaison_callbacks_quarantine;
           ALTER TABLE liaison_callbacks DROP COLUMN dismissed_by;
           ALTER TABLE liaison_callbacks DROP COLUMN dismissed_at;
           ALTER TABLE liaison_callbacks DROP COLUMN dismissed_reason;
           ALTER TABLE liaison_callbacks DROP COLUMN dismissed_from;
           DROP TABLE liaison_alert_notifications;
           DROP TABLE liaison_alert_sink_failures;
           DROP INDEX liaison_submissions_partner_leases;
           ALTER TABLE liaison_partners DROP COLUMN rate_tat_us;
           DROP TABLE liaison_roles;
           ALTER TABLE liaison_partners DROP COLUMN circuit_failures;
           ALTER TABLE liaison_partners DROP COLUMN circuit_until;
           ALTER TABLE liaison_partners DROP COLUMN circuit_probe;
           DROP VIEW liaison_state_totals;
           DROP INDEX liaison_submissions_uncleared;
           ALTER TABLE liaison_submissions DROP COLUMN personal_cleared_at;
           DROP INDEX liaison_callbacks_uncleared;
           ALTER TABLE liaison_callbacks DROP COLUMN personal_cleared_at;
           DROP TABLE liaison_secrets;
           DROP TABLE liaison_ops_journal;
           ALTER TABLE liaison_partners DROP COLUMN limit_waiters;
           ALTER TABLE liaison_attempts DROP COLUMN claim_seq;
           CREATE INDEX liaison_submissions_lease
               ON liaison_submissions (lease_expires_at) WHERE state = 'in_flight';
           DELETE FROM liaison_migrations WHERE version > 9;
           UPDATE liaison_submissions SET correlation = '{"order_no":"SO-1","patient":"P-7"}'
               WHERE idempotency_key = 'L-done';
           UPDATE liaison_submissions SET correlation = '{"order_no":"SO-2"}'
               WHERE idempotency_key = 'C-queued';"#,
    )
    .unwrap();
    undo_impact(&conn);
    assert_eq!(recorded(&conn).last().unwrap().0, 9);

    let store = SqliteStore::open(&path).expect("a version 9 database opens");
    assert_eq!(recorded(&conn).last().unwrap().0, SCHEMA_VERSION);
    let keys = |found: Vec<liaison::Submission>| -> Vec<String> {
        found.into_iter().map(|s| s.idempotency_key).collect()
    };
    let order = ListFilter::default().correlation("order_no", "SO-1");
    assert_eq!(keys(store.list(&order).await.unwrap()), ["L-done", "L-new"]);
    let found = store.list(&order.clone().partner("lab")).await.unwrap();
    assert_eq!(found[0].correlation["patient"], "P-7");
    assert_eq!(found[1].id, fresh);
    assert!(
        store
            .list(&order.partner("clearinghouse"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        keys(
            store
                .list(&ListFilter::default().correlation("order_no", "SO-2"))
                .await
                .unwrap()
        ),
        ["C-queued"]
    );
    assert_eq!(
        keys(
            store
                .list(&ListFilter::default().correlation("patient", "P-7"))
                .await
                .unwrap()
        ),
        ["L-done"]
    );
    let indexed: i64 = conn
        .query_row("SELECT COUNT(*) FROM liaison_correlations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(indexed, 4);
    // The lookup by key works on the release's ledger too.
    assert_eq!(
        store.get_by_key("bank", "B-refused").await.unwrap().state,
        SubmissionState::DeadLettered
    );

    // Migration 14 rebuilt the counters from the table: they equal a
    // recount, every value "currency unspecified"; new work is counted by
    // its currency from here on.
    store
        .enqueue(
            NewSubmission::new("lab", "order", json!({"n": 1}))
                .idempotency_key("L-eur")
                .business_value_in(700, "EUR"),
        )
        .await
        .unwrap();
    let stats = store
        .stats(&liaison::store::StatsQuery::new(
            std::time::Duration::from_secs(60),
        ))
        .await
        .unwrap();
    assert!(!stats.is_empty());
    for partner in stats {
        let mut recount: std::collections::BTreeMap<SubmissionState, liaison::store::Totals> =
            Default::default();
        for s in store
            .list(
                &ListFilter::default()
                    .partner(&partner.partner)
                    .limit(10_000),
            )
            .await
            .unwrap()
        {
            recount
                .entry(s.state)
                .or_default()
                .add(&liaison::store::Totals::of(
                    1,
                    s.currency,
                    s.business_value.unwrap_or(0),
                ));
        }
        assert_eq!(partner.by_state, recount, "{}", partner.partner);
    }
    let eur = liaison::Currency::from_code("EUR").ok();
    let lab = store
        .stats(&liaison::store::StatsQuery::new(std::time::Duration::from_secs(60)).partner("lab"))
        .await
        .unwrap();
    assert_eq!(
        lab[0].by_state[&SubmissionState::Queued].value.get(eur),
        700
    );
}
