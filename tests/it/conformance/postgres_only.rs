//! What only the PostgreSQL store has: enqueue inside the host's own
//! transaction, migrations under a lock, schema versions, settings and error
//! classes.

use std::time::Duration;

use liaison::store::{
    ClaimRequest, ListFilter, OutboxStore, PartnerLimits, PostgresConfig, PostgresStore,
    PostgresTls, Rate, StateChange,
};
use liaison::{ErrorKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::harness::pg::{Schema, client};
use super::harness::{Settings, submission};

async fn schema() -> Option<Schema> {
    Schema::create().await
}

async fn host(schema: &Schema) -> tokio_postgres::Client {
    let client = client(&schema.url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {}.claims (id TEXT PRIMARY KEY, cents BIGINT NOT NULL)",
            schema.name
        ))
        .await
        .unwrap();
    client
}

async fn business_rows(client: &tokio_postgres::Client, schema: &Schema) -> i64 {
    client
        .query_one(&format!("SELECT COUNT(*) FROM {}.claims", schema.name), &[])
        .await
        .unwrap()
        .get(0)
}

async fn search_path(c: &tokio_postgres::Client) -> String {
    c.query_one("SHOW search_path", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn enqueue_in_the_host_transaction_commits_with_it() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    let mut conn = host(&schema).await;
    let host_path = search_path(&conn).await;

    let tx = conn.transaction().await.unwrap();
    tx.execute(
        &format!("INSERT INTO {}.claims VALUES ('C-1', 12500)", schema.name),
        &[],
    )
    .await
    .unwrap();
    let enqueued = store
        .enqueue_in_transaction(
            &tx,
            submission("clearinghouse", "C-1").correlation("claim_id", "C-1"),
        )
        .await
        .unwrap();
    // The host's own search path is as it was, inside its transaction too.
    assert_eq!(search_path(tx.client()).await, host_path);
    // Not visible to the store before the host commits.
    assert!(
        store
            .get(enqueued.submission.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    tx.commit().await.unwrap();

    assert_eq!(business_rows(&conn, &schema).await, 1);
    let stored = store.get(enqueued.submission.id).await.unwrap();
    assert_eq!(stored, enqueued.submission);
    assert_eq!(store.timeline(stored.id).await.unwrap().len(), 1);
    // Its correlation field was indexed in the host's transaction, in the
    // store's schema.
    let found = store
        .list(&ListFilter::default().correlation("claim_id", "C-1"))
        .await
        .unwrap();
    assert_eq!(found, [stored]);
}

#[tokio::test]
async fn a_host_rollback_keeps_neither() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    let mut conn = host(&schema).await;
    let tx = conn.transaction().await.unwrap();
    tx.execute(
        &format!("INSERT INTO {}.claims VALUES ('C-2', 100)", schema.name),
        &[],
    )
    .await
    .unwrap();
    let enqueued = store
        .enqueue_batch_in_transaction(
            &tx,
            vec![submission("clearinghouse", "C-2"), submission("lab", "C-2")],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(business_rows(&conn, &schema).await, 0);
    assert!(
        store
            .get(enqueued[0].submission.id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(store.list(&ListFilter::default()).await.unwrap().is_empty());
    assert!(
        !store
            .enqueue(submission("clearinghouse", "C-2"))
            .await
            .unwrap()
            .deduplicated
    );
}

#[tokio::test]
async fn a_failed_enqueue_leaves_the_host_transaction_usable() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    store
        .enqueue(submission("clearinghouse", "C-3"))
        .await
        .unwrap();
    let mut conn = host(&schema).await;
    let tx = conn.transaction().await.unwrap();
    tx.execute(
        &format!("INSERT INTO {}.claims VALUES ('C-3', 100)", schema.name),
        &[],
    )
    .await
    .unwrap();
    let conflicting = NewSubmission::new("clearinghouse", "claim.submit", json!({"changed": 1}))
        .idempotency_key("C-3");
    let err = store
        .enqueue_in_transaction(&tx, conflicting)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    // Partly written batches are undone too, and the host still commits.
    let err = store
        .enqueue_batch_in_transaction(
            &tx,
            vec![
                submission("clearinghouse", "C-4"),
                NewSubmission::new("clearinghouse", "x", json!({"changed": 2}))
                    .idempotency_key("C-3"),
            ],
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    tx.commit().await.unwrap();
    assert_eq!(business_rows(&conn, &schema).await, 1);
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_untouched() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    store.enqueue(submission("bank", "k")).await.unwrap();
    let conn = client(&schema.url).await;
    let table = format!("{}.liaison_migrations", schema.name);
    let version: i64 = conn
        .query_one(&format!("SELECT MAX(version) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    // The PostgreSQL migrations so far: 0001_init, 0002_replay_cycles,
    // 0003_health, 0004_alerts, 0005_wakeups, 0006_retention,
    // 0007_callback_rows, 0008_results, 0009_deliveries, 0010_lookup,
    // 0011_poison, 0012_silence, 0013_callback_dismissals, 0014_impact,
    // ... 0017_shared_circuit, 0018_no_hot_rows, 0019_privacy, 0020_ops_journal,
    // 0021_limit_waiters, 0022_one_lease_index, 0023_counts_in_writes,
    // 0024_created_index, 0025_ordering_by_state, 0026_created_index
    // (SQLite's; nothing here), 0027_inserts_count_themselves,
    // 0028_claims_read_from_attempts, 0029_changes_count_themselves.
    assert_eq!(version, 29);
    conn.execute(
        &format!("INSERT INTO {table} (version, name, applied_at) VALUES ($1, 'future', 0)"),
        &[&(version + 1)],
    )
    .await
    .unwrap();
    let err = PostgresStore::connect(&schema.url, schema.config(Settings::default()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaTooNew);
    assert!(err.to_string().contains("upgrade liaison"), "{err}");
    let count: i64 = conn
        .query_one(
            &format!("SELECT COUNT(*) FROM {}.liaison_submissions", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_migrate_once() {
    let Some(url) = super::harness::pg::url() else {
        return;
    };
    let schema = Schema {
        url,
        name: format!("liaison_t_{}", uuid::Uuid::new_v4().simple()),
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let config = schema.config(Settings::default());
        let url = schema.url.clone();
        tasks.push(tokio::spawn(async move {
            PostgresStore::connect(&url, config).await
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("every instance starts"));
    }
    let conn = client(&schema.url).await;
    let rows: Vec<(i64, String)> = conn
        .query(
            &format!(
                "SELECT version, name FROM {}.liaison_migrations ORDER BY version",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [
            (1, "init".to_string()),
            (2, "replay_cycles".to_string()),
            (3, "health".to_string()),
            (4, "alerts".to_string()),
            (5, "wakeups".to_string()),
            (6, "retention".to_string()),
            (7, "callback_rows".to_string()),
            (8, "results".to_string()),
            (9, "deliveries".to_string()),
            (10, "lookup".to_string()),
            (11, "poison".to_string()),
            (12, "silence".to_string()),
            (13, "callback_dismissals".to_string()),
            (14, "impact".to_string()),
            (15, "alert_notifications".to_string()),
            (16, "partner_limits".to_string()),
            (17, "shared_circuit".to_string()),
            (18, "no_hot_rows".to_string()),
            (19, "privacy".to_string()),
            (20, "ops_journal".to_string()),
            (21, "limit_waiters".to_string()),
            (22, "one_lease_index".to_string()),
            (23, "counts_in_writes".to_string()),
            (24, "created_index".to_string()),
            (25, "ordering_by_state".to_string()),
            (26, "created_index_sqlite".to_string()),
            (27, "inserts_count_themselves".to_string()),
            (28, "claims_read_from_attempts".to_string()),
            (29, "changes_count_themselves".to_string()),
        ]
    );
    stores[0].enqueue(submission("bank", "k")).await.unwrap();
    assert!(
        stores[5]
            .enqueue(submission("bank", "k"))
            .await
            .unwrap()
            .deduplicated
    );
}

#[tokio::test]
async fn bad_settings_and_unreachable_servers_are_clear_errors() {
    for (config, field) in [
        (PostgresConfig::default().schema("Has-Caps"), "schema"),
        (
            PostgresConfig::default().schema("x; DROP TABLE y"),
            "schema",
        ),
        (PostgresConfig::default().pool_size(0), "pool_size"),
        (
            PostgresConfig::default().max_payload_bytes(0),
            "max_payload_bytes",
        ),
    ] {
        match PostgresStore::connect("postgres://localhost/x", config).await {
            Err(liaison::Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let err = PostgresStore::connect("postgres://u@host:notaport/db", PostgresConfig::default())
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    // Nothing listens on port 1; the password never shows in the error.
    let err = PostgresStore::connect(
        "postgres://u:s3cret@127.0.0.1:1/db",
        PostgresConfig::default().acquire_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    // Refused: the server may come up; the same call may succeed later.
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_storage() && err.is_retryable(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver cause is kept"
    );
    assert!(!format!("{err:?} {err}").contains("s3cret"));
}

/// A connection of the host's holding submission `id`'s row in an open
/// transaction (end it with `ROLLBACK`).
async fn hold_row(schema: &Schema, id: liaison::SubmissionId) -> tokio_postgres::Client {
    let holder = client(&schema.url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute(
            &format!(
                "SELECT 1 FROM {}.liaison_submissions WHERE id = $1 FOR UPDATE",
                schema.name
            ),
            &[id.as_uuid()],
        )
        .await
        .unwrap();
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_too_long_is_busy_and_retryable() {
    let Some(schema) = schema().await else { return };
    let store = PostgresStore::connect(
        &schema.url,
        schema
            .config(Settings::default())
            .lock_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let id = store
        .enqueue(submission("bank", "k"))
        .await
        .unwrap()
        .submission
        .id;
    let holder = hold_row(&schema, id).await;
    let err = store
        .transition(id, StateChange::to(SubmissionState::Cancelled))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
    assert!(err.is_retryable());
    holder.batch_execute("ROLLBACK").await.unwrap();
    let s = store
        .transition(id, StateChange::to(SubmissionState::Cancelled))
        .await
        .unwrap();
    assert_eq!(s.state, SubmissionState::Cancelled);
    let debug = format!("{store:?}");
    assert!(debug.contains(&schema.name), "{debug}");
    let _: &dyn OutboxStore = &store;
}

/// A store of one connection whose backend this test can find among the
/// others' by its application name (returned).
async fn named_store(schema: &Schema, prefix: &str) -> (PostgresStore, String) {
    let app = format!("{prefix}{}", &schema.name[10..]);
    let separator = if schema.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}application_name={app}", schema.url);
    let store = PostgresStore::connect(&url, schema.config(Settings::default()).pool_size(1))
        .await
        .unwrap();
    (store, app)
}

/// Terminate the backends named `app` once one waits on a lock (as a
/// server restart or an operator would); how many were terminated (0 if
/// none waited within five seconds).
async fn kill_lock_waiter(schema: &Schema, app: &str) -> i64 {
    let admin = client(&schema.url).await;
    for _ in 0..500 {
        let killed: i64 = admin
            .query_one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        if killed > 0 {
            return killed;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    0
}

/// A connection that dies under an operation (server restart, network,
/// an operator's `pg_terminate_backend`) is `Unavailable` and retryable;
/// nothing of the operation stayed, and the retry, on a new connection,
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_operation_is_unavailable_and_retryable() {
    let Some(schema) = schema().await else { return };
    // Named, so this test finds its own backend among the others'.
    let (store, app) = named_store(&schema, "liaison_lost_").await;
    let id = store
        .enqueue(submission("bank", "k"))
        .await
        .unwrap()
        .submission
        .id;
    // Hold the row, so the store's transition waits on it mid-transaction.
    let holder = hold_row(&schema, id).await;
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .transition(id, StateChange::to(SubmissionState::Cancelled))
                .await
        })
    };
    assert_eq!(
        kill_lock_waiter(&schema, &app).await,
        1,
        "the store's transition never waited on the lock"
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_retryable() && err.is_storage(), "{err:?}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the driver cause is kept"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    // Nothing of it stayed; the retry gets a new connection and works.
    assert_eq!(store.get(id).await.unwrap().state, SubmissionState::Queued);
    let s = store
        .transition(id, StateChange::to(SubmissionState::Cancelled))
        .await
        .unwrap();
    assert_eq!(s.state, SubmissionState::Cancelled);
}

/// Another client holds the partner's row (an operator's long transaction,
/// another instance's claim stuck mid-transaction): a limited claim waits
/// for it at most `lock_timeout`.
async fn hold_partner(schema: &Schema, partner: &str) -> tokio_postgres::Client {
    let holder = client(&schema.url).await;
    holder.batch_execute("BEGIN").await.unwrap();
    let held = holder
        .execute(
            &format!(
                "SELECT 1 FROM {}.liaison_partners WHERE partner = $1 FOR UPDATE",
                schema.name
            ),
            &[&partner],
        )
        .await
        .unwrap();
    assert_eq!(held, 1, "the partner's row exists");
    holder
}

fn limited_claim(store: &impl OutboxStore, n: usize) -> ClaimRequest {
    ClaimRequest::new("bank", n, Duration::from_secs(30))
        .at(store.now())
        .limits(
            PartnerLimits::none()
                .concurrency(4)
                .rate(Rate::per_second(1000).unwrap()),
        )
        .claimer("instance-a", 0)
}

/// What a claim leaves behind: submissions in flight, attempts started,
/// and the partner row's rate and waiters.
async fn claim_traces(schema: &Schema) -> (i64, i64, Option<i64>, Option<String>) {
    let c = client(&schema.url).await;
    let in_flight: i64 = c
        .query_one(
            &format!(
                "SELECT COUNT(*) FROM {}.liaison_submissions WHERE state = 'in_flight'",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let attempts: i64 = c
        .query_one(
            &format!("SELECT COUNT(*) FROM {}.liaison_attempts", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let row = c
        .query_one(
            &format!(
                "SELECT rate_tat_us, limit_waiters FROM {}.liaison_partners WHERE partner = 'bank'",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    (in_flight, attempts, row.get(0), row.get(1))
}

/// A claim that cannot lock the partner's row within `lock_timeout` is
/// `Busy` and retryable, and takes nothing: no lease, no attempt, no rate
/// spent. Once the row is free the same claim works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_behind_a_held_partner_row_is_busy_and_takes_nothing() {
    let Some(schema) = schema().await else { return };
    let store = PostgresStore::connect(
        &schema.url,
        schema
            .config(Settings::default())
            .lock_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    for key in ["k1", "k2", "k3"] {
        store.enqueue(submission("bank", key)).await.unwrap();
    }
    // A first claim creates the partner's row and spends some rate.
    let first = store.claim_limited(limited_claim(&store, 1)).await.unwrap();
    assert_eq!(first.leases.len(), 1);
    let before = claim_traces(&schema).await;

    let holder = hold_partner(&schema, "bank").await;
    let err = store
        .claim_limited(limited_claim(&store, 2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
    assert!(err.is_retryable() && err.is_storage(), "{err:?}");
    assert_eq!(claim_traces(&schema).await, before, "nothing was taken");

    holder.batch_execute("ROLLBACK").await.unwrap();
    let again = store.claim_limited(limited_claim(&store, 2)).await.unwrap();
    assert_eq!(again.leases.len(), 2);
    let after = claim_traces(&schema).await;
    assert_eq!((after.0, after.1), (3, 3));
    assert!(
        after.2 > before.2,
        "the rate is spent by the claim that took"
    );
}

/// The connection dies while a claim waits for the partner's row (server
/// restart, network, `pg_terminate_backend`): the claim is `Unavailable`
/// and retryable, nothing of it stayed, and the retry on a new connection
/// takes the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_a_claim_leaves_nothing_and_the_retry_works() {
    let Some(schema) = schema().await else { return };
    let (store, app) = named_store(&schema, "liaison_claim_").await;
    for key in ["k1", "k2"] {
        store.enqueue(submission("bank", key)).await.unwrap();
    }
    // The partner's row exists, and one is in flight.
    let first = store.claim_limited(limited_claim(&store, 1)).await.unwrap();
    assert_eq!(first.leases.len(), 1);
    let before = claim_traces(&schema).await;

    let holder = hold_partner(&schema, "bank").await;
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move { store.claim_limited(limited_claim(&store, 4)).await })
    };
    assert_eq!(
        kill_lock_waiter(&schema, &app).await,
        1,
        "the claim never waited on the partner's row"
    );
    let err = waiting.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(claim_traces(&schema).await, before, "nothing of it stayed");

    let again = store.claim_limited(limited_claim(&store, 4)).await.unwrap();
    assert_eq!(again.leases.len(), 1, "the one left");
    assert_eq!(claim_traces(&schema).await.0, 2);
}

/// The local server's TLS setup, if it has one we can check against: the
/// key=value connection string for `localhost` (the name its certificate
/// carries) with `sslmode=require`, and the CA to trust. Debian's default
/// cluster serves its "snakeoil" certificate for `localhost`.
async fn tls_setup(schema: &Schema) -> Option<(String, Vec<u8>)> {
    const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let ssl: String = client(&schema.url)
        .await
        .query_one("SHOW ssl", &[])
        .await
        .unwrap()
        .get(0);
    let Ok(pem) = std::fs::read(SNAKEOIL) else {
        eprintln!("skipping TLS: {SNAKEOIL} not found");
        return None;
    };
    if ssl != "on" {
        eprintln!("skipping TLS: the server has ssl off");
        return None;
    }
    let url: tokio_postgres::Config = schema.url.parse().unwrap();
    let port = url.get_ports().first().copied().unwrap_or(5432);
    let user = url.get_user().unwrap_or("postgres");
    let db = url.get_dbname().unwrap_or("postgres");
    let conn = format!("host=localhost port={port} user={user} dbname={db} sslmode=require");
    Some((conn, pem))
}

#[tokio::test]
async fn tls_verified_against_a_trusted_ca_carries_the_store() {
    let Some(schema) = schema().await else { return };
    let Some((conn, ca)) = tls_setup(&schema).await else {
        return;
    };
    let store = PostgresStore::connect(
        &conn,
        schema
            .config(Settings::default())
            .tls(PostgresTls::RootsPem(ca)),
    )
    .await
    .expect("TLS connect");
    let enqueued = store.enqueue(submission("bank", "tls-1")).await.unwrap();
    assert_eq!(
        store
            .get(enqueued.submission.id)
            .await
            .unwrap()
            .idempotency_key,
        "tls-1"
    );
    // The listening connection is encrypted too.
    let _wakeups = store.wakeups().expect("wake-ups");
    let observer = client(&schema.url).await;
    let app = format!("liaison-listen:{}", schema.name);
    let mut encrypted = None;
    for _ in 0..200 {
        let rows = observer
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
                 WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            encrypted = Some(row.get::<_, bool>(0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(encrypted, Some(true), "the LISTEN connection uses TLS");
}

#[tokio::test]
async fn tls_refuses_a_server_it_cannot_verify_and_plain_refuses_require() {
    let Some(schema) = schema().await else { return };
    let Some((conn, _)) = tls_setup(&schema).await else {
        return;
    };
    // Trust one public root CA only: not the one that signed the server.
    let Ok(bundle) = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt") else {
        eprintln!("skipping TLS: no CA bundle at /etc/ssl/certs/ca-certificates.crt");
        return;
    };
    let end = "-----END CERTIFICATE-----";
    let first = &bundle[..bundle.find(end).expect("a certificate") + end.len()];
    let config = schema
        .config(Settings::default())
        .tls(PostgresTls::RootsPem(first.as_bytes().to_vec()))
        .acquire_timeout(Duration::from_secs(5));
    let err = PostgresStore::connect(&conn, config).await.unwrap_err();
    assert!(err.is_storage(), "{err:?}");
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "names the certificate problem: {err:?}"
    );
    // sslmode=require without TLS configured does not fall back to plain.
    let config = schema
        .config(Settings::default())
        .acquire_timeout(Duration::from_secs(5));
    let err = PostgresStore::connect(&conn, config).await.unwrap_err();
    assert!(err.is_storage(), "{err:?}");
    // A CA bundle that holds no certificate is a configuration error.
    let err = PostgresStore::connect(
        &conn,
        schema
            .config(Settings::default())
            .tls(PostgresTls::RootsPem(b"no pem here".to_vec())),
    )
    .await
    .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
}

/// The migrations as released before checksums: (version, name).
const RELEASED: [(i64, &str); 6] = [
    (1, "init"),
    (2, "replay_cycles"),
    (3, "health"),
    (4, "alerts"),
    (5, "wakeups"),
    (6, "retention"),
];

/// `migrations/postgres/NNNN_name.sql`, read here.
fn postgres_migration(version: i64, name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/postgres")
        .join(format!("{version:04}_{name}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// When the release recorded its migrations (milliseconds).
const RELEASE_APPLIED_AT: i64 = 1_750_000_000_000;

/// A schema as the release before migration checksums left it: the six
/// migration files run in order, `liaison_migrations` without a checksum
/// column, and two submissions (one queued, one succeeded) with their
/// idempotency keys, written by hand. Returns the schema (dropped with it)
/// and the submissions' ids.
async fn release_v6_schema() -> Option<(Schema, [uuid::Uuid; 2])> {
    let url = super::harness::pg::url()?;
    let schema = Schema {
        url,
        name: format!("liaison_t_{}", uuid::Uuid::new_v4().simple()),
    };
    let conn = client(&schema.url).await;
    conn.batch_execute(&format!(
        "CREATE SCHEMA {0}; SET search_path = {0};
         CREATE TABLE liaison_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT   NOT NULL,
             applied_at BIGINT NOT NULL
         )",
        schema.name
    ))
    .await
    .unwrap();
    for (version, name) in RELEASED {
        conn.batch_execute(&postgres_migration(version, name))
            .await
            .unwrap_or_else(|e| panic!("migration {version}: {e}"));
        conn.execute(
            "INSERT INTO liaison_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, &name, &RELEASE_APPLIED_AT],
        )
        .await
        .unwrap();
    }
    let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    let now = chrono::Utc::now().timestamp_millis();
    for (id, key, state, terminal_at) in [
        (ids[0], "P-1", "queued", None),
        (ids[1], "P-2", "succeeded", Some(now)),
    ] {
        let payload = format!(r#"{{"claim":"{key}"}}"#);
        let fingerprint = sha256_hex(&payload);
        conn.execute(
            "INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint,
                 idempotency_key, state, due_at, created_at, updated_at, terminal_at,
                 cycle_started_at)
             VALUES ($1, 'bank', 'claim.submit', $2::text::json, $3, $4, $5, $6, $6, $6, $7, $6)",
            &[
                &id,
                &payload,
                &fingerprint,
                &key,
                &state,
                &now,
                &terminal_at,
            ],
        )
        .await
        .unwrap();
        conn.execute(
            "INSERT INTO liaison_idempotency_keys
                 (partner, idempotency_key, fingerprint, submission_id, created_at)
             VALUES ('bank', $1, $2, $3, $4)",
            &[&key, &fingerprint, &id, &now],
        )
        .await
        .unwrap();
    }
    Some((schema, ids))
}

/// `liaison_migrations` as (version, name, applied_at, checksum).
async fn recorded_migrations(
    conn: &tokio_postgres::Client,
    schema: &Schema,
) -> Vec<(i64, String, i64, Option<String>)> {
    conn.query(
        &format!(
            "SELECT version, name, applied_at, checksum FROM {}.liaison_migrations ORDER BY version",
            schema.name
        ),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[tokio::test]
async fn a_schema_of_the_previous_release_upgrades_and_records_checksums() {
    let Some((schema, ids)) = release_v6_schema().await else {
        return;
    };
    let store = schema.open(Settings::default()).await;

    let all = store.list(&ListFilter::default()).await.unwrap();
    let found: Vec<(String, &str, SubmissionState)> = all
        .iter()
        .map(|s| (s.id.to_string(), s.idempotency_key.as_str(), s.state))
        .collect();
    assert_eq!(
        found,
        [
            (ids[0].to_string(), "P-1", SubmissionState::Queued),
            (ids[1].to_string(), "P-2", SubmissionState::Succeeded),
        ]
    );
    assert_eq!(all[0].payload, Some(json!({ "claim": "P-1" })));
    // The ledger holds the release's keys.
    let err = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({ "other": 1 }))
                .idempotency_key("P-1"),
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err:?}");

    let conn = client(&schema.url).await;
    let expected: Vec<_> = RELEASED
        .iter()
        .map(|(v, n)| {
            (
                *v,
                n.to_string(),
                RELEASE_APPLIED_AT,
                Some(sha256_hex(&postgres_migration(*v, n))),
            )
        })
        .collect();
    let recorded = recorded_migrations(&conn, &schema).await;
    assert_eq!(recorded[..expected.len()], expected[..]);
    // The migrations released since were applied, with their checksums.
    let added: Vec<_> = recorded[expected.len()..]
        .iter()
        .map(|(v, n, _, sum)| (*v, n.clone(), sum.clone()))
        .collect();
    let since: Vec<_> = [
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
    ]
    .into_iter()
    .map(|(v, n)| {
        (
            v,
            n.to_string(),
            Some(sha256_hex(&postgres_migration(v, n))),
        )
    })
    .collect();
    assert_eq!(added, since);
    let expected = recorded;
    drop(store);

    // Reopening checks them and changes nothing.
    let store = schema.open(Settings::default()).await;
    assert_eq!(recorded_migrations(&conn, &schema).await, expected);
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 2);
}

/// A schema at version 9 (before the correlation index) whose submissions
/// carry correlation fields upgrades to 10 with every field indexed: the
/// correlation filter finds the old rows, and new ones are indexed as they
/// are written.
#[tokio::test]
async fn a_schema_before_the_correlation_index_upgrades_and_finds_them() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    let mut old = Vec::new();
    for (key, claim) in [("o1", "C-1"), ("o2", "C-2"), ("o3", "C-1")] {
        let new = submission("bank", key)
            .correlation("claim_id", claim)
            .correlation("patient", "P-1");
        old.push(store.enqueue(new).await.unwrap().submission.id);
    }
    let lab = store
        .enqueue(submission("lab", "l1").correlation("claim_id", "C-1"))
        .await
        .unwrap()
        .submission
        .id;
    store.enqueue(submission("bank", "plain")).await.unwrap();
    drop(store);

    // Back to version 9, before the correlation index.
    let conn = client(&schema.url).await;
    conn.batch_execute(&format!(
        "SET search_path = {};
         DROP INDEX liaison_submissions_created;
         DROP INDEX liaison_correlations_by_value;
         DROP TABLE liaison_correlations;
         DROP INDEX liaison_submissions_updated;
         DROP INDEX liaison_submissions_worker_crashed;
         ALTER TABLE liaison_submissions DROP COLUMN lease_expiries;
         DROP TABLE liaison_instances;
         ALTER TABLE liaison_partners DROP COLUMN last_served_at;
         ALTER TABLE liaison_partners DROP COLUMN expected_traffic;
         DROP INDEX liaison_callbacks_quarantine;
         ALTER TABLE liaison_callbacks DROP COLUMN dismissed_by, DROP COLUMN dismissed_at,
             DROP COLUMN dismissed_reason, DROP COLUMN dismissed_from;
         DELETE FROM liaison_migrations WHERE version > 9;
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
         DROP TABLE liaison_alert_notifications;
         DROP TABLE liaison_alert_sink_failures;
         DROP INDEX liaison_submissions_partner_leases;
         ALTER TABLE liaison_partners DROP COLUMN rate_tat_us;
         DROP TRIGGER liaison_partners_circuit_wake ON liaison_partners;
         DROP TABLE liaison_roles;
         ALTER TABLE liaison_partners DROP COLUMN circuit_failures,
             DROP COLUMN circuit_until, DROP COLUMN circuit_probe;
         DROP INDEX liaison_submissions_uncleared;
         ALTER TABLE liaison_submissions DROP COLUMN personal_cleared_at;
         DROP INDEX liaison_callbacks_uncleared;
         ALTER TABLE liaison_callbacks DROP COLUMN personal_cleared_at;
         DROP TABLE liaison_secrets;
         DROP TABLE liaison_ops_journal;
         ALTER TABLE liaison_partners DROP COLUMN limit_waiters;
         CREATE INDEX liaison_submissions_lease
             ON liaison_submissions (lease_expires_at) WHERE state = 'in_flight';",
        schema.name
    ))
    .await
    .unwrap();
    // The state counters as migration 3 made them (before 14 keyed them by currency).
    let v3 = postgres_migration(3, "health");
    conn.batch_execute(&format!(
        "SET search_path = {}; {}",
        schema.name,
        &v3[v3.find("CREATE TABLE liaison_state_counts").unwrap()..]
    ))
    .await
    .unwrap();

    let store = schema.open(Settings::default()).await;
    let found = |filter: ListFilter| {
        let store = &store;
        async move {
            store
                .list(&filter)
                .await
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let claim = || ListFilter::default().correlation("claim_id", "C-1");
    assert_eq!(found(claim()).await, [old[0], old[2], lab]);
    assert_eq!(found(claim().partner("bank")).await, [old[0], old[2]]);
    assert_eq!(
        found(ListFilter::default().correlation("patient", "P-1")).await,
        old
    );
    let indexed: i64 = conn
        .query_one(
            &format!("SELECT COUNT(*) FROM {}.liaison_correlations", schema.name),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexed, 7);
    let recorded = recorded_migrations(&conn, &schema).await;
    assert_eq!(
        recorded
            .iter()
            .find(|(v, ..)| *v == 10)
            .map(|(v, n, _, sum)| (*v, n.as_str(), sum.clone())),
        Some((
            10,
            "lookup",
            Some(sha256_hex(&postgres_migration(10, "lookup")))
        ))
    );
    // New work is indexed as it is written, next to the old.
    let new = store
        .enqueue(submission("bank", "o4").correlation("claim_id", "C-1"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(found(claim().partner("bank")).await, [old[0], old[2], new]);
    assert_eq!(store.get_by_key("bank", "o2").await.unwrap().id, old[1]);
}

/// A submission's correlation rows go with it (a foreign key that
/// cascades), whatever deletes the submission.
#[tokio::test]
async fn deleting_a_submission_deletes_its_correlation_rows() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    let mut ids = Vec::new();
    for key in ["gone", "kept"] {
        let new = submission("bank", key).correlation("claim_id", "C-1");
        ids.push(store.enqueue(new).await.unwrap().submission.id);
    }
    let conn = client(&schema.url).await;
    let rows = || async {
        let n: i64 = conn
            .query_one(
                &format!("SELECT COUNT(*) FROM {}.liaison_correlations", schema.name),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    };
    assert_eq!(rows().await, 2);
    conn.execute(
        &format!(
            "DELETE FROM {}.liaison_submissions WHERE id = $1",
            schema.name
        ),
        &[ids[0].as_uuid()],
    )
    .await
    .unwrap();
    assert_eq!(rows().await, 1);
    let found = store
        .list(&ListFilter::default().correlation("claim_id", "C-1"))
        .await
        .unwrap();
    assert_eq!(found.iter().map(|s| s.id).collect::<Vec<_>>(), [ids[1]]);
}

#[tokio::test]
async fn a_changed_migration_is_refused_untouched() {
    let Some(schema) = schema().await else { return };
    let store = schema.open(Settings::default()).await;
    store.enqueue(submission("bank", "k")).await.unwrap();
    drop(store);
    let conn = client(&schema.url).await;
    let table = format!("{}.liaison_migrations", schema.name);
    conn.execute(
        &format!("UPDATE {table} SET checksum = $1 WHERE version = $2"),
        &[&"0".repeat(64), &2i64],
    )
    .await
    .unwrap();
    let before = recorded_migrations(&conn, &schema).await;

    let err = PostgresStore::connect(&schema.url, schema.config(Settings::default()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MigrationChanged, "{err}");
    assert!(
        err.to_string()
            .starts_with("migration 2 (replay_cycles) was changed after it was applied"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(recorded_migrations(&conn, &schema).await, before);

    // Restored, it opens again with its data.
    conn.execute(
        &format!("UPDATE {table} SET checksum = $1 WHERE version = $2"),
        &[&sha256_hex(&postgres_migration(2, "replay_cycles")), &2i64],
    )
    .await
    .unwrap();
    let store = schema.open(Settings::default()).await;
    assert_eq!(store.list(&ListFilter::default()).await.unwrap().len(), 1);
}

/// A fake server that answers every TLS request with "no TLS" (what an
/// attacker on the path can do) and tells whether a client then went on in
/// the clear.
async fn server_without_tls() -> (u16, tokio::task::JoinHandle<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = tokio::spawn(async move {
        let mut in_the_clear = false;
        while let Ok(Ok((mut socket, _))) =
            tokio::time::timeout(Duration::from_secs(2), listener.accept()).await
        {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_err() {
                continue;
            }
            // The SSLRequest code; anything else is a plain startup.
            if request[4..8] != 80_877_103u32.to_be_bytes() {
                in_the_clear = true;
                continue;
            }
            socket.write_all(b"N").await.unwrap();
            let mut next = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), socket.read(&mut next)).await
            {
                in_the_clear |= n > 0;
            }
        }
        in_the_clear
    });
    (port, served)
}

/// With TLS configured, a server that offers none is refused, never used in
/// the clear (the driver's default `sslmode=prefer` would fall back); a URL
/// that says `sslmode=prefer` itself keeps the fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_configured_a_server_without_tls_is_refused() {
    for (query, falls_back) in [("", false), ("?sslmode=prefer", true)] {
        let (port, served) = server_without_tls().await;
        let url = format!("postgres://u:s3cret@127.0.0.1:{port}/db{query}");
        let config = PostgresConfig::default()
            .tls(PostgresTls::PlatformRoots)
            .acquire_timeout(Duration::from_secs(2));
        let err = PostgresStore::connect(&url, config).await.unwrap_err();
        assert!(err.is_storage(), "{query:?}: {err:?}");
        assert!(!format!("{err:?}").contains("s3cret"));
        assert_eq!(
            served.await.unwrap(),
            falls_back,
            "{query:?}: went on in the clear"
        );
    }
}

/// Opened without migrating (`migrate(false)`, as the CLI opens an outbox):
/// a schema that does not exist, or holds no outbox, or an older outbox is
/// refused with nothing created or migrated; the outbox as this build left
/// it opens and works.
#[tokio::test]
async fn opened_without_migrating_nothing_is_created_or_migrated() {
    let Some(schema) = schema().await else {
        return;
    };
    let conn = client(&schema.url).await;
    let existing = |name: &str| PostgresConfig::default().schema(name).migrate(false);

    let missing = format!("{}_missing", schema.name);
    let err = PostgresStore::connect(&schema.url, existing(&missing))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(err.to_string(), format!("schema {missing} not found"));
    let created = conn
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&missing])
        .await
        .unwrap();
    assert!(created.is_none(), "the schema was created");

    // A schema of the host's with no outbox in it: left without tables.
    let bare = format!("{}_bare", schema.name);
    conn.batch_execute(&format!("CREATE SCHEMA {bare}"))
        .await
        .unwrap();
    let err = PostgresStore::connect(&schema.url, existing(&bare))
        .await
        .unwrap_err();
    let tables: i64 = conn
        .query_one(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = $1",
            &[&bare],
        )
        .await
        .unwrap()
        .get(0);
    conn.batch_execute(&format!("DROP SCHEMA {bare} CASCADE"))
        .await
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    assert_eq!(tables, 0, "tables were created");

    // The outbox as this build migrated it opens and serves.
    let store = PostgresStore::connect(&schema.url, existing(&schema.name))
        .await
        .unwrap();
    store.enqueue(submission("bank", "k1")).await.unwrap();
    drop(store);

    // One migration behind: refused, and still behind afterwards.
    let table = format!("{}.liaison_migrations", schema.name);
    let max_version = format!("SELECT MAX(version) FROM {table}");
    let latest: i64 = conn.query_one(&max_version, &[]).await.unwrap().get(0);
    conn.execute(
        &format!("DELETE FROM {table} WHERE version = $1"),
        &[&latest],
    )
    .await
    .unwrap();
    let err = PostgresStore::connect(&schema.url, existing(&schema.name))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaTooOld, "{err:?}");
    assert!(err.is_storage() && !err.is_retryable());
    let now: i64 = conn.query_one(&max_version, &[]).await.unwrap().get(0);
    assert_eq!(now, latest - 1, "nothing was migrated");
}
