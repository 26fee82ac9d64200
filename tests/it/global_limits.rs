//! A partner's limits and the store's clock with several host instances,
//! each a child process (this test binary re-run with only
//! [`limits_instance_entry`] selected) running its own `Liaison` on its own
//! store: on one PostgreSQL schema, or on one SQLite file.
//!
//! - concurrency 4 on three instances: the partner never sees more than 4
//!   requests at once, and every instance does part of the work;
//! - 20 per second on three instances: after the first second, no window
//!   of one second holds more than 22 requests;
//! - an instance whose clock runs 2 minutes ahead (the testing-only
//!   failpoint `liaison::clock::skew_ms`) neither reaps the others' leases
//!   early nor claims work before it is due.
//!
//! The PostgreSQL cases need `LIAISON_TEST_PG_URL` (see the conformance
//! suite); without it they print a notice and pass, unless
//! `LIAISON_REQUIRE_PG=1`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{OutboxStore, SqliteStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{BoxError, FinishedSubmission, HttpJsonAdapter, ResultHandler};

use crate::dispatch::{claim, eventually};
use crate::reliability::{self, Spawned};
use crate::support::Counting;

/// Where the child's store is: `pg <url> <schema>` or `sqlite <path>`.
const STORE: &str = "LIAISON_LIMITS_CHILD_STORE";
const MOCK: &str = "LIAISON_LIMITS_CHILD_MOCK";
/// `concurrency,rate per second (0: none),attempt timeout in ms`.
const PARTNER: &str = "LIAISON_LIMITS_CHILD_PARTNER";
/// Milliseconds this instance's clock runs ahead (testing-only failpoint).
const SKEW: &str = "LIAISON_LIMITS_CHILD_SKEW_MS";

/// The partner as every instance configures it.
#[derive(Debug, Clone, Copy)]
struct Setup {
    concurrency: usize,
    rate: u32,
    attempt_timeout_ms: u64,
}

impl Setup {
    fn encode(&self) -> String {
        format!(
            "{},{},{}",
            self.concurrency, self.rate, self.attempt_timeout_ms
        )
    }

    fn decode(text: &str) -> Setup {
        let parts: Vec<u64> = text.split(',').map(|p| p.parse().unwrap()).collect();
        Setup {
            concurrency: parts[0] as usize,
            rate: parts[1] as u32,
            attempt_timeout_ms: parts[2],
        }
    }
}

/// One host instance. Under a normal test run the variables are not set
/// and it returns at once.
#[test]
fn limits_instance_entry() {
    let (Ok(store), Ok(mock), Ok(setup)) = (
        std::env::var(STORE),
        std::env::var(MOCK),
        std::env::var(PARTNER),
    ) else {
        return;
    };
    if let Ok(skew) = std::env::var(SKEW) {
        skew_clock(&skew);
    }
    let setup = Setup::decode(&setup);
    let sent = Arc::new(AtomicU64::new(0));
    let adapter = Counting {
        inner: HttpJsonAdapter::new(&mock).expect("adapter"),
        sent: Arc::clone(&sent),
    };
    let mut partner = Partner::new("lab", adapter)
        .retry(Fixed::new(Duration::from_millis(20)).unwrap())
        .limits(RetryLimits::new(1000, Duration::from_secs(600)).unwrap())
        .attempt_timeout(Duration::from_millis(setup.attempt_timeout_ms))
        .concurrency(setup.concurrency)
        .without_circuit();
    if setup.rate > 0 {
        partner = partner.rate_limit_per_second(setup.rate);
    }
    let settings = EngineSettings::default()
        .poll_interval(Duration::from_millis(100))
        .reap_interval(Duration::from_millis(100))
        .lease_margin(Duration::from_secs(1))
        .claim_batch(16);
    serve(&store, partner, settings, &sent);
}

