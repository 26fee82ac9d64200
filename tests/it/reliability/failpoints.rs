//! Failpoints (feature `failpoints`, the `fail` crate): a host in a child
//! process crashes — `std::process::abort()`, no unwinding, no cleanup — at
//! each named place where a crash is most dangerous, and a host restarted
//! on the same file without failpoints must bring every submission to its
//! correct terminal state with at most one side effect per key at the
//! partner.
//!
//! | failpoint | where |
//! |---|---|
//! | `liaison::claim::committed` | the claim is committed, no request sent |
//! | `liaison::attempt::answered` | the partner answered, nothing recorded |
//! | `liaison::complete::before_commit` | the result is written in the open transaction |
//! | `liaison::completer::record` | a batch of results is handed to its task, nothing written (a panic, not a crash) |
//! | `liaison::callback::before_commit` | a callback is stored and its report applied in the open transaction |
//! | `liaison::migrate::applied` | a schema migration ran in the open transaction |
//!
//! The backend-independent cases and the PostgreSQL store's own failpoints
//! (the same names, in `src/store/postgres/`) run on PostgreSQL too, each on
//! a schema of its own (skipped with a notice without `LIAISON_TEST_PG_URL`);
//! there "consistent" also means the state counters did not drift
//! ([`Backend::check`]).
//!
//! The child is this same test binary running [`failpoint_child_entry`]. It
//! reads `FAILPOINTS` the `fail` way ([`fail::FailScenario::setup`]); a
//! crash is `LIAISON_FP_ABORT=<failpoint>` (a callback calling `abort`, which
//! `FAILPOINTS` cannot express); `LIAISON_FP_RESUME=<failpoint>` removes that
//! failpoint (ending a `pause`) when a line arrives on stdin.

use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use liaison::rusqlite;
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};

use super::{
    Audit, Backend, Lab, Spawned, child, exited, free_port, integrity, lab_partner, log_tail,
    signer, until,
};
use crate::dispatch::claim;

pub const URL: &str = "LIAISON_FP_URL";
pub const PORT: &str = "LIAISON_FP_PORT";
pub const COUNT: &str = "LIAISON_FP_COUNT";
pub const CONCURRENCY: &str = "LIAISON_FP_CONCURRENCY";
pub const ABORT: &str = "LIAISON_FP_ABORT";
pub const RESUME: &str = "LIAISON_FP_RESUME";
pub const RESULT_TIMEOUT: &str = "LIAISON_FP_RESULT_TIMEOUT_MS";

/// SIGABRT: the child crashed where the failpoint said.
const SIGABRT: i32 = 6;

/// The child process's work: set the failpoints up, open the file, run the
/// host, enqueue `C-0 .. C-{count-1}`, and work until killed or crashed.
/// Under a normal test run the variables are not set and it returns at once.
#[test]
fn failpoint_child_entry() {
    let Some(backend) = Backend::from_env() else {
        return;
    };
    let var = |name: &str| std::env::var(name).expect(name);
    let url = var(URL);
    let count: usize = var(COUNT).parse().expect("count");
    let port: Option<u16> = std::env::var(PORT).ok().map(|p| p.parse().expect("port"));
    let concurrency: usize = std::env::var(CONCURRENCY).map_or(8, |c| c.parse().expect("n"));
    let _scenario = fail::FailScenario::setup();
    if let Ok(name) = std::env::var(ABORT) {
        fail::cfg_callback(name, || std::process::abort()).expect("failpoint");
    }
    if let Ok(name) = std::env::var(RESUME) {
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            fail::remove(&name);
        });
    }
    super::runtime().block_on(async move {
        let store = backend.open().await;
        let mut partner = lab_partner(&url).concurrency(concurrency);
        if let Ok(ms) = std::env::var(RESULT_TIMEOUT) {
            partner = partner.result_timeout(Duration::from_millis(ms.parse().expect("ms")));
        }
        let lab = Lab::start_with(store, partner, port).await;
        let batch = (0..count).map(|i| claim("lab", i)).collect();
        lab.liaison.enqueue_batch(batch).await.expect("enqueue");
        std::future::pending::<()>().await;
    });
}

