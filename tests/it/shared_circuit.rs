//! Several host instances share one circuit per partner and one alert
//! evaluator.
//!
//! Each instance is a child process (this test binary re-run with only
//! [`circuit_instance_entry`] selected) running its own `Liaison` on its own
//! store — one PostgreSQL schema, or one SQLite file — all sending to one
//! `MockPartner` over HTTP and notifying one webhook receiver in the test.
//! The tests check what issue 16 asks of a shared circuit: a partner that is
//! down gets the failures that open the circuit and then one probe per open
//! period (not one per instance), all instances resume when it recovers;
//! three instances open one alert and send one notification; and when the
//! instance evaluating alerts dies another takes over once its lease ran out.
//!
//! The PostgreSQL cases need `LIAISON_TEST_PG_URL` (see the conformance
//! suite); without it they print a notice and pass, unless
//! `LIAISON_REQUIRE_PG=1`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::engine::{
    AlertSettings, AlertThresholds, CircuitSettings, CircuitState, EngineSettings, Liaison, Partner,
};
use liaison::ops::alerts::WebhookSink;
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{OutboxStore, PostgresConfig, PostgresStore, RoleLease, SqliteStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{HttpJsonAdapter, ResultMapping, SubmissionState};

use crate::conformance::harness::pg::Schema;
use crate::dispatch::{claim, eventually};
use crate::reliability::{self, Spawned};
use crate::support::Counting;

const DB: &str = "LIAISON_CIRCUIT_CHILD_DB";
const SCHEMA: &str = "LIAISON_CIRCUIT_CHILD_SCHEMA";
const MOCK: &str = "LIAISON_CIRCUIT_CHILD_MOCK";
const SINK: &str = "LIAISON_CIRCUIT_CHILD_SINK";

/// Failures that open the circuit.
const THRESHOLD: u32 = 3;
/// How long it stays open before a probe.
const OPEN_FOR: Duration = Duration::from_secs(1);
/// How often each instance evaluates alerts (if it holds the role).
const ALERT_INTERVAL: Duration = Duration::from_millis(200);
/// The evaluator role's lease.
const EVALUATOR_LEASE: Duration = Duration::from_secs(2);
/// The alert sink's signing secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn open_store(db: &str) -> Arc<dyn OutboxStore> {
    if db.starts_with("postgres") {
        let schema = std::env::var(SCHEMA).expect("schema");
        Arc::new(
            PostgresStore::connect(db, PostgresConfig::default().schema(schema).pool_size(4))
                .await
                .expect("connect"),
        )
    } else {
        Arc::new(SqliteStore::open(db).expect("open"))
    }
}