/// Run an engine with `partner` on the child's `store` until killed,
/// reporting `sent` as `sent <n>` lines.
fn serve(store: &str, partner: Partner, settings: EngineSettings, sent: &AtomicU64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store: Arc<dyn OutboxStore> = open_child_store(store).await;
        let liaison = Liaison::builder_arc(store)
            .partner(partner)
            .settings(settings)
            .build()
            .unwrap();
        let _handle = liaison.start();
        loop {
            println!("sent {}", sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// The store (as [`STORE`]) of an instance whose clock runs 2 minutes
/// ahead and that only delivers results of partner `lab` to a handler
/// that counts them.
const DELIVERING: &str = "LIAISON_LIMITS_CHILD_DELIVERING";

/// A host's result handler that counts what it is given.
#[derive(Debug)]
struct CountDeliveries(Arc<AtomicU64>);

#[async_trait::async_trait]
impl ResultHandler for CountDeliveries {
    async fn handle(&self, _: &FinishedSubmission) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// An instance whose clock runs ahead, delivering results (see
/// [`DELIVERING`]); it reports what it delivered as `sent <n>`. Under a
/// normal test run the variable is not set and it returns at once.
#[test]
fn delivering_instance_entry() {
    let Ok(store) = std::env::var(DELIVERING) else {
        return;
    };
    skew_clock("120000");
    let delivered = Arc::new(AtomicU64::new(0));
    // Nothing is ever sent: no work is queued for it.
    let adapter = HttpJsonAdapter::new("http://127.0.0.1:9/submit").expect("adapter");
    let partner = Partner::new("lab", adapter)
        .without_circuit()
        .results(CountDeliveries(Arc::clone(&delivered)));
    let settings = EngineSettings::default().poll_interval(Duration::from_millis(100));
    serve(&store, partner, settings, &delivered);
}

#[cfg(feature = "failpoints")]
fn skew_clock(ms: &str) {
    fail::cfg("liaison::clock::skew_ms", &format!("return({ms})")).expect("failpoint");
}

#[cfg(not(feature = "failpoints"))]
fn skew_clock(_: &str) {
    panic!("a skewed clock needs the failpoints feature");
}

async fn open_child_store(spec: &str) -> Arc<dyn OutboxStore> {
    let parts: Vec<&str> = spec.split(' ').collect();
    match parts[..] {
        ["sqlite", path] => Arc::new(SqliteStore::open(path).expect("open SQLite")),
        #[cfg(feature = "postgres")]
        ["pg", url, schema] => Arc::new(
            liaison::store::PostgresStore::connect(
                url,
                liaison::store::PostgresConfig::default()
                    .schema(schema)
                    .pool_size(4),
            )
            .await
            .expect("connect"),
        ),
        _ => panic!("unknown store {spec:?}"),
    }
}

/// A running instance and the attempts it last reported.
struct Instance {
    /// Held for its drop, which kills and reaps the process.
    _child: Spawned,
    sent: Arc<AtomicU64>,
    /// Set once its engine runs (it has reported).
    started: Arc<AtomicBool>,
}

impl Instance {
    fn spawn(store: &str, mock: &MockPartner, setup: Setup, skew_ms: Option<i64>) -> Instance {
        let mut command = Instance::command("global_limits::limits_instance_entry");
        command
            .env(STORE, store)
            .env(MOCK, mock.submit_url())
            .env(PARTNER, setup.encode())
            .env_remove(SKEW);
        if let Some(ms) = skew_ms {
            command.env(SKEW, ms.to_string());
        }
        Instance::run(command)
    }

    /// An instance that only delivers results, its clock 2 minutes ahead
    /// ([`delivering_instance_entry`]); `sent` counts its deliveries.
    fn delivering(store: &str) -> Instance {
        let mut command = Instance::command("global_limits::delivering_instance_entry");
        command.env(DELIVERING, store);
        Instance::run(command)
    }

    /// This test binary, running only the test `entry`.
    fn command(entry: &str) -> Command {
        let mut command = reliability::entry(entry);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        command
    }

    /// Start `command` and follow the `sent <n>` lines it prints.
    fn run(mut command: Command) -> Instance {
        let mut child = Spawned::start(&mut command);
        let sent = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let stdout = child.stdout.take().unwrap();
        let (seen, running) = (Arc::clone(&sent), Arc::clone(&started));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("sent ").and_then(|n| n.parse().ok()) {
                    seen.store(n, Ordering::Relaxed);
                    running.store(true, Ordering::Relaxed);
                }
            }
        });
        Instance {
            _child: child,
            sent,
            started,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}

async fn enqueue_all(store: &dyn OutboxStore, n: usize) {
    let batch = (0..n).map(|i| claim("lab", i)).collect();
    store.enqueue_batch(batch).await.expect("enqueue");
}

/// Wait until every instance's engine runs.
async fn all_started(instances: &[Instance]) {
    eventually(
        "every instance started",
        Duration::from_secs(120),
        || async { instances.iter().all(Instance::started) },
    )
    .await;
}

/// Three instances with concurrency 4 against a partner answering in 50 ms.
async fn share_a_concurrency_of_four(store: &dyn OutboxStore, spec: &str) {
    const N: usize = 300;
    let mock =
        MockPartner::start_with(Behavior::slow(Duration::from_millis(50), Behavior::Healthy))
            .await
            .unwrap();
    let setup = Setup {
        concurrency: 4,
        rate: 0,
        attempt_timeout_ms: 10_000,
    };
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::spawn(spec, &mock, setup, None))
        .collect();
    // Work for all three once all three run (the first would take it all
    // while the others start).
    all_started(&instances).await;
    enqueue_all(store, N).await;
    eventually(
        "every submission was sent",
        Duration::from_secs(180),
        || async { mock.stats().side_effects == N as u64 },
    )
    .await;
    let sent: Vec<u64> = instances.iter().map(Instance::sent).collect();
    drop(instances);
    let stats = mock.stats();
    assert!(
        stats.max_concurrent <= 4,
        "the partner saw {} requests at once with a global limit of 4 (attempts per instance {sent:?})",
        stats.max_concurrent
    );
    assert!(
        stats.max_concurrent >= 2,
        "attempts ran in parallel ({})",
        stats.max_concurrent
    );
    // The store shares the slots between the instances that wait for
    // them: none is starved by one that always hears of a freed slot
    // first (a third each would be 100).
    assert!(
        sent.iter().all(|s| *s >= N as u64 / 10),
        "each instance made a fair part of the attempts: {sent:?}"
    );
    assert_eq!(stats.requests, N as u64, "one request per submission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sqlite_processes_share_a_concurrency_of_four() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let store = SqliteStore::open(&path).unwrap();
    let spec = format!("sqlite {}", path.to_str().unwrap());
    share_a_concurrency_of_four(&store, &spec).await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::time::Duration;

    use chrono::Utc;
    use liaison::store::{DeliveryClaim, DeliveryEnd, ListFilter, OutboxStore};
    use liaison::testing::{Behavior, MockPartner};
    use liaison::{NewSubmission, SubmissionState};

    use super::{Instance, Setup, all_started, enqueue_all};
    use crate::conformance::harness::pg::{Schema, client};
    use crate::dispatch::eventually;
    use crate::support::drive_new_to;

    fn spec(schema: &Schema) -> String {
        format!("pg {} {}", schema.url, schema.name)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_instances_share_a_concurrency_of_four() {
        let Some(schema) = Schema::create().await else {
            return;
        };
        let store = schema.open(Default::default()).await;
        super::share_a_concurrency_of_four(&store, &spec(&schema)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_instances_share_a_rate_of_twenty_per_second() {
        // Ten seconds and more at 20 per second (plus the first burst).
        const N: usize = 260;
        let Some(schema) = Schema::create().await else {
            return;
        };
        let store = schema.open(Default::default()).await;
        let mock = MockPartner::start().await.unwrap();
        let setup = Setup {
            concurrency: 16,
            rate: 20,
            attempt_timeout_ms: 10_000,
        };
        let instances: Vec<Instance> = (0..3)
            .map(|_| Instance::spawn(&spec(&schema), &mock, setup, None))
            .collect();
        all_started(&instances).await;
        enqueue_all(&store, N).await;
        eventually(
            "every submission was sent",
            Duration::from_secs(120),
            || async { mock.stats().side_effects == N as u64 },
        )
        .await;
        let sent: Vec<u64> = instances.iter().map(Instance::sent).collect();
        drop(instances);

        let mut at: Vec<_> = mock.received().iter().map(|r| r.at).collect();
        at.sort();
        assert_eq!(at.len(), N);
        let first = at[0];
        let second = chrono::Duration::seconds(1);
        // Every window of one second that starts after the first second.
        let mut busiest = 0;
        for (i, start) in at.iter().enumerate() {
            if *start < first + second {
                continue;
            }
            let n = at[i..].iter().take_while(|t| **t < *start + second).count();
            busiest = busiest.max(n);
        }
        assert!(
            busiest <= 22,
            "{busiest} requests within one second at a shared rate of 20/s (attempts per instance {sent:?})"
        );
        let span = at[N - 1] - first;
        assert!(
            span >= chrono::Duration::seconds(10),
            "{N} requests at 20/s after a burst of 20 take at least 11 s, not {span:?}"
        );
        assert!(
            sent.iter().filter(|s| **s > 0).count() >= 2,
            "the budget is shared, not held by one instance: {sent:?}"
        );
    }

    /// An instance whose clock runs 2 minutes ahead, among two whose clocks
    /// agree with the database's: leases and due times are the database's.
    #[cfg(feature = "failpoints")]
    /// Another client holds the partner's row past the store's
    /// `lock_timeout` (an operator's open transaction): the engine's claims
    /// are `Busy`, it keeps going, and once the row is free every
    /// submission reaches the partner once, within the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn claims_behind_a_held_partner_row_wait_and_then_deliver_everything_once() {
        const N: usize = 20;
        let Some(schema) = Schema::create().await else {
            return;
        };
        let store = liaison::store::PostgresStore::connect(
            &schema.url,
            schema
                .config(Default::default())
                .lock_timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap();
        let mock =
            MockPartner::start_with(Behavior::slow(Duration::from_millis(20), Behavior::Healthy))
                .await
                .unwrap();
        let partner = liaison::engine::Partner::new(
            "lab",
            liaison::HttpJsonAdapter::new(&mock.submit_url()).unwrap(),
        )
        .retry(liaison::retry::Fixed::new(Duration::from_millis(20)).unwrap())
        .concurrency(2)
        .without_circuit();
        let liaison = liaison::engine::Liaison::builder(store.clone())
            .partner(partner)
            .settings(
                liaison::engine::EngineSettings::default().poll_interval(Duration::from_millis(50)),
            )
            .build()
            .unwrap();
        // The partner's row exists before anyone holds it.
        enqueue_all(&store, 1).await;
        let handle = liaison.start();
        eventually("the first is sent", Duration::from_secs(30), || async {
            mock.stats().side_effects == 1
        })
        .await;

        let holder = client(&schema.url).await;
        holder.batch_execute("BEGIN").await.unwrap();
        holder
            .execute(
                &format!(
                    "SELECT 1 FROM {}.liaison_partners WHERE partner = 'lab' FOR UPDATE",
                    schema.name
                ),
                &[],
            )
            .await
            .unwrap();
        let batch: Vec<NewSubmission> = (1..N)
            .map(|i| {
                NewSubmission::new("lab", "claim.submit", serde_json::json!({ "i": i }))
                    .idempotency_key(format!("held-{i}"))
            })
            .collect();
        store.enqueue_batch(batch).await.unwrap();
        // Held for a second: ten lock timeouts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            mock.stats().side_effects,
            1,
            "nothing was claimed past the held row"
        );
        holder.batch_execute("ROLLBACK").await.unwrap();

        eventually("everything was sent", Duration::from_secs(60), || async {
            mock.stats().side_effects == N as u64
        })
        .await;
        handle.shutdown(Duration::from_secs(5)).await.unwrap();
        let stats = mock.stats();
        assert_eq!(stats.requests, N as u64, "one request per submission");
        assert!(stats.max_concurrent <= 2, "{}", stats.max_concurrent);
        let done = store
            .list(
                &ListFilter::default()
                    .partner("lab")
                    .state(SubmissionState::AwaitingResult)
                    .limit(100),
            )
            .await
            .unwrap();
        assert_eq!(done.len(), N, "every answer was recorded");
    }

    /// An instance whose clock runs 2 minutes ahead delivers results that
    /// are due, but leaves alone one another instance holds under a live
    /// lease (by the database's clock).
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_whose_clock_runs_ahead_takes_no_delivery_before_its_lease_ends() {
        let Some(schema) = Schema::create().await else {
            return;
        };
        let store = schema.open(Default::default()).await;
        store.set_result_delivery("lab", true).await.unwrap();
        let mut ids = Vec::new();
        for key in ["held", "free"] {
            let new = NewSubmission::new("lab", "claim.submit", serde_json::json!({ "k": key }))
                .idempotency_key(key);
            ids.push(
                drive_new_to(&store, new, SubmissionState::Succeeded)
                    .await
                    .0,
            );
        }
        // This host takes the older delivery under a minute's lease.
        let held = store
            .claim_deliveries(
                DeliveryClaim::new(vec!["lab".into()], 1, Duration::from_secs(60)).at(store.now()),
            )
            .await
            .unwrap()
            .remove(0);
        assert_eq!(held.delivery.submission_id, ids[0]);

        let ahead = Instance::delivering(&spec(&schema));
        eventually(
            "the instance whose clock runs ahead delivered the free one",
            Duration::from_secs(120),
            || async { ahead.sent() >= 1 },
        )
        .await;
        // Many more of its claims (every 100 ms at most) go by.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ahead.sent(), 1, "it took the delivery leased here");
        drop(ahead);
        store
            .finish_delivery(&held, DeliveryEnd::Delivered)
            .await
            .expect("the lease taken here is still the delivery's");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_whose_clock_runs_ahead_reaps_and_claims_by_the_database_clock() {
        const NOW: usize = 12;
        const LATER: usize = 5;
        let Some(schema) = Schema::create().await else {
            return;
        };
        let store = schema.open(Default::default()).await;
        // Slow answers keep leases live (20 s timeout + 1 s margin) while
        // the skewed instance's reaper runs every 100 ms.
        let mock =
            MockPartner::start_with(Behavior::slow(Duration::from_secs(8), Behavior::Healthy))
                .await
                .unwrap();
        // Due in a minute by the database's clock: the skewed instance
        // would think it due already.
        let later_ids = {
            let not_before = store.now() + chrono::Duration::seconds(60);
            let batch: Vec<NewSubmission> = (0..LATER)
                .map(|i| {
                    NewSubmission::new("lab", "claim.submit", serde_json::json!({ "later": i }))
                        .idempotency_key(format!("later-{i}"))
                        .not_before(not_before)
                })
                .collect();
            store
                .enqueue_batch(batch)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.submission.id)
                .collect::<Vec<_>>()
        };
        let setup = Setup {
            concurrency: 8,
            rate: 0,
            attempt_timeout_ms: 20_000,
        };
        let spec = spec(&schema);
        // Two instances with a right clock take what the concurrency
        // allows; then the one whose clock runs ahead joins while their
        // leases are live.
        let others: Vec<Instance> = (0..2)
            .map(|_| Instance::spawn(&spec, &mock, setup, None))
            .collect();
        all_started(&others).await;
        enqueue_all(&store, NOW).await;
        eventually(
            "the instances with a right clock hold leases",
            Duration::from_secs(60),
            || async { others.iter().map(Instance::sent).sum::<u64>() >= 8 },
        )
        .await;
        let ahead = Instance::spawn(&spec, &mock, setup, Some(120_000));
        all_started(std::slice::from_ref(&ahead)).await;
        let in_flight = ListFilter::default()
            .partner("lab")
            .state(SubmissionState::InFlight);
        assert!(
            !store.list(&in_flight).await.unwrap().is_empty(),
            "leases were live when the instance whose clock runs ahead started"
        );
        eventually(
            "the work due now was sent and answered",
            Duration::from_secs(120),
            || async { mock.stats().side_effects == NOW as u64 },
        )
        .await;
        // The answers recorded (checked below: a reaped lease would have
        // made them stale).
        let awaiting = ListFilter::default()
            .partner("lab")
            .state(SubmissionState::AwaitingResult);
        let recorded = async {
            while store.list(&awaiting).await.unwrap().len() < NOW {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), recorded).await;
        let sent: Vec<u64> = std::iter::once(&ahead)
            .chain(&others)
            .map(Instance::sent)
            .collect();
        drop(ahead);
        drop(others);

        let c = client(&schema.url).await;
        let expired: i64 = c
            .query_one(
                &format!(
                    "SELECT COUNT(*) FROM {}.liaison_events WHERE kind = 'lease_expired'",
                    schema.name
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            expired, 0,
            "no lease was reaped before it ended (attempts per instance {sent:?})"
        );
        assert_eq!(
            mock.stats().requests,
            NOW as u64,
            "no submission was sent twice"
        );
        assert_eq!(
            store.list(&awaiting).await.unwrap().len(),
            NOW,
            "every answer was recorded under its lease"
        );
        for id in later_ids {
            let s = store.get(id).await.unwrap();
            assert_eq!(
                (s.state, s.attempts),
                (SubmissionState::Queued, 0),
                "work due in a minute was not claimed early"
            );
        }
        assert!(
            sent[1] + sent[2] > 0,
            "the instances with a right clock held leases too: {sent:?}"
        );
        // Its attempts, too, were dated by the database's clock, not two
        // minutes ahead.
        let latest_start: i64 = c
            .query_one(
                &format!(
                    "SELECT COALESCE(MAX(started_at), 0) FROM {}.liaison_attempts",
                    schema.name
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            latest_start <= Utc::now().timestamp_millis() + 5_000,
            "attempts are dated by the database's clock, not two minutes ahead"
        );
    }
}

/// Limits that cannot hold are refused when the hub is built, naming the
/// setting, and nothing is written.
#[tokio::test]
async fn impossible_limits_are_refused_at_configuration() {
    use liaison::Error;
    use liaison::store::Rate;

    let (_dir, store) = crate::support::store();
    let mock = MockPartner::start().await.unwrap();
    let base = || crate::dispatch::partner("lab", &mock);
    let cases = [
        ("concurrency", base().concurrency(0)),
        ("rate_limit", base().rate_limit_per_second(0)),
        ("rate_limit", base().rate_limit(0, Duration::from_secs(60))),
        // Faster than one attempt per microsecond: not representable.
        (
            "rate_limit",
            base().rate_limit(2_000_000, Duration::from_secs(1)),
        ),
        ("rate_limit", base().rate_limit(5, Duration::ZERO)),
        (
            "rate_limit",
            base().rate_limit(5, Duration::from_secs(3 * 24 * 3600)),
        ),
    ];
    for (field, partner) in cases {
        let error = Liaison::builder(store.clone())
            .partner(partner)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput { field: f, .. } if *f == field),
            "{field}: {error:?}"
        );
    }
    for bad in [
        Rate::per_second(10).unwrap().with_burst(0),
        Rate::per_second(10).unwrap().with_burst(11),
        Rate::new(u32::MAX, Duration::from_secs(1)),
    ] {
        assert!(bad.unwrap_err().is_invalid_input());
    }
    // Nothing was created by accident.
    let all = store
        .list(&liaison::store::ListFilter::default())
        .await
        .unwrap();
    assert!(all.is_empty());
    // The limits that can hold are taken.
    let fine = base().concurrency(4).rate(
        Rate::new(20, Duration::from_secs(1))
            .unwrap()
            .with_burst(4)
            .unwrap(),
    );
    assert!(
        Liaison::builder(store.clone())
            .partner(fine)
            .build()
            .is_ok()
    );
}
