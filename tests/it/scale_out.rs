//! Several host instances on one PostgreSQL outbox.
//!
//! Each instance is a child process (this test binary re-run with only
//! [`instance_entry`] selected) running its own `Liaison` on its own
//! `PostgresStore`, all on one schema and one `MockPartner`. The tests check
//! what sharing must not break: every submission delivered, one side effect
//! per key, never two live leases on one submission, a killed instance's
//! work finished by the others, a callback delivered to two instances at once
//! applied once, and work completing while the `LISTEN` connection is
//! dropped again and again.
//!
//! Like the conformance suite they need `LIAISON_TEST_PG_URL`; without it
//! they print a notice and pass, unless `LIAISON_REQUIRE_PG=1`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use liaison::callback::{Disposition, JsonMatcher};
use liaison::engine::{EngineSettings, Liaison, Partner};
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{CallbackFilter, OutboxStore, PostgresConfig, PostgresStore, Wake};
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{EventKind, HttpJsonAdapter, ResultMapping, SubmissionState};

use crate::callbacks::signer;
use crate::conformance::harness::pg::{Schema, client};
use crate::dispatch::{claim, eventually};
use crate::reliability::{self, Spawned};
use crate::support::Counting;

const PG: &str = "LIAISON_SCALE_CHILD_PG";
const SCHEMA: &str = "LIAISON_SCALE_CHILD_SCHEMA";
const MOCK: &str = "LIAISON_SCALE_CHILD_MOCK";

/// The adapter every instance uses: MockPartner answers with the result.
fn sync_adapter(submit_url: &str) -> HttpJsonAdapter {
    HttpJsonAdapter::new(submit_url)
        .and_then(|a| a.status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?))
        .expect("adapter")
}

/// One host instance. Under a normal test run the variables are not set
/// and it returns at once.
#[test]
fn instance_entry() {
    let (Ok(url), Ok(schema), Ok(mock)) = (
        std::env::var(PG),
        std::env::var(SCHEMA),
        std::env::var(MOCK),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store =
            PostgresStore::connect(&url, PostgresConfig::default().schema(schema).pool_size(6))
                .await
                .expect("connect");
        let sent = Arc::new(AtomicU64::new(0));
        let adapter = Counting {
            inner: sync_adapter(&mock),
            sent: Arc::clone(&sent),
        };
        let partner = Partner::new("lab", adapter)
            .retry(Fixed::new(Duration::from_millis(20)).unwrap())
            .limits(RetryLimits::new(1000, Duration::from_secs(600)).unwrap())
            .attempt_timeout(Duration::from_secs(2))
            .concurrency(16)
            .without_circuit();
        let settings = EngineSettings::default()
            // Long on purpose: new work must arrive by NOTIFY, not by polling.
            .poll_interval(Duration::from_secs(2))
            .reap_interval(Duration::from_millis(200))
            .lease_margin(Duration::from_millis(500))
            .claim_batch(32);
        let liaison = Liaison::builder(store)
            .partner(partner)
            .settings(settings)
            .build()
            .unwrap();
        let _handle = liaison.start();
        // Report progress until killed.
        loop {
            println!("sent {}", sent.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A running instance and the attempts it last reported.
struct Instance {
    /// Killed and reaped when the instance is dropped.
    child: Spawned,
    sent: Arc<AtomicU64>,
}

impl Instance {
    fn spawn(schema: &Schema, mock: &MockPartner) -> Instance {
        let mut child = Spawned::start(
            reliability::entry("scale_out::instance_entry")
                .env(PG, &schema.url)
                .env(SCHEMA, &schema.name)
                .env(MOCK, mock.submit_url())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let sent = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::clone(&sent);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("sent ").and_then(|n| n.parse().ok()) {
                    seen.store(n, Ordering::Relaxed);
                }
            }
        });
        Instance { child, sent }
    }

    fn kill(&mut self) {
        self.child.kill_and_reap();
    }
}

/// `id`'s timeline holds one change to `Succeeded`, however many
/// callbacks and instances reported it.
async fn succeeded_once(store: &(impl OutboxStore + ?Sized), id: liaison::SubmissionId) {
    let changes = store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Succeeded)
        .count();
    assert_eq!(changes, 1, "one state change for {id}");
}

async fn count(store: &(impl OutboxStore + ?Sized), state: SubmissionState) -> i64 {
    let query = liaison::store::StatsQuery::new(Duration::from_secs(60)).partner("lab");
    let stats = store.stats(&query).await.unwrap();
    stats
        .iter()
        .filter_map(|s| s.by_state.get(&state))
        .map(|t| t.count as i64)
        .sum()
}

async fn enqueue_all(store: &PostgresStore, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk.iter().map(|i| claim("lab", *i)).collect();
        store.enqueue_batch(batch).await.expect("enqueue");
    }
}