/// One host instance. Under a normal test run the variables are not set
/// and it returns at once.
#[test]
fn circuit_instance_entry() {
    let (Ok(db), Ok(mock), Ok(sink)) =
        (std::env::var(DB), std::env::var(MOCK), std::env::var(SINK))
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = open_store(&db).await;
        let sent = Arc::new(AtomicU64::new(0));
        let adapter = HttpJsonAdapter::new(&mock)
            .and_then(|a| {
                a.status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)
            })
            .expect("adapter");
        let partner = Partner::new(
            "lab",
            Counting {
                inner: adapter,
                sent: Arc::clone(&sent),
            },
        )
        .retry(Fixed::new(Duration::from_millis(20)).unwrap())
        .limits(RetryLimits::new(100_000, Duration::from_secs(600)).unwrap())
        .attempt_timeout(Duration::from_secs(2))
        .concurrency(1)
        .circuit(CircuitSettings::new(THRESHOLD, OPEN_FOR).unwrap())
        // Only the circuit raises "partner unavailable" here.
        .alert_thresholds(AlertThresholds::default().consecutive_failures(1_000_000));
        let settings = EngineSettings::default()
            .poll_interval(Duration::from_millis(100))
            .reap_interval(Duration::from_millis(200))
            .lease_margin(Duration::from_millis(500))
            .claim_batch(8);
        let liaison = Liaison::builder_arc(store)
            .partner(partner)
            .settings(settings)
            .alert_sink(
                WebhookSink::builder(&sink, SECRET)
                    .allow_plain_http_on_loopback()
                    .build()
                    .unwrap(),
            )
            .alert_settings(
                AlertSettings::default()
                    .interval(ALERT_INTERVAL)
                    .window(Duration::from_secs(600))
                    .renotify_every(Duration::from_secs(3600))
                    .sink_timeout(Duration::from_secs(5))
                    .evaluator_lease(EVALUATOR_LEASE),
            )
            .build()
            .unwrap();
        let handle = liaison.start();
        println!("instance {}", handle.instance_id());
        // Report progress until killed.
        loop {
            println!("sent {}", sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// The database the children share: a PostgreSQL schema or an SQLite file.
enum Shared {
    Postgres(Schema),
    Sqlite(tempfile::TempDir),
}

impl Shared {
    async fn postgres() -> Option<Shared> {
        Schema::create().await.map(Shared::Postgres)
    }

    fn sqlite() -> Shared {
        Shared::Sqlite(tempfile::tempdir().unwrap())
    }

    fn db(&self) -> String {
        match self {
            Shared::Postgres(schema) => schema.url.clone(),
            Shared::Sqlite(dir) => dir.path().join("outbox.db").display().to_string(),
        }
    }

    fn schema(&self) -> String {
        match self {
            Shared::Postgres(schema) => schema.name.clone(),
            Shared::Sqlite(_) => String::new(),
        }
    }

    async fn store(&self) -> Arc<dyn OutboxStore> {
        match self {
            Shared::Postgres(schema) => Arc::new(schema.open(Default::default()).await),
            Shared::Sqlite(_) => Arc::new(SqliteStore::open(self.db()).unwrap()),
        }
    }
}

/// A running instance: its id and the attempts it last reported.
struct Instance {
    /// Killed and reaped when the instance is dropped.
    child: Spawned,
    id: Arc<Mutex<Option<String>>>,
    sent: Arc<AtomicU64>,
}

impl Instance {
    fn spawn(shared: &Shared, mock: &MockPartner, sink: &str) -> Instance {
        let mut child = Spawned::start(
            reliability::entry("shared_circuit::circuit_instance_entry")
                .env(DB, shared.db())
                .env(SCHEMA, shared.schema())
                .env(MOCK, mock.submit_url())
                .env(SINK, sink)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let sent = Arc::new(AtomicU64::new(0));
        let id = Arc::new(Mutex::new(None));
        let stdout = child.stdout.take().unwrap();
        let (seen, named) = (Arc::clone(&sent), Arc::clone(&id));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("sent ").and_then(|n| n.parse().ok()) {
                    seen.store(n, Ordering::Relaxed);
                } else if let Some((_, me)) = line.rsplit_once("instance ") {
                    // The first line follows libtest's "test ... " without
                    // a line break.
                    *named.lock().unwrap() = Some(me.trim().to_owned());
                }
            }
        });
        Instance { child, id, sent }
    }

    fn id(&self) -> Option<String> {
        self.id.lock().unwrap().clone()
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn kill(&mut self) {
        self.child.kill_and_reap();
    }
}

/// What the webhook receiver got: `(event type, alert id)` per POST.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver on a real port that records every notification.
async fn alert_receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/alerts",
            axum::routing::post(
                |axum::extract::State(got): axum::extract::State<Received>,
                 body: axum::body::Bytes| async move {
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    got.lock().unwrap().push((
                        json["type"].as_str().unwrap_or_default().to_owned(),
                        json["alert"]["id"].as_str().unwrap_or_default().to_owned(),
                    ));
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn count(store: &Arc<dyn OutboxStore>, state: SubmissionState) -> u64 {
    let query = liaison::store::StatsQuery::new(Duration::from_secs(60)).partner("lab");
    store
        .stats(&query)
        .await
        .unwrap()
        .iter()
        .filter_map(|s| s.by_state.get(&state))
        .map(|t| t.count)
        .sum()
}

async fn enqueue(store: &Arc<dyn OutboxStore>, range: std::ops::Range<usize>) {
    let batch = range.map(|i| claim("lab", i)).collect();
    store.enqueue_batch(batch).await.unwrap();
}

async fn circuit_state(store: &Arc<dyn OutboxStore>) -> CircuitState {
    store.circuit("lab").await.unwrap().state
}

/// The evaluator role's holder and lease end, if any instance holds it.
async fn evaluator(store: &Arc<dyn OutboxStore>) -> Option<(String, DateTime<Utc>)> {
    store
        .roles()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.role == RoleLease::ALERT_EVALUATOR && r.expires_at > Utc::now())
        .map(|r| (r.holder, r.expires_at))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_probe_a_partner_that_is_down_once_per_open_period_and_resume_together() {
    let Some(shared) = Shared::postgres().await else {
        return;
    };
    let store = shared.store().await;
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let (sink, _) = alert_receiver().await;
    enqueue(&store, 0..30).await;
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::spawn(&shared, &mock, &sink))
        .collect();

    eventually("the circuit open", Duration::from_secs(60), || async {
        circuit_state(&store).await == CircuitState::Open
    })
    .await;
    // Attempts sent before it opened come back (each instance has one at a
    // time); well inside the open period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_open = mock.stats().requests;
    assert!(
        at_open <= u64::from(THRESHOLD) + 2,
        "the failures that opened it plus at most one in flight per other instance, not three \
         instances' thresholds: {at_open}"
    );
    // Four open periods of one second: one probe each (its failure opens
    // the circuit again), whichever instance takes it.
    let watched = tokio::time::Instant::now();
    tokio::time::sleep(4 * OPEN_FOR).await;
    let periods = watched.elapsed().as_secs_f64() / OPEN_FOR.as_secs_f64();
    let probes = mock.stats().requests - at_open;
    assert!(
        (probes as f64) <= periods.ceil() + 1.0,
        "at most one probe per open period: {probes} in {periods:.1} periods"
    );
    assert!(probes >= 1, "the circuit half-opens and probes");
    let c = store.circuit("lab").await.unwrap();
    assert!(
        matches!(c.state, CircuitState::Open | CircuitState::HalfOpen),
        "{c:?}"
    );
    assert!(c.consecutive_failures >= THRESHOLD, "{c:?}");

    // It recovers: a probe closes the circuit for everyone and every
    // instance sends again.
    mock.set_behavior(Behavior::slow(
        Duration::from_millis(20),
        Behavior::AcceptAndComplete,
    ));
    let before: Vec<u64> = instances.iter().map(Instance::sent).collect();
    enqueue(&store, 30..330).await;
    eventually(
        "every submission succeeded",
        Duration::from_secs(120),
        || async { count(&store, SubmissionState::Succeeded).await == 330 },
    )
    .await;
    assert_eq!(circuit_state(&store).await, CircuitState::Closed);
    assert_eq!(store.circuit("lab").await.unwrap().consecutive_failures, 0);
    let after: Vec<u64> = instances.iter().map(Instance::sent).collect();
    // At a concurrency of 1 the slot goes round the instances that wait
    // for it: each sends a fair part of the 300 (a third would be 100).
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b >= 30),
        "every instance resumed with a fair part: before {before:?}, after {after:?}"
    );
    assert_eq!(mock.stats().side_effects, 330, "one effect per key");
}

