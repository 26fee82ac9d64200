//! Poison submissions end (issue 15): a payload that crashes its worker is
//! dead-lettered after a few expired leases in a row, under the problem
//! class `worker_crashed`, and everything else is delivered once.
//!
//! The crash test runs the host in a child process (this test binary re-run
//! with [`poison_child_entry`] selected, as the crash loop does) whose
//! adapter calls `std::process::abort()` on one payload; the parent
//! restarts the child after each death. The alert test crashes the attempt
//! inside the engine (the adapter panics: its task dies without reporting)
//! and follows the alert until the dead letters are recovered.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use liaison::engine::{Liaison, Partner};
use liaison::ops::alerts::{AlertEvent, ChannelSink, ProblemClass};
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{OutboxStore, ReapLimits};
use liaison::testing::{Behavior, MockPartner};
use liaison::{
    Actor, AttemptContext, AttemptOutcome, ErrorKind, HttpJsonAdapter, Outcome, PartnerAdapter,
    PartnerError, ResultMapping, Submission, SubmissionId, SubmissionState, SubmitOutcome,
};

use super::{claim, eventually, quick_settings};
use crate::reliability::{Backend, Spawned, child, log_tail};

/// The mock's submit URL, for the child.
const URL: &str = "LIAISON_POISON_CHILD_URL";
/// Submissions enqueued; `POISON` is the one that crashes its worker.
const N: usize = 12;
const POISON: usize = 7;

/// How a poisoned attempt crashes.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// The whole process (the child of the crash test).
    Abort,
    /// The attempt's task: it dies without reporting, its lease expires.
    Panic,
}

/// Sends through the HTTP adapter, except the payloads of `poison`, on
/// which it crashes (until `fixed`).
#[derive(Debug)]
struct Poisoned {
    inner: HttpJsonAdapter,
    poison: Vec<String>,
    crash: Crash,
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl PartnerAdapter for Poisoned {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        let claim = submission
            .payload
            .as_ref()
            .and_then(|p| p["claim"].as_str())
            .unwrap_or_default();
        if !self.fixed.load(Ordering::SeqCst) && self.poison.iter().any(|p| p == claim) {
            match self.crash {
                Crash::Abort => std::process::abort(),
                Crash::Panic => panic!("the worker crashed on {claim} (on purpose)"),
            }
        }
        self.inner.submit(ctx, submission).await
    }
}

/// "lab" on the mock (which completes synchronously), crashing on the
/// claims `poison`: short attempts, one at a time (so a crash cuts no other
/// attempt), attempts and age limits far away.
fn poisoned_partner(
    submit_url: &str,
    poison: &[usize],
    crash: Crash,
    fixed: Arc<AtomicBool>,
) -> Partner {
    let inner = HttpJsonAdapter::new(submit_url)
        .and_then(|a| a.status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?))
        .expect("adapter");
    let adapter = Poisoned {
        inner,
        poison: poison.iter().map(|i| format!("C-{i}")).collect(),
        crash,
        fixed,
    };
    Partner::new("lab", adapter)
        .retry(Fixed::new(Duration::from_millis(20)).unwrap())
        .limits(RetryLimits::new(1000, Duration::from_secs(600)).unwrap())
        .attempt_timeout(Duration::from_millis(500))
        .concurrency(1)
        .without_circuit()
}

