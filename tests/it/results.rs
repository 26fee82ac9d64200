//! The partner's answers delivered into the host: a `ResultHandler` over
//! real HTTP against `MockPartner`, and its failure paths (error, panic,
//! hang, a slow result holding its ordering key).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use liaison::engine::{Liaison, Partner};
use liaison::ops::alerts::ProblemClass;
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{DeliveryFilter, OutboxStore, SqliteStore};
use liaison::testing::{Behavior, MockPartner};
use liaison::{
    Actor, BoxError, DeliveryState, EventKind, FinishedSubmission, HttpJsonAdapter, NewSubmission,
    ResultHandler, ResultMapping, SubmissionState,
};
use serde_json::json;
use tokio::sync::Notify;

use crate::dispatch::quick_settings;

/// The handler calls that took a result, per idempotency key: the final
/// state and document each saw.
type Applied = BTreeMap<String, Vec<(SubmissionState, Option<serde_json::Value>)>>;

/// What the host saw: per idempotency key, each handler call that
/// succeeded, with the final state and document.
#[derive(Debug, Default)]
struct Host {
    applied: Mutex<Applied>,
    order: Mutex<Vec<String>>,
    calls: AtomicU32,
}

impl Host {
    fn applied(&self) -> Applied {
        self.applied.lock().unwrap().clone()
    }

    fn record(&self, finished: &FinishedSubmission) {
        self.order
            .lock()
            .unwrap()
            .push(finished.submission.idempotency_key.clone());
        self.applied
            .lock()
            .unwrap()
            .entry(finished.submission.idempotency_key.clone())
            .or_default()
            .push((finished.final_state(), finished.document().cloned()));
    }
}

/// A handler that behaves as `script` says on each call (by call number,
/// from 1), then takes the result.
#[derive(Debug, Clone)]
struct Scripted {
    host: Arc<Host>,
    script: fn(u32) -> Step,
    gate: Arc<Notify>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Take,
    Fail,
    Panic,
    Hang,
    /// Wait until the gate opens, then take it.
    Gate,
}

#[async_trait]
impl ResultHandler for Scripted {
    async fn handle(&self, finished: &FinishedSubmission) -> Result<(), BoxError> {
        let call = self.host.calls.fetch_add(1, Ordering::SeqCst) + 1;
        match (self.script)(call) {
            Step::Take => {}
            Step::Fail => return Err("the host's database is locked".into()),
            Step::Panic => panic!("the host's handler crashed"),
            Step::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
            Step::Gate => {
                if finished.submission.idempotency_key == "A-1" {
                    self.gate.notified().await;
                }
            }
        }
        self.host.record(finished);
        Ok(())
    }
}

fn partner(mock: &MockPartner, handler: Scripted, timeout: Duration) -> Partner {
    clearinghouse(mock, 3)
        .attempt_timeout(timeout)
        .results(handler)
}

/// The mock clearinghouse answering synchronously, with quick retries and
/// `attempts` attempts per submission and per delivery; no result handler.
fn clearinghouse(mock: &MockPartner, attempts: u32) -> Partner {
    let adapter = HttpJsonAdapter::new(&mock.submit_url())
        .unwrap()
        .status_pointer(
            "/status",
            ResultMapping::new(["succeeded"], ["failed"]).unwrap(),
        )
        .unwrap();
    Partner::new("clearinghouse", adapter)
        .retry(Fixed::new(Duration::from_millis(20)).unwrap())
        .limits(RetryLimits::new(attempts, Duration::from_secs(120)).unwrap())
        .without_circuit()
}

async fn hub(
    behavior: Behavior,
    script: fn(u32) -> Step,
) -> (MockPartner, Liaison, Arc<Host>, Arc<Notify>) {
    hub_with(behavior, script, Duration::from_millis(500)).await
}