/// Pairs of attempts of one submission whose leases overlapped in time:
/// the later one started before the earlier one finished (or, never
/// finished, before its lease expired).
async fn overlapping_leases(schema: &Schema) -> i64 {
    let c = client(&schema.url).await;
    c.query_one(
        &format!(
            "SELECT COUNT(*) FROM {s}.liaison_attempts a
             JOIN {s}.liaison_attempts b
               ON a.submission_id = b.submission_id AND a.number < b.number
             WHERE b.started_at < COALESCE(a.finished_at, b.started_at + 1)",
            s = schema.name
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn distinct_tokens(schema: &Schema) -> (i64, i64) {
    let c = client(&schema.url).await;
    let row = c
        .query_one(
            &format!(
                "SELECT COUNT(*), COUNT(DISTINCT lease_token) FROM {}.liaison_attempts",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_ten_thousand_submissions_once_each() {
    const N: usize = 10_000;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let store = schema.open(Default::default()).await;
    // One request in seven fails with a 503 first: retries cross instances.
    let mock = MockPartner::start_with(Behavior::flaky(7, Behavior::AcceptAndComplete))
        .await
        .unwrap();
    let instances: Vec<Instance> = (0..3).map(|_| Instance::spawn(&schema, &mock)).collect();
    // Enqueued while the instances run: they learn of it by NOTIFY.
    enqueue_all(&store, N).await;
    eventually(
        "every submission succeeded",
        Duration::from_secs(300),
        || async { count(&store, SubmissionState::Succeeded).await == N as i64 },
    )
    .await;
    let sent: Vec<u64> = instances
        .iter()
        .map(|i| i.sent.load(Ordering::Relaxed))
        .collect();
    drop(instances);

    let stats = mock.stats();
    assert_eq!(stats.distinct_keys, N as u64, "every submission delivered");
    assert_eq!(stats.side_effects, N as u64, "one side effect per key");
    assert!(
        stats.requests > N as u64,
        "the flaky partner forced retries"
    );
    assert_eq!(
        overlapping_leases(&schema).await,
        0,
        "never two live leases"
    );
    let (attempts, tokens) = distinct_tokens(&schema).await;
    assert_eq!(attempts, tokens, "every attempt under its own lease");
    assert!(
        sent.iter().all(|s| *s > 0),
        "each instance did part of the work: {sent:?}"
    );
    println!(
        "attempts per instance: {sent:?}; partner requests {}",
        stats.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_leaves_its_work_to_the_others() {
    const N: usize = 3_000;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let store = schema.open(Default::default()).await;
    // Slow answers keep many attempts in flight when the kill comes.
    let mock = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(40),
        Behavior::AcceptAndComplete,
    ))
    .await
    .unwrap();
    // The whole backlog first: the instances must never run dry before the
    // kill (enqueueing while they run can be slower than they are).
    enqueue_all(&store, N).await;
    let mut instances: Vec<Instance> = (0..3).map(|_| Instance::spawn(&schema, &mock)).collect();
    eventually(
        "the first instance is busy",
        Duration::from_secs(120),
        || async { instances[0].sent.load(Ordering::Relaxed) >= 100 },
    )
    .await;
    instances[0].kill();
    let in_flight_at_kill = count(&store, SubmissionState::InFlight).await;
    eventually(
        "every submission succeeded",
        Duration::from_secs(300),
        || async { count(&store, SubmissionState::Succeeded).await == N as i64 },
    )
    .await;
    drop(instances);

    let stats = mock.stats();
    assert_eq!(stats.distinct_keys, N as u64, "nothing lost");
    assert_eq!(stats.side_effects, N as u64, "one side effect per key");
    assert!(in_flight_at_kill > 0, "the kill interrupted attempts");
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
    assert!(
        expired > 0,
        "the dead instance's leases expired and were reclaimed"
    );
    assert_eq!(
        overlapping_leases(&schema).await,
        0,
        "never two live leases"
    );
}

/// One in-process host on the shared schema with the callback router on a
/// real port; `configure` adjusts its partner "lab".
async fn callback_host(
    schema: &Schema,
    mock: &MockPartner,
    configure: impl FnOnce(Partner) -> Partner,
) -> (Liaison, String) {
    let store = schema.open(Default::default()).await;
    let partner = configure(
        crate::dispatch::partner("lab", mock)
            .callbacks(JsonMatcher::builder(signer()).build().unwrap())
            .result_timeout(Duration::from_secs(120)),
    );
    let liaison = Liaison::builder(store)
        .partner(partner)
        .settings(crate::dispatch::quick_settings())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = liaison::http::callback_router(liaison.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (liaison, format!("http://{addr}/callbacks/lab"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_callback_delivered_to_two_instances_applies_once() {
    const SUBMISSIONS: usize = 20;
    const EACH: usize = 10;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::callback_later_with(
        Duration::from_millis(10),
        MockOutcome::Succeeded,
        CallbackMode::Never,
    ))
    .await
    .unwrap();
    let (a, url_a) = callback_host(&schema, &mock, |p| p).await;
    let (b, url_b) = callback_host(&schema, &mock, |p| p).await;
    let handle = a.start();
    let mut ids = Vec::new();
    for i in 0..SUBMISSIONS {
        ids.push(a.enqueue(claim("lab", i)).await.unwrap().submission.id);
    }
    let store = a.store().clone();
    eventually("all accepted", Duration::from_secs(60), || async {
        let mut all = true;
        for id in &ids {
            all &= store.get(*id).await.unwrap().state == SubmissionState::AwaitingResult;
        }
        all
    })
    .await;

    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (n, id) in ids.iter().enumerate() {
        let reference = store.get(*id).await.unwrap().external_ref.unwrap();
        let body =
            format!(r#"{{"reference":"{reference}","status":"succeeded","event_id":"evt-{n}"}}"#);
        let ts = chrono::Utc::now().timestamp();
        let msg = format!("msg_{n}");
        let signature = signer().sign(&msg, ts, body.as_bytes());
        // Interleave deliveries to the two instances.
        for k in 0..2 * EACH {
            let url = if k % 2 == 0 { &url_a } else { &url_b }.clone();
            let (client, body, signature, msg) =
                (client.clone(), body.clone(), signature.clone(), msg.clone());
            tasks.spawn(async move {
                client
                    .post(url)
                    .header("webhook-id", msg)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap().expect("answered"), 200);
    }
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let callbacks = store
        .list_callbacks(&CallbackFilter::default().limit(10_000))
        .await
        .unwrap();
    assert_eq!(
        callbacks.len(),
        SUBMISSIONS * 2 * EACH,
        "every delivery stored"
    );
    for id in &ids {
        let mine: Vec<_> = callbacks
            .iter()
            .filter(|c| c.submission_id == Some(*id))
            .collect();
        let applied = mine
            .iter()
            .filter(|c| c.disposition == Disposition::Applied)
            .count();
        let duplicate = mine
            .iter()
            .filter(|c| c.disposition == Disposition::Duplicate)
            .count();
        assert_eq!((applied, duplicate), (1, 2 * EACH - 1), "submission {id}");
        succeeded_once(&*store, *id).await;
    }
    drop(b);
}

/// A partner that calls back the moment it accepts: most callbacks arrive
/// before their acceptance is recorded, wait, and are matched by the
/// batches that record the acceptances, several of which are written at
/// once on PostgreSQL (`concurrent_completions`). Each is applied once,
/// none is left waiting, each submission changes state once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_that_beat_their_acceptance_apply_once_each() {
    const SUBMISSIONS: usize = 300;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::callback_later(
        Duration::ZERO,
        MockOutcome::Succeeded,
    ))
    .await
    .unwrap();
    mock.set_callback_signing(Some(signer()));
    let (liaison, url) = callback_host(&schema, &mock, |p| p.concurrency(32)).await;
    mock.set_callback_url(Some(url));
    let store = liaison.store().clone();
    assert!(
        store.concurrent_completions() > 1,
        "batches of results are written side by side"
    );

    let batch = (0..SUBMISSIONS).map(|i| claim("lab", i)).collect();
    liaison.enqueue_batch(batch).await.unwrap();
    let handle = liaison.start();
    eventually("all succeeded", Duration::from_secs(120), || async {
        count(&*store, SubmissionState::Succeeded).await == SUBMISSIONS as i64
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let callbacks = store
        .list_callbacks(&CallbackFilter::default().limit(10_000))
        .await
        .unwrap();
    assert_eq!(callbacks.len(), SUBMISSIONS, "one callback per submission");
    let waiting = callbacks
        .iter()
        .filter(|c| c.disposition == Disposition::Unmatched)
        .count();
    assert_eq!(waiting, 0, "none left waiting");
    let mut applied: Vec<_> = callbacks
        .iter()
        .filter(|c| c.disposition == Disposition::Applied)
        .filter_map(|c| c.submission_id)
        .collect();
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), SUBMISSIONS, "each applied to its own");
    for id in applied {
        succeeded_once(&*store, id).await;
    }
}

/// Hosts on `schema` with a poll interval of an hour: whatever they do
/// promptly, they did because of a wake-up.
fn deaf_to_polling(store: PostgresStore, mock: &MockPartner) -> Liaison {
    Liaison::builder(store)
        .partner(Partner::new("lab", sync_adapter(&mock.submit_url())).without_circuit())
        .settings(crate::dispatch::quick_settings().poll_interval(Duration::from_secs(3600)))
        .build()
        .unwrap()
}

async fn terminate_listeners(schema: &Schema) -> i64 {
    let c = client(&schema.url).await;
    c.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&format!("liaison-listen:{}", schema.name)],
    )
    .await
    .unwrap()
    .len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_enqueued_elsewhere_wakes_the_dispatcher_by_notify() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let worker = deaf_to_polling(schema.open(Default::default()).await, &mock);
    let handle = worker.start();
    // Once it listens and its first (empty) claim has passed, only a
    // wake-up finds new work.
    let c = client(&schema.url).await;
    eventually("the instance listens", Duration::from_secs(30), || async {
        c.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            &[&format!("liaison-listen:{}", schema.name)],
        )
        .await
        .is_ok_and(|rows| !rows.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = schema.open(Default::default()).await;
    enqueue_all(&other, 50).await;
    eventually(
        "work from another store dispatched",
        Duration::from_secs(60),
        || async { count(&other, SubmissionState::Succeeded).await == 50 },
    )
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_completes_while_the_listen_connection_keeps_dropping() {
    const N: usize = 2_000;
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let worker = deaf_to_polling(schema.open(Default::default()).await, &mock);
    let handle = worker.start();
    let other = schema.open(Default::default()).await;
    let mut terminated = 0;
    for round in 0..20 {
        let batch = (round * N / 20..(round + 1) * N / 20)
            .map(|i| claim("lab", i))
            .collect();
        other.enqueue_batch(batch).await.unwrap();
        terminated += terminate_listeners(&schema).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(
        "every submission succeeded",
        Duration::from_secs(120),
        || async { count(&other, SubmissionState::Succeeded).await == N as i64 },
    )
    .await;
    assert!(
        terminated >= 5,
        "the LISTEN connection was dropped {terminated} times"
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(mock.stats().side_effects, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_polling_still_finds_the_work() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let c = client(&schema.url).await;
    c.batch_execute(&format!(
        "ALTER TABLE {}.liaison_submissions DISABLE TRIGGER liaison_submissions_wake",
        schema.name
    ))
    .await
    .unwrap();
    let worker = Liaison::builder(schema.open(Default::default()).await)
        .partner(Partner::new("lab", sync_adapter(&mock.submit_url())).without_circuit())
        .settings(crate::dispatch::quick_settings().poll_interval(Duration::from_millis(200)))
        .build()
        .unwrap();
    let handle = worker.start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Enqueued in a host's transaction: only the (disabled) trigger would
    // notify; a store sends hints for its own enqueues only.
    let other = schema.open(Default::default()).await;
    let mut host = client(&schema.url).await;
    let tx = host.transaction().await.unwrap();
    let batch = (0..20).map(|i| claim("lab", i)).collect();
    other
        .enqueue_batch_in_transaction(&tx, batch)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    eventually("work found by polling", Duration::from_secs(60), || async {
        count(&other, SubmissionState::Succeeded).await == 20
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeups_name_the_partner_and_stay_in_their_schema() {
    let (Some(mine), Some(theirs)) = (Schema::create().await, Schema::create().await) else {
        return;
    };
    let store = mine.open(Default::default()).await;
    let mut wakeups = store.wakeups().expect("PostgreSQL sends wake-ups");
    // Connected and listening: everything not heard before is announced.
    let first = tokio::time::timeout(Duration::from_secs(30), wakeups.next())
        .await
        .expect("listening");
    assert_eq!(first, Some(Wake::All));

    let elsewhere = theirs.open(Default::default()).await;
    elsewhere.enqueue(claim("lab", 1)).await.unwrap();
    let other = mine.open(Default::default()).await;
    let queued = other.enqueue(claim("bank", 1)).await.unwrap();
    let wake = tokio::time::timeout(Duration::from_secs(30), wakeups.next())
        .await
        .expect("a wake-up");
    assert_eq!(
        wake,
        Some(Wake::Partner("bank".into())),
        "the other schema's enqueue is not heard here"
    );
    // A claim (queued -> in flight) is not work for anyone else.
    let leases = other
        .claim(
            liaison::store::ClaimRequest::new("bank", 1, Duration::from_secs(60)).at(other.now()),
        )
        .await
        .unwrap();
    assert_eq!(leases[0].submission.id, queued.submission.id);
    let nothing = tokio::time::timeout(Duration::from_millis(500), wakeups.next()).await;
    assert!(nothing.is_err(), "no wake-up for a claim: {nothing:?}");
}