/// One crash scenario: what the partner does and whether the host receives
/// callbacks.
struct Scenario {
    failpoint: &'static str,
    behavior: Behavior,
    count: usize,
    callbacks: bool,
    /// The hosts' result deadline, when not the usual 1 s.
    result_timeout: Option<Duration>,
}

/// [`crash_and_recover`] on a SQLite file.
async fn on_sqlite(scenario: Scenario) -> Audit {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite(dir.path().join("fp.db"));
    crash_and_recover(&backend, dir.path(), scenario).await
}

/// A PostgreSQL schema of the test's own, not created yet (the child's
/// store creates and migrates it), dropped at the end; `None` after a
/// notice without `LIAISON_TEST_PG_URL`.
#[cfg(feature = "postgres")]
pub fn fresh_schema() -> Option<crate::conformance::harness::pg::Schema> {
    Some(crate::conformance::harness::pg::Schema {
        url: crate::conformance::harness::pg::url()?,
        name: format!("liaison_t_{}", uuid::Uuid::new_v4().simple()),
    })
}

/// [`crash_and_recover`] on a PostgreSQL schema of its own.
#[cfg(feature = "postgres")]
async fn on_postgres(scenario: Scenario) -> Option<Audit> {
    let schema = fresh_schema()?;
    let dir = tempfile::tempdir().unwrap();
    let audit = crash_and_recover(&Backend::postgres(&schema), dir.path(), scenario).await;
    drop(schema);
    Some(audit)
}