async fn hub_with(
    behavior: Behavior,
    script: fn(u32) -> Step,
    timeout: Duration,
) -> (MockPartner, Liaison, Arc<Host>, Arc<Notify>) {
    let mock = MockPartner::start_with(behavior).await.unwrap();
    let host = Arc::new(Host::default());
    let gate = Arc::new(Notify::new());
    let handler = Scripted {
        host: Arc::clone(&host),
        script,
        gate: Arc::clone(&gate),
    };
    let store = SqliteStore::open_temporary().unwrap();
    let liaison = Liaison::builder(store)
        .partner(partner(&mock, handler, timeout))
        .settings(quick_settings())
        .build()
        .unwrap();
    (mock, liaison, host, gate)
}

fn claim(key: &str, ordering: &str) -> NewSubmission {
    NewSubmission::new("clearinghouse", "claim.submit", json!({ "claim": key }))
        .idempotency_key(key)
        .ordering_key(ordering)
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reasons of a submission's journaled delivery failures, in order.
async fn delivery_failures(store: &dyn OutboxStore, id: liaison::SubmissionId) -> Vec<String> {
    store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::ResultDeliveryFailed)
        .filter_map(|e| e.reason)
        .collect()
}

async fn deliveries(store: &Arc<dyn OutboxStore>, state: DeliveryState) -> usize {
    store
        .deliveries(&DeliveryFilter::default().state(state))
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_results_reach_the_handler_once_with_their_document() {
    let (mock, liaison, host, _) = hub(Behavior::AcceptAndComplete, |_| Step::Take).await;
    let handle = liaison.start();
    for i in 0..5 {
        liaison
            .enqueue(claim(&format!("C-{i}"), &format!("o-{i}")))
            .await
            .unwrap();
    }
    let store = liaison.store().clone();
    eventually("five delivered", || async {
        deliveries(&store, DeliveryState::Delivered).await == 5
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let applied = host.applied();
    assert_eq!(applied.len(), 5, "{applied:?}");
    for (key, calls) in &applied {
        assert_eq!(calls.len(), 1, "{key} applied {calls:?}");
        let (state, document) = &calls[0];
        assert_eq!(*state, SubmissionState::Succeeded);
        let document = document
            .as_ref()
            .expect("the partner's answer is the document");
        assert_eq!(document["status"], "succeeded", "{document}");
        assert!(document["reference"].as_str().unwrap().starts_with("MP-"));
    }
    assert_eq!(mock.stats().side_effects, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_then_parked_and_a_rerun_delivers_once() {
    // Calls 1-3 fail (the partner's limit is 3 attempts); the re-run's call
    // takes it.
    let (_mock, liaison, host, _) = hub(Behavior::AcceptAndComplete, |call| {
        if call <= 3 { Step::Fail } else { Step::Take }
    })
    .await;
    let handle = liaison.start();
    let id = liaison
        .enqueue(claim("C-1", "o-1"))
        .await
        .unwrap()
        .submission
        .id;
    let store = liaison.store().clone();
    eventually("parked", || async {
        deliveries(&store, DeliveryState::Parked).await == 1
    })
    .await;
    assert!(host.applied().is_empty());
    let parked = liaison
        .deliveries(&DeliveryFilter::default().state(DeliveryState::Parked))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(parked.attempts, 3);
    assert!(
        parked
            .last_error
            .as_deref()
            .unwrap()
            .contains("database is locked"),
        "{parked:?}"
    );
    // A re-run without a reason is refused.
    assert!(
        liaison
            .rerun_delivery(parked.id, Actor::person("ops"), " ")
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    liaison
        .rerun_delivery(parked.id, Actor::person("ops"), "unlocked the claims table")
        .await
        .unwrap();
    eventually("delivered after the re-run", || async {
        deliveries(&store, DeliveryState::Delivered).await == 1
    })
    .await;
    liaison.evaluate_alerts().await.unwrap();
    assert!(
        !store
            .alerts(true, 100)
            .await
            .unwrap()
            .iter()
            .any(|a| a.class == ProblemClass::ResultsNotDelivered),
        "resolved once delivered"
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(host.applied()["C-1"].len(), 1);
    let kinds: Vec<EventKind> = store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.as_str().starts_with("result_"))
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::ResultDeliveryFailed,
            EventKind::ResultDeliveryFailed,
            EventKind::ResultDeliveryParked,
            EventKind::ResultDeliveryRerun,
            EventKind::ResultDelivered,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_or_hanging_handler_is_retried_and_delivers_once() {
    let (_mock, liaison, host, _) = hub(Behavior::AcceptAndComplete, |call| match call {
        1 => Step::Panic,
        2 => Step::Hang,
        _ => Step::Take,
    })
    .await;
    let handle = liaison.start();
    liaison.enqueue(claim("C-1", "o-1")).await.unwrap();
    let store = liaison.store().clone();
    eventually("delivered on the third call", || async {
        deliveries(&store, DeliveryState::Delivered).await == 1
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(host.applied()["C-1"].len(), 1);
    let delivered = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(delivered.attempts, 3, "{delivered:?}");
    let errors = delivery_failures(&*store, delivered.submission_id).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("panicked"), "{errors:?}");
    assert!(errors[1].contains("did not finish within"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_result_holds_back_its_ordering_key_only() {
    let (_mock, liaison, host, gate) = hub_with(
        Behavior::AcceptAndComplete,
        |_| Step::Gate,
        Duration::from_secs(30),
    )
    .await;
    let handle = liaison.start();
    liaison.enqueue(claim("A-1", "patient-a")).await.unwrap();
    liaison.enqueue(claim("A-2", "patient-a")).await.unwrap();
    liaison.enqueue(claim("B-1", "patient-b")).await.unwrap();
    let store = liaison.store().clone();
    // B-1 goes while A-1's handler waits; A-2 waits behind A-1.
    eventually("B-1 delivered", || async {
        host.applied().contains_key("B-1")
    })
    .await;
    eventually("both of patient-a finished", || async {
        liaison
            .store()
            .list(&liaison::store::ListFilter::default().state(SubmissionState::Succeeded))
            .await
            .unwrap()
            .len()
            == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!host.applied().contains_key("A-2"), "{:?}", host.applied());
    gate.notify_one();
    eventually("all delivered", || async {
        deliveries(&store, DeliveryState::Delivered).await == 3
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    let order = host.order.lock().unwrap().clone();
    assert_eq!(order, ["B-1", "A-1", "A-2"]);
}

/// The host's `claims` table on the outbox's own file, written by a
/// transactional handler that fails (after writing) on its first attempt
/// and panics (after writing) on its second.
#[derive(Debug)]
struct ClaimsTable {
    calls: Arc<AtomicU32>,
}

impl liaison::store::SqliteResultHandler for ClaimsTable {
    fn handle(
        &self,
        conn: &liaison::rusqlite::Connection,
        finished: &FinishedSubmission,
    ) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        // By delivery attempt, not by call: the writer may run a failed
        // operation twice within one attempt (its group is retried with
        // savepoints), and must see the same thing both times.
        let call = finished.delivery.attempts;
        conn.execute(
            "INSERT INTO claims (claim_id, status, reference) VALUES (?1, ?2, ?3)",
            liaison::rusqlite::params![
                finished.submission.idempotency_key,
                finished.final_state().as_str(),
                finished
                    .document()
                    .and_then(|d| d["reference"].as_str())
                    .map(str::to_owned),
            ],
        )?;
        match call {
            1 => Err("the host's validation refused it".into()),
            2 => panic!("the host's handler crashed after writing"),
            _ => Ok(()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_handler_writes_each_result_once_and_rolls_back_with_its_failures() {
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.db");
    let store = SqliteStore::open(&path).unwrap();
    liaison::rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE claims (claim_id TEXT PRIMARY KEY, status TEXT NOT NULL, reference TEXT)",
        )
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let partner = clearinghouse(&mock, 5).results_in_sqlite(
        &store,
        ClaimsTable {
            calls: Arc::clone(&calls),
        },
    );
    let liaison = Liaison::builder(store.clone())
        .partner(partner)
        .settings(quick_settings())
        .build()
        .unwrap();
    let handle = liaison.start();
    let id = liaison
        .enqueue(claim("C-7", "o-7"))
        .await
        .unwrap()
        .submission
        .id;
    let shared: Arc<dyn OutboxStore> = Arc::new(store.clone());
    eventually("delivered on the third call", || async {
        deliveries(&shared, DeliveryState::Delivered).await == 1
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    // The two failed attempts' rows were rolled back (the insert would
    // otherwise have hit the primary key): one row, from the third attempt.
    assert!(calls.load(Ordering::SeqCst) >= 3);
    let rows: Vec<(String, String, Option<String>)> = liaison::rusqlite::Connection::open(&path)
        .unwrap()
        .prepare("SELECT claim_id, status, reference FROM claims")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "C-7");
    assert_eq!(rows[0].1, "succeeded");
    assert!(rows[0].2.as_deref().unwrap().starts_with("MP-"), "{rows:?}");
    let errors = delivery_failures(&store, id).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("validation refused"), "{errors:?}");
    assert!(errors[1].contains("panicked"), "{errors:?}");
}

/// The host's `claims` table on the store's PostgreSQL database, written in
/// the acknowledging transaction by a handler that fails (after writing),
/// then panics (after writing), then takes the result.
#[cfg(feature = "postgres")]
#[derive(Debug)]
struct PgClaimsTable {
    calls: Arc<AtomicU32>,
}

#[cfg(feature = "postgres")]
#[async_trait]
impl liaison::store::PostgresResultHandler for PgClaimsTable {
    async fn handle(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        finished: &FinishedSubmission,
    ) -> Result<(), BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let call = finished.delivery.attempts;
        tx.execute(
            "INSERT INTO claims (claim_id, status) VALUES ($1, $2)",
            &[
                &finished.submission.idempotency_key,
                &finished.final_state().as_str(),
            ],
        )
        .await?;
        match call {
            1 => Err("the host's validation refused it".into()),
            2 => panic!("the host's handler crashed after writing"),
            _ => Ok(()),
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_postgres_handler_writes_each_result_once_and_rolls_back_with_its_failures()
{
    use crate::conformance::harness::Settings;
    use crate::conformance::harness::pg::{Schema, client};
    let Some(schema) = Schema::create().await else {
        return;
    };
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let store = schema.open(Settings::default()).await;
    let host = client(&schema.url).await;
    host.batch_execute(&format!(
        "CREATE TABLE {}.claims (claim_id TEXT PRIMARY KEY, status TEXT NOT NULL)",
        schema.name
    ))
    .await
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let partner = clearinghouse(&mock, 5).results_in_postgres(
        &store,
        PgClaimsTable {
            calls: Arc::clone(&calls),
        },
    );
    let liaison = Liaison::builder(store.clone())
        .partner(partner)
        .settings(quick_settings())
        .build()
        .unwrap();
    let handle = liaison.start();
    let id = liaison
        .enqueue(claim("C-8", "o-8"))
        .await
        .unwrap()
        .submission
        .id;
    let shared: Arc<dyn OutboxStore> = Arc::new(store.clone());
    eventually("delivered on the third call", || async {
        deliveries(&shared, DeliveryState::Delivered).await == 1
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let rows = host
        .query(
            &format!("SELECT claim_id, status FROM {}.claims", schema.name),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the failed calls' rows were rolled back");
    assert_eq!(rows[0].get::<_, String>(0), "C-8");
    assert_eq!(rows[0].get::<_, String>(1), "succeeded");
    let errors = delivery_failures(&store, id).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("validation refused"), "{errors:?}");
    assert!(errors[1].contains("panicked"), "{errors:?}");
}