/// The child's host: the engine on the parent's database with the partner
/// that aborts on claim `POISON`, the default crash limit, leases of 0.7 s
/// reaped every 0.1 s. Under a normal test run the variables are not set
/// and it returns at once.
#[test]
fn poison_child_entry() {
    let Ok(url) = std::env::var(URL) else {
        return;
    };
    let backend = Backend::from_env().expect("the parent passes the database");
    crate::reliability::runtime().block_on(async move {
        let store = backend.open().await;
        let partner = poisoned_partner(&url, &[POISON], Crash::Abort, Arc::default());
        let liaison = Liaison::builder_arc(store)
            .partner(partner)
            .settings(quick_settings().lease_margin(Duration::from_millis(200)))
            .build()
            .expect("engine");
        let _handle = liaison.start();
        // Work until the poison aborts this process, or the parent kills it.
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_aborts_its_worker_is_dead_lettered_after_three_kills_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite(dir.path().join("poison.db"));
    poison_loop(&backend, dir.path()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_aborts_its_worker_is_dead_lettered_after_three_kills_on_postgres() {
    let Some(schema) = crate::conformance::harness::pg::Schema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    poison_loop(&Backend::postgres(&schema), dir.path()).await;
    drop(schema);
}

/// Enqueue `N` claims, run children until the poison is dead-lettered and
/// the rest succeeded (restarting each that died), and check what happened.
async fn poison_loop(backend: &Backend, dir: &std::path::Path) {
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let store = backend.open().await;
    let enqueued = store
        .enqueue_batch((0..N).map(|i| claim("lab", i)).collect())
        .await
        .unwrap();
    let ids: Vec<SubmissionId> = enqueued.iter().map(|e| e.submission.id).collect();
    let poison = ids[POISON];
    let log = dir.join("children.log");
    let limit = Duration::from_secs(120);
    let started = Instant::now();
    let mut deaths = 0;
    'hosts: loop {
        let mut command = child("dispatch::poison::poison_child_entry", &log);
        backend.pass_to(&mut command);
        let mut host = Spawned::start(command.env(URL, mock.submit_url()));
        loop {
            if let Some(status) = host.try_wait().expect("try_wait") {
                assert_eq!(
                    status.signal(),
                    Some(6),
                    "a child ends only by the poison's abort (SIGABRT), not {status}:\n{}",
                    log_tail(&log)
                );
                deaths += 1;
                assert!(
                    deaths <= 3,
                    "the poison killed its worker a fourth time:\n{}",
                    log_tail(&log)
                );
                continue 'hosts;
            }
            if done(&*store, &ids, poison).await {
                host.kill().expect("SIGKILL");
                host.wait().expect("wait");
                break 'hosts;
            }
            assert!(
                started.elapsed() < limit,
                "not finished after {limit:?} ({deaths} deaths): {:?}\n{}",
                states(&*store, &ids).await,
                log_tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(deaths, 3, "dead-lettered after 3 kills");

    let dead = store.get(poison).await.unwrap();
    assert_eq!(dead.state, SubmissionState::DeadLettered);
    assert_eq!(dead.attempts, 3);
    let timeline = store.timeline(poison).await.unwrap();
    assert_eq!(
        timeline.last().unwrap().reason.as_deref(),
        Some("the worker crashed or hung on it 3 times")
    );
    let attempts = store.attempts(poison).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == Some(AttemptOutcome::LeaseExpired)),
        "{attempts:?}"
    );
    // Every other claim reached the partner once; the poison never did.
    let effects = mock.side_effects();
    for i in (0..N).filter(|i| *i != POISON) {
        let key = format!("C-{i}");
        assert_eq!(
            effects.iter().filter(|e| e.idempotency_key == key).count(),
            1,
            "{key}"
        );
        assert_eq!(
            store.get(ids[i]).await.unwrap().attempts,
            1,
            "{key}: sent once"
        );
    }
    assert_eq!(effects.len(), N - 1);
    assert_eq!(mock.stats().side_effects, (N - 1) as u64);
}

/// The poison dead-lettered and every other submission succeeded.
async fn done(store: &dyn OutboxStore, ids: &[SubmissionId], poison: SubmissionId) -> bool {
    for id in ids {
        let state = store.get(*id).await.expect("get").state;
        let wanted = if *id == poison {
            SubmissionState::DeadLettered
        } else {
            SubmissionState::Succeeded
        };
        if state != wanted {
            return false;
        }
    }
    true
}

async fn states(store: &dyn OutboxStore, ids: &[SubmissionId]) -> Vec<SubmissionState> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.get(*id).await.expect("get").state);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crash_alert_stays_open_until_its_dead_letters_are_recovered_on_sqlite() {
    let (_dir, store) = crate::support::store();
    crash_alert(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crash_alert_stays_open_until_its_dead_letters_are_recovered_on_postgres() {
    use crate::conformance::harness::Settings;
    let Some(schema) = crate::conformance::harness::pg::Schema::create().await else {
        return;
    };
    crash_alert(Arc::new(schema.open(Settings::default()).await)).await;
    drop(schema);
}

/// Two claims crash their attempt (a panic in the adapter) twice each, the
/// partner's crash limit: both dead-lettered, `worker_crashed` opens for the
/// host team; a replay (worker fixed) and a manual resolution close it.
async fn crash_alert(store: Arc<dyn OutboxStore>) {
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let partner = poisoned_partner(
        &mock.submit_url(),
        &[1, 3],
        Crash::Panic,
        Arc::clone(&fixed),
    )
    .concurrency(4)
    .max_lease_expiries(2);
    let (sink, mut notices) = ChannelSink::new(16);
    let liaison = Liaison::builder_arc(store)
        .partner(partner)
        .settings(quick_settings().lease_margin(Duration::from_millis(200)))
        .alert_sink(sink)
        .build()
        .unwrap();
    // Claim 5 shares an ordering key with poison 1: it waits behind it.
    let batch = (0..6)
        .map(|i| match i {
            1 | 5 => claim("lab", i).ordering_key("patient-7"),
            _ => claim("lab", i),
        })
        .collect();
    let ids: Vec<SubmissionId> = liaison
        .enqueue_batch(batch)
        .await
        .unwrap()
        .iter()
        .map(|e| e.submission.id)
        .collect();
    let (first, second) = (ids[1], ids[3]);
    let handle = liaison.start();
    let store = Arc::clone(liaison.store());
    eventually(
        "both poisons dead-lettered",
        Duration::from_secs(60),
        || {
            let store = Arc::clone(&store);
            async move {
                let mut n = 0;
                for id in [first, second] {
                    if store.get(id).await.unwrap().state == SubmissionState::DeadLettered {
                        n += 1;
                    }
                }
                n == 2
            }
        },
    )
    .await;
    for id in [first, second] {
        let s = store.get(id).await.unwrap();
        assert_eq!(s.attempts, 2);
        let timeline = store.timeline(id).await.unwrap();
        assert_eq!(
            timeline.last().unwrap().reason.as_deref(),
            Some("the worker crashed or hung on it 2 times")
        );
    }

    // The successor of the first is held behind the dead letter, and says so.
    let held = ids[5];
    assert_eq!(
        store.get(held).await.unwrap().state,
        SubmissionState::Queued
    );
    // (The reaper notes it right after the dead letter's commit.)
    eventually(
        "a held note on the successor",
        Duration::from_secs(10),
        || {
            let store = Arc::clone(&store);
            async move {
                store
                    .timeline(held)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.kind == liaison::EventKind::Held)
            }
        },
    )
    .await;
    let timeline = store.timeline(held).await.unwrap();
    let note = timeline
        .iter()
        .find(|e| e.kind == liaison::EventKind::Held)
        .unwrap();
    assert!(
        note.reason
            .as_deref()
            .unwrap_or_default()
            .contains(&first.to_string()),
        "{note:?}"
    );

    // Health: counted, and a reason in words.
    let window = Duration::from_secs(900);
    let report = liaison.health(window).await.unwrap();
    let lab = report.partners.iter().find(|p| p.partner == "lab").unwrap();
    assert_eq!(lab.worker_crashed, 2);
    assert!(
        lab.reasons.iter().any(
            |r| r == "2 submission(s) dead-lettered because the worker crashed or hung on them"
        ),
        "{:?}",
        lab.reasons
    );
    let metrics = liaison.metrics().render(&report);
    assert!(
        metrics.contains("liaison_poison_dead_letters_total{partner=\"lab\"} 2\n"),
        "{metrics}"
    );

    // The alert opens, for the host team.
    liaison.evaluate_alerts().await.unwrap();
    let open = |alerts: Vec<liaison::ops::alerts::Alert>| {
        alerts
            .into_iter()
            .find(|a| a.class == ProblemClass::WorkerCrashed && a.partner == "lab")
    };
    let alert = open(liaison.alerts(true).await.unwrap()).expect("worker_crashed opened");
    assert_eq!(alert.owner.name, "host team");
    assert!(
        alert.details.starts_with("2 submission(s)"),
        "{}",
        alert.details
    );
    // The notice goes out from whichever claims it first: this call or the
    // running engine's alert loop (then a moment later).
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&(AlertEvent::Opened, ProblemClass::WorkerCrashed)) {
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Some((event, a))) => seen.push((event, a.class)),
            _ => break,
        }
    }
    assert!(
        seen.contains(&(AlertEvent::Opened, ProblemClass::WorkerCrashed)),
        "{seen:?}"
    );

    // The host fixes its worker and replays one: delivered; one remains.
    fixed.store(true, Ordering::SeqCst);
    liaison
        .replay(first, Actor::person("ops"), "worker fixed")
        .await
        .unwrap();
    eventually(
        "the replayed poison and its successor delivered",
        Duration::from_secs(30),
        || {
            let store = Arc::clone(&store);
            async move {
                store.get(first).await.unwrap().state == SubmissionState::Succeeded
                    && store.get(held).await.unwrap().state == SubmissionState::Succeeded
            }
        },
    )
    .await;
    liaison.evaluate_alerts().await.unwrap();
    let alert = open(liaison.alerts(true).await.unwrap()).expect("still open: one remains");
    assert!(
        alert.details.starts_with("1 submission(s)"),
        "{}",
        alert.details
    );

    // The other is settled by hand: the alert resolves.
    liaison
        .resolve_manually(
            second,
            Outcome::succeeded(),
            Actor::person("ops"),
            "sent through the partner's portal",
        )
        .await
        .unwrap();
    liaison.evaluate_alerts().await.unwrap();
    assert!(open(liaison.alerts(true).await.unwrap()).is_none());
    let report = liaison.health(window).await.unwrap();
    let lab = report.partners.iter().find(|p| p.partner == "lab").unwrap();
    assert_eq!(lab.worker_crashed, 0);
    let mut resolved = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !resolved {
        match tokio::time::timeout_at(deadline, notices.recv()).await {
            Ok(Some((event, a))) => {
                resolved = event == AlertEvent::Resolved && a.class == ProblemClass::WorkerCrashed;
            }
            _ => break,
        }
    }
    assert!(resolved, "a Resolved notice went out");
    // The innocent claims went through once each.
    for i in [0, 2, 4] {
        assert_eq!(
            store.get(ids[i]).await.unwrap().state,
            SubmissionState::Succeeded
        );
    }
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_crash_limit_of_zero_or_above_the_maximum_is_refused() {
    let mock = MockPartner::start().await.unwrap();
    for n in [0, ReapLimits::MAX_LEASE_EXPIRIES + 1] {
        let (_dir, store) = crate::support::store();
        let err = Liaison::builder(store)
            .partner(super::partner("lab", &mock).max_lease_expiries(n))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{n}");
        assert!(
            matches!(&err, liaison::Error::InvalidInput { field, .. } if *field == "max_lease_expiries"),
            "{n}: {err:?}"
        );
    }
    let (_dir, store) = crate::support::store();
    Liaison::builder(store)
        .partner(super::partner("lab", &mock).max_lease_expiries(ReapLimits::MAX_LEASE_EXPIRIES))
        .build()
        .expect("the maximum itself is accepted");
}