/// Crash a child at `failpoint`, check the database, restart without
/// failpoints, and check the recovery. Returns the final audit.
async fn crash_and_recover(backend: &Backend, dir: &std::path::Path, scenario: Scenario) -> Audit {
    let Scenario {
        failpoint,
        behavior,
        count,
        callbacks,
        result_timeout,
    } = scenario;
    let log = dir.join("child.log");
    let mock = MockPartner::start_with(behavior).await.unwrap();
    let port = callbacks.then(free_port);
    if let Some(port) = port {
        mock.set_callback_signing(Some(signer()));
        mock.set_callback_url(Some(format!("http://127.0.0.1:{port}/callbacks/lab")));
    }

    let mut command = child("reliability::failpoints::failpoint_child_entry", &log);
    backend.pass_to(&mut command);
    command
        .env(URL, mock.submit_url())
        .env(COUNT, count.to_string())
        .env(ABORT, failpoint);
    if let Some(port) = port {
        command.env(PORT, port.to_string());
    }
    if let Some(timeout) = result_timeout {
        command.env(RESULT_TIMEOUT, timeout.as_millis().to_string());
    }
    let mut crashed = Spawned::start(&mut command);
    let status = exited(&mut crashed, &log).await;
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the child must crash at {failpoint}, it ended with {status}\n{}",
        log_tail(&log)
    );
    assert_eq!(
        backend.check(),
        "ok",
        "consistency after the crash at {failpoint}"
    );
    let effects_at_crash = mock.stats().side_effects;
    // A callback is stored and settled in one transaction, answered after
    // its commit: the crash leaves none stored but unsettled, and the one
    // it interrupted got no 2xx.
    if callbacks {
        assert_eq!(
            backend.callbacks_in("received"),
            Vec::<String>::new(),
            "the crash left a callback stored but unsettled"
        );
        // The mock logs a POST once its answer (or the dropped connection)
        // reached it, which may be a moment after the child is gone.
        until(
            "the mock logs the callback the crash interrupted, unanswered",
            Duration::from_secs(10),
            || mock.callback_log().iter().any(|sent| !sent.delivered()),
        )
        .await;
    }

    // Restart without failpoints, in this process (none are configured here).
    let store = backend.open().await;
    let mut partner = lab_partner(&mock.submit_url());
    if let Some(timeout) = result_timeout {
        partner = partner.result_timeout(timeout);
    }
    let lab = Lab::start_with(store.clone(), partner, port).await;
    // Enqueueing again after a crash deduplicates: the host's own retry.
    let batch = (0..count).map(|i| claim("lab", i)).collect();
    lab.liaison.enqueue_batch(batch).await.expect("enqueue");
    // The partner sends again what the host did not answer with 2xx (the
    // mock sends each callback once; this is its retry).
    let retries = callbacks.then(|| tokio::spawn(partner_retries(mock.clone(), port)));
    until(
        &format!("recovery after a crash at {failpoint}"),
        Duration::from_secs(60),
        || {
            let audit = Audit::of(backend);
            audit.terminal() == count && !audit.callbacks.contains_key("received")
        },
    )
    .await;
    if let Some(retries) = retries {
        retries.abort();
    }
    lab.stop().await;
    drop(store);
    assert_eq!(backend.check(), "ok", "consistency after recovery");

    let audit = Audit::of(backend);
    if callbacks {
        // Results arrived by callback, none applied twice (`duplicates()`
        // below): the mock's second copies and the retries were recognised
        // as repeats. A submission in flight at the crash may instead be
        // finished by its re-sent attempt (the partner answers a retry with
        // the final result), its callbacks then repeats.
        let applied = audit.callbacks.get("applied").copied().unwrap_or(0);
        assert!((1..=count).contains(&applied), "{audit:?}");
        assert!(!audit.callbacks.contains_key("received"), "{audit:?}");
    }
    let stats = mock.stats();
    println!(
        "failpoint {failpoint} ({}): {count} submissions, {effects_at_crash} side effects at the crash, \
         after recovery {:?}, {} side effects for {} keys, callbacks {:?}",
        backend.label(),
        audit.by_state,
        stats.side_effects,
        stats.distinct_keys,
        audit.callbacks
    );
    assert_eq!(audit.missing(count), 0, "lost submissions");
    assert_eq!(audit.total(), count);
    assert_eq!(audit.in_state("succeeded"), count, "{:?}", audit.by_state);
    assert_eq!(audit.duplicates(), 0, "{audit:?}");
    assert_eq!(stats.side_effects, count as u64, "one side effect per key");
    let mut keys: Vec<_> = mock
        .side_effects()
        .into_iter()
        .map(|e| e.idempotency_key)
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), count, "one side effect per key");
    audit
}