/// Three instances on `shared` with the partner down: one alert, one
/// notification; then the partner recovers: it resolves once.
async fn one_alert_and_one_notification(shared: Shared) {
    let store = shared.store().await;
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let (sink, got) = alert_receiver().await;
    enqueue(&store, 0..10).await;
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::spawn(&shared, &mock, &sink))
        .collect();
    eventually("an alert notified", Duration::from_secs(60), || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    // Many evaluations later (every instance tries every 200 ms), over
    // several open periods and probes.
    tokio::time::sleep(15 * ALERT_INTERVAL).await;
    let seen = got.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one notification: {seen:?}");
    assert_eq!(seen[0].0, "alert.opened");
    let alerts = store.alerts(false, 100).await.unwrap();
    assert_eq!(alerts.len(), 1, "one alert ever: {alerts:?}");
    assert_eq!(
        alerts[0].class,
        liaison::ops::alerts::ProblemClass::PartnerUnavailable
    );
    assert!(alerts[0].details.contains("circuit is open"), "{alerts:?}");
    let (holder, _) = evaluator(&store).await.expect("an evaluator");
    let ids: Vec<String> = instances.iter().filter_map(Instance::id).collect();
    assert!(ids.contains(&holder), "{holder} is one of {ids:?}");

    // Back up: the circuit closes, the work drains, the alert resolves once.
    mock.set_behavior(Behavior::AcceptAndComplete);
    eventually("resolved", Duration::from_secs(60), || async {
        got.lock().unwrap().len() >= 2
    })
    .await;
    tokio::time::sleep(5 * ALERT_INTERVAL).await;
    let seen = got.lock().unwrap().clone();
    let by_type: BTreeMap<&str, usize> = seen.iter().fold(BTreeMap::new(), |mut m, (t, _)| {
        *m.entry(t.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        by_type,
        BTreeMap::from([("alert.opened", 1), ("alert.resolved", 1)]),
        "{seen:?}"
    );
    assert!(seen.iter().all(|(_, id)| *id == seen[0].1), "one alert");
    assert_eq!(count(&store, SubmissionState::Succeeded).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_partner_down_open_one_alert_and_send_one_notification() {
    let Some(shared) = Shared::postgres().await else {
        return;
    };
    one_alert_and_one_notification(shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_sqlite_file_open_one_alert_and_send_one_notification() {
    one_alert_and_one_notification(Shared::sqlite()).await;
}

/// Kill the instance evaluating alerts: no other takes the role before its
/// lease ran out, one does soon after, and it evaluates (the alert of the
/// partner that recovers is resolved).
async fn the_evaluator_is_taken_over(shared: Shared) {
    let store = shared.store().await;
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let (sink, got) = alert_receiver().await;
    enqueue(&store, 0..5).await;
    let mut instances: Vec<Instance> = (0..2)
        .map(|_| Instance::spawn(&shared, &mock, &sink))
        .collect();
    eventually("an alert notified", Duration::from_secs(60), || async {
        !got.lock().unwrap().is_empty()
    })
    .await;
    let (holder, _) = evaluator(&store).await.expect("an evaluator");
    let index = instances
        .iter()
        .position(|i| i.id().as_deref() == Some(holder.as_str()))
        .expect("the holder is one of the instances");
    instances[index].kill();
    // The lease as the dead holder last renewed it.
    let lease_end = store
        .roles()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.role == RoleLease::ALERT_EVALUATOR)
        .map(|r| r.expires_at)
        .unwrap();
    eventually("another evaluator", Duration::from_secs(60), || async {
        evaluator(&store)
            .await
            .is_some_and(|(who, _)| who != holder)
    })
    .await;
    let role = store.roles().await.unwrap().remove(0);
    let survivor = instances[1 - index].id().unwrap();
    assert_eq!(role.holder, survivor);
    assert!(
        role.since >= lease_end,
        "taken over only once the lease ran out: {} < {lease_end}",
        role.since
    );
    // ...and at the survivor's first evaluation after that (every 200 ms;
    // the bound is loose for a loaded machine, the point is "not never").
    assert!(
        role.since - lease_end < chrono::Duration::seconds(5),
        "taken over {} after the lease ran out",
        role.since - lease_end
    );
    // The new evaluator evaluates: the partner recovers and the alert the
    // dead one opened is resolved.
    mock.set_behavior(Behavior::AcceptAndComplete);
    eventually(
        "resolved by the new evaluator",
        Duration::from_secs(60),
        || async {
            got.lock()
                .unwrap()
                .iter()
                .any(|(t, _)| t == "alert.resolved")
        },
    )
    .await;
    let opened = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "alert.opened")
        .count();
    assert_eq!(opened, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_evaluator_is_taken_over_once_its_lease_ran_out() {
    let Some(shared) = Shared::postgres().await else {
        return;
    };
    the_evaluator_is_taken_over(shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_evaluator_process_on_sqlite_is_taken_over() {
    the_evaluator_is_taken_over(Shared::sqlite()).await;
}