/// The partner's retries: every callback the mock sent that the host did
/// not answer with 2xx is posted again, as it was (body and signed
/// headers), every 100 ms until the host answers 2xx. Runs until aborted.
async fn partner_retries(mock: MockPartner, port: Option<u16>) {
    let url = format!("http://127.0.0.1:{}/callbacks/lab", port.expect("a port"));
    let client = reqwest::Client::new();
    let mut done = std::collections::HashSet::new();
    loop {
        for sent in mock.callback_log() {
            let key = (sent.at, sent.body.clone());
            if sent.delivered() || done.contains(&key) {
                continue;
            }
            let mut request = client.post(&url).body(sent.body.clone());
            for (name, value) in &sent.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Ok(response) = request.send().await
                && response.status().is_success()
            {
                done.insert(key);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_claim_commits_recovers() {
    let audit = on_sqlite(Scenario {
        failpoint: "liaison::claim::committed",
        behavior: Behavior::AcceptAndComplete,
        count: 20,
        callbacks: false,
        result_timeout: None,
    })
    .await;
    assert_eq!(audit.stale_results, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_partner_answered_recovers_with_one_side_effect() {
    on_sqlite(Scenario {
        failpoint: "liaison::attempt::answered",
        behavior: Behavior::AcceptAndComplete,
        count: 20,
        callbacks: false,
        result_timeout: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_result_commits_recovers_with_one_side_effect() {
    on_sqlite(Scenario {
        failpoint: "liaison::complete::before_commit",
        behavior: Behavior::AcceptAndComplete,
        count: 20,
        callbacks: false,
        result_timeout: None,
    })
    .await;
}

/// A host in a child process on a SQLite file of its own, with `failpoints`
/// (the `fail` way, e.g. a `panic` action) and `count` submissions, against
/// a mock partner that accepts and completes.
struct PanickingHost {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    backend: Backend,
    log: std::path::PathBuf,
    mock: MockPartner,
    child: Spawned,
}

impl PanickingHost {
    async fn start(failpoints: &str, count: usize) -> PanickingHost {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("fp.db");
        let backend = Backend::Sqlite(db.clone());
        let log = dir.path().join("child.log");
        let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
            .await
            .unwrap();
        let mut command = child("reliability::failpoints::failpoint_child_entry", &log);
        backend.pass_to(&mut command);
        let child = Spawned::start(
            command
                .env(URL, mock.submit_url())
                .env(COUNT, count.to_string())
                .env("FAILPOINTS", failpoints),
        );
        PanickingHost {
            _dir: dir,
            db,
            backend,
            log,
            mock,
            child,
        }
    }
}

/// A panic in the task writing a batch of results (a bug of ours, say) is
/// contained: the engine goes on, the batch's attempts end unanswered,
/// their leases expire and the work is sent again under its key, and every
/// submission succeeds once, with one side effect at the partner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_result_batch_is_contained_and_its_work_retried() {
    let count = 20;
    let PanickingHost {
        _dir,
        backend,
        log,
        mock,
        child: mut running,
        ..
    } = PanickingHost::start("liaison::completer::record=1*panic", count).await;
    until(
        "every submission succeeds after the panicked batch",
        Duration::from_secs(60),
        || Audit::of(&backend).in_state("succeeded") == count,
    )
    .await;
    let still = running.try_wait().expect("child status");
    let _ = running.kill();
    let _ = running.wait();
    assert!(
        still.is_none(),
        "the panic ended the engine: {still:?}\n{}",
        log_tail(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("liaison::completer::record"),
        "the failpoint never fired, so nothing was tested:\n{}",
        log_tail(&log)
    );
    assert_eq!(backend.check(), "ok");
    let audit = Audit::of(&backend);
    assert_eq!(audit.total(), count);
    assert_eq!(audit.duplicates(), 0, "{audit:?}");
    // The panicked batch's work went out again: more attempts than
    // submissions, one side effect per key all the same.
    let stats = mock.stats();
    assert!(stats.requests > count as u64, "{stats:?}");
    assert_eq!(stats.side_effects, count as u64, "one side effect per key");
    assert_eq!(stats.distinct_keys, count as u64);
}

fn calling_back() -> Behavior {
    Behavior::callback_later_with(
        Duration::from_millis(30),
        MockOutcome::Succeeded,
        CallbackMode::Duplicate,
    )
}

/// A crash while a callback is stored and applied (one transaction) stores
/// nothing and answers nothing; the partner's retry is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_storing_and_applying_a_callback_stores_nothing_and_the_retry_applies() {
    on_sqlite(Scenario {
        failpoint: "liaison::callback::before_commit",
        behavior: calling_back(),
        count: 10,
        callbacks: true,
        // Longer than the recovery takes, so every result comes by callback.
        result_timeout: Some(Duration::from_secs(15)),
    })
    .await;
}

/// Migrations run in one transaction: a crash in the middle leaves the old
/// (here: empty) schema, and the next open migrates from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_migration_leaves_a_database_that_migrates_on_restart() {
    on_sqlite(Scenario {
        failpoint: "liaison::migrate::applied",
        behavior: Behavior::AcceptAndComplete,
        count: 5,
        callbacks: false,
        result_timeout: None,
    })
    .await;
}

/// Start a child on `backend` that crashes in its first migration, and wait
/// for the crash.
async fn crash_in_migration(backend: &Backend, log: &std::path::Path) {
    let mut command = child("reliability::failpoints::failpoint_child_entry", log);
    backend.pass_to(&mut command);
    let mut crashed = Spawned::start(
        command
            .env(URL, "http://127.0.0.1:9/submit")
            .env(COUNT, "0")
            .env(ABORT, "liaison::migrate::applied"),
    );
    let status = exited(&mut crashed, log).await;
    assert_eq!(status.signal(), Some(SIGABRT), "{}", log_tail(log));
}

/// The schema version `backend` records.
fn schema_version(backend: &Backend) -> i64 {
    let rows = backend
        .query(&["SELECT CAST(MAX(version) AS TEXT) FROM liaison_migrations"])
        .expect("migrated");
    rows[0][0][0].parse().expect("a version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_migration_commits_no_part_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fp.db");
    let log = dir.path().join("child.log");
    let backend = Backend::Sqlite(db.clone());
    crash_in_migration(&backend, &log).await;
    assert_eq!(integrity(&db), "ok");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name LIKE 'liaison_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "no table of the interrupted migration was kept");
    drop(conn);
    drop(backend.open().await);
    assert_eq!(schema_version(&backend), liaison::store::SCHEMA_VERSION);
}

/// `FAILPOINTS` with the `panic` action: the attempt's task panics after the
/// partner answered; the host keeps running, the lease expires, and the
/// same process sends again under the same key. No restart needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_attempt_is_retried_after_its_lease_expires() {
    let PanickingHost {
        _dir,
        db,
        backend,
        log,
        mock,
        child: mut host,
    } = PanickingHost::start("liaison::attempt::answered=3*panic", 10).await;
    until("every submission terminal", Duration::from_secs(60), || {
        Audit::of(&backend).terminal() == 10
    })
    .await;
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host survives a panicking attempt\n{}",
        log_tail(&log)
    );
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(integrity(&db), "ok");
    let audit = Audit::of(&backend);
    assert_eq!(audit.in_state("succeeded"), 10);
    assert_eq!(audit.duplicates(), 0);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let retried: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM liaison_submissions WHERE attempts > 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // At least the three panicked attempts were sent again (a very slow
    // machine could let another lease expire too).
    assert!(retried >= 3, "{retried} submissions retried");
    assert!(mock.stats().requests >= 13);
    assert_eq!(mock.stats().side_effects, 10, "one side effect per key");
}

/// A callback whose one transaction fails (here: the write panics, which
/// the SQLite writer rolls back and reports as an error) is answered with an
/// error, stored raw on its own as `received`, and settled by the deadline
/// round 10 s later: nothing inbound is lost, nothing applied twice. The
/// failpoint panics twice: a write that shared its group with others is run
/// again alone before it counts as failed, so one or two callbacks fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_transaction_fails_is_stored_raw_and_settled_later() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fp.db");
    let backend = Backend::Sqlite(db.clone());
    let log = dir.path().join("child.log");
    let mock = MockPartner::start_with(Behavior::callback_later_with(
        Duration::from_millis(30),
        MockOutcome::Succeeded,
        CallbackMode::Normal,
    ))
    .await
    .unwrap();
    let port = free_port();
    mock.set_callback_signing(Some(signer()));
    mock.set_callback_url(Some(format!("http://127.0.0.1:{port}/callbacks/lab")));
    let mut command = child("reliability::failpoints::failpoint_child_entry", &log);
    backend.pass_to(&mut command);
    let mut host = Spawned::start(
        command
            .env(URL, mock.submit_url())
            .env(COUNT, "10")
            .env(PORT, port.to_string())
            // Longer than the deadline round's 10 s: the stored callback,
            // not a status poll, finishes its submission.
            .env(RESULT_TIMEOUT, "30000")
            .env("FAILPOINTS", "liaison::callback::before_commit=2*panic"),
    );
    until("every submission terminal", Duration::from_secs(60), || {
        Audit::of(&backend).terminal() == 10
    })
    .await;
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host survives\n{}",
        log_tail(&log)
    );
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(integrity(&db), "ok");
    assert_eq!(backend.check(), "ok");
    let audit = Audit::of(&backend);
    assert_eq!(audit.in_state("succeeded"), 10, "{audit:?}");
    assert_eq!(audit.duplicates(), 0, "{audit:?}");
    // One or two callbacks were answered with an error; every one of the
    // ten was stored and applied, those by the deadline round.
    let sent = mock.callback_log();
    assert_eq!(sent.len(), 10);
    let failed = sent.iter().filter(|s| !s.delivered()).count();
    assert!((1..=2).contains(&failed), "{failed} failed");
    assert_eq!(
        audit.callbacks.get("applied").copied(),
        Some(10),
        "{audit:?}"
    );
    assert_eq!(audit.callbacks.len(), 1, "{audit:?}");
}

/// The same crashes on PostgreSQL: the backend-independent failpoints
/// (engine code) and the PostgreSQL store's own, each on a schema of its own.
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_the_claim_commits_recovers() {
        let Some(audit) = on_postgres(Scenario {
            failpoint: "liaison::claim::committed",
            behavior: Behavior::AcceptAndComplete,
            count: 20,
            callbacks: false,
            result_timeout: None,
        })
        .await
        else {
            return;
        };
        assert_eq!(audit.stale_results, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_the_partner_answered_recovers_with_one_side_effect() {
        on_postgres(Scenario {
            failpoint: "liaison::attempt::answered",
            behavior: Behavior::AcceptAndComplete,
            count: 20,
            callbacks: false,
            result_timeout: None,
        })
        .await;
    }

    /// `src/store/postgres/lease.rs`: the result, the attempt row and the
    /// events are written in the open transaction; the crash drops the
    /// connection and PostgreSQL rolls all of it back (the counters too:
    /// their trigger runs at commit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_the_result_commits_recovers_with_one_side_effect() {
        on_postgres(Scenario {
            failpoint: "liaison::complete::before_commit",
            behavior: Behavior::AcceptAndComplete,
            count: 20,
            callbacks: false,
            result_timeout: None,
        })
        .await;
    }

    /// The callback is stored and its report applied to its submission in
    /// one open transaction: the crash rolls all of it back, no 2xx went
    /// out, and the partner's retry is applied once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_while_storing_and_applying_a_callback_stores_nothing_and_the_retry_applies() {
        on_postgres(Scenario {
            failpoint: "liaison::callback::before_commit",
            behavior: calling_back(),
            count: 10,
            callbacks: true,
            result_timeout: Some(Duration::from_secs(15)),
        })
        .await;
    }

    /// `src/store/postgres/migrate.rs`: the schema itself is created in the
    /// migration's transaction, so after the crash it does not exist; the
    /// next connect creates and migrates it, and work proceeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_during_migration_commits_no_part_of_it() {
        let Some(schema) = fresh_schema() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::postgres(&schema);
        crash_in_migration(&backend, &dir.path().join("child.log")).await;
        let c = crate::conformance::harness::pg::client(&schema.url).await;
        let kept: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM pg_namespace WHERE nspname = $1",
                &[&schema.name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, 0, "no part of the interrupted migration was kept");
        drop(backend.open().await);
        assert_eq!(schema_version(&backend), liaison::store::SCHEMA_VERSION);
        assert_eq!(backend.check(), "ok");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_during_migration_leaves_a_database_that_migrates_on_restart() {
        on_postgres(Scenario {
            failpoint: "liaison::migrate::applied",
            behavior: Behavior::AcceptAndComplete,
            count: 5,
            callbacks: false,
            result_timeout: None,
        })
        .await;
    }
}
