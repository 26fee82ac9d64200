//! The crash loop (issue 8): a host — the dispatcher AND the callback
//! receiver — runs in a child process against `MockPartner`, which accepts
//! asynchronously and calls back twice (a duplicate) to a fixed port. The
//! child is killed with SIGKILL at random moments and restarted on the same
//! file, again and again. Callbacks sent while the receiver is dead are lost
//! (the mock sends each once), and the deadline watcher's poll finishes that
//! work.
//!
//! The host also writes every finished submission's result into a table of
//! its own on the same database (`host_results`), with the transactional
//! result handler (SQLite's writer transaction, PostgreSQL's transaction):
//! kills land in the middle of deliveries too.
//!
//! Pass: nothing lost (every key the child confirmed as enqueued is in the
//! database), every submission terminal, one side effect per key at the
//! partner, no submission settled twice and no callback applied twice, and
//! the database consistent after every kill ([`Backend::check`]): no
//! submission in flight without a lease token, and `PRAGMA integrity_check`
//! ok (SQLite) or the trigger-kept state counters equal to a count of the
//! submissions (PostgreSQL); and every result delivered, in the host's
//! table exactly once (none missing, none applied twice).
//!
//! The same loop runs on a SQLite file and on a PostgreSQL schema of its
//! own (skipped with a notice without `LIAISON_TEST_PG_URL`).
//! Scale with `LIAISON_CRASH_KILLS` (default 50) and
//! `LIAISON_CRASH_SUBMISSIONS` (default 5000), on PostgreSQL
//! `LIAISON_CRASH_PG_KILLS` (default 20) and `LIAISON_CRASH_PG_SUBMISSIONS`
//! (default 2000); `LIAISON_CRASH_SEED` repeats a run's kill schedule. The
//! figures are printed (`--nocapture` shows them).
//!
//! The child is this same test binary, re-run with only
//! [`crash_child_entry`] selected and its settings in environment variables.
//! It enqueues in small batches and prints `enqueued N` after each committed
//! batch; a restarted child continues after the last confirmed batch (a
//! batch that committed unconfirmed is enqueued again and deduplicated, as a
//! host retrying after a crash would).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::claim;
use crate::reliability::{
    Audit, Backend, Lab, Spawned, child, env_number, free_port, log_tail, signer,
};

const URL: &str = "LIAISON_CRASH_CHILD_URL";
const PORT: &str = "LIAISON_CRASH_CHILD_PORT";
const START: &str = "LIAISON_CRASH_CHILD_START";
const COUNT: &str = "LIAISON_CRASH_CHILD_COUNT";
const CHUNK: &str = "LIAISON_CRASH_CHILD_CHUNK";

/// Pause between two enqueued batches in the child.
const PACE: Duration = Duration::from_millis(50);
/// A child lives this long (uniformly random) before its SIGKILL.
const LIFE_MS: std::ops::Range<u64> = 100..1200;

/// The child process's work. Under a normal test run the variables are not
/// set and it returns at once; the crash test runs it in a child process.
#[test]
fn crash_child_entry() {
    let Some(backend) = Backend::from_env() else {
        return;
    };
    let var = |name: &str| std::env::var(name).expect(name);
    let url = var(URL);
    let port: u16 = var(PORT).parse().expect("port");
    let start: usize = var(START).parse().expect("start");
    let count: usize = var(COUNT).parse().expect("count");
    let chunk: usize = var(CHUNK).parse().expect("chunk");
    crate::reliability::runtime().block_on(async move {
        // The host writes every result into its own table, in the
        // transaction that acknowledges it.
        let (store, partner) = backend
            .open_with_host_results(crate::reliability::lab_partner(&url))
            .await;
        let lab = Lab::start_with(store, partner, Some(port)).await;
        let mut next = start;
        while next < count {
            let end = (next + chunk).min(count);
            // A business value per submission, so that the PostgreSQL
            // counters' summed values are checked too.
            let batch = (next..end)
                .map(|i| claim("lab", i).business_value(100 + i as i64))
                .collect();
            lab.liaison.enqueue_batch(batch).await.expect("enqueue");
            // Committed: tell the parent (stdout is line-buffered).
            println!("enqueued {end}");
            next = end;
            tokio::time::sleep(PACE).await;
        }
        // Work until killed.
        std::future::pending::<()>().await;
    });
}

/// A running child and the thread reading its confirmations.
struct Host {
    child: Spawned,
    reader: std::thread::JoinHandle<()>,
}

fn spawn_host(
    backend: &Backend,
    log: &Path,
    url: &str,
    port: u16,
    n: usize,
    chunk: usize,
    confirmed: &Arc<AtomicUsize>,
) -> Host {
    let mut command = child("dispatch::crash::crash_child_entry", log);
    backend.pass_to(&mut command);
    let mut child = Spawned::start(
        command
            .env(URL, url)
            .env(PORT, port.to_string())
            .env(START, confirmed.load(Ordering::SeqCst).to_string())
            .env(COUNT, n.to_string())
            .env(CHUNK, chunk.to_string())
            .stdout(Stdio::piped()),
    );
    let stdout = child.stdout.take().expect("child stdout");
    let confirmed = Arc::clone(confirmed);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may have begun the line with "test ... ".
            if let Some(n) = line
                .split_once("enqueued ")
                .and_then(|(_, n)| n.parse().ok())
            {
                confirmed.fetch_max(n, Ordering::SeqCst);
            }
        }
    });
    Host { child, reader }
}

impl Host {
    /// SIGKILL (std's `kill` on Unix); the child must still be running.
    fn kill(mut self, log: &Path) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the child ended by itself ({status}):\n{}", log_tail(log));
        }
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
        self.reader.join().expect("reader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_at_random_loses_nothing_and_applies_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite(dir.path().join("crash.db"));
    let kills = env_number("LIAISON_CRASH_KILLS", 50);
    let n = env_number("LIAISON_CRASH_SUBMISSIONS", 5000);
    crash_loop(&backend, dir.path(), kills, n).await;
}

/// The same loop with every host on one PostgreSQL schema: after every
/// kill the state counters must not have drifted.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_host_killed_at_random_loses_nothing_and_applies_nothing_twice() {
    let Some(schema) = crate::conformance::harness::pg::Schema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::postgres(&schema);
    let kills = env_number("LIAISON_CRASH_PG_KILLS", 20);
    let n = env_number("LIAISON_CRASH_PG_SUBMISSIONS", 2000);
    crash_loop(&backend, dir.path(), kills, n).await;
    drop(schema);
}

/// Kill `kills` hosts on `backend` at random while `n` submissions go
/// through, let a last host finish, and audit (children's logs in `dir`).
async fn crash_loop(backend: &Backend, dir: &Path, kills: u64, n: u64) {
    let n = usize::try_from(n).unwrap();
    let seed = env_number("LIAISON_CRASH_SEED", rand::random());
    let mut rng = StdRng::seed_from_u64(seed);
    // Spread the enqueueing over roughly the first half of the children's
    // time (less their start-up), so kills land while work is enqueued,
    // sent and called back.
    let ticks = (kills as f64 * 0.65 * 0.45 / PACE.as_secs_f64()).max(1.0);
    let chunk = ((n as f64 / ticks).ceil() as usize).max(1);

    let log = dir.join("children.log");
    // Accept with 202, call back 30 ms later, twice (the same event); every
    // 7th request is answered 503 first.
    let mock = MockPartner::start_with(Behavior::flaky(
        7,
        Behavior::callback_later_with(
            Duration::from_millis(30),
            MockOutcome::Succeeded,
            CallbackMode::Duplicate,
        ),
    ))
    .await
    .unwrap();
    mock.set_callback_signing(Some(signer()));
    let port = free_port();
    mock.set_callback_url(Some(format!("http://127.0.0.1:{port}/callbacks/lab")));
    let url = mock.submit_url();
    let confirmed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    for kill in 1..=kills {
        let host = spawn_host(backend, &log, &url, port, n, chunk, &confirmed);
        tokio::time::sleep(Duration::from_millis(rng.random_range(LIFE_MS))).await;
        host.kill(&log);
        assert_eq!(backend.check(), "ok", "consistency after kill {kill}");
    }
    let confirmed_at_last_kill = confirmed.load(Ordering::SeqCst);

    // The last host finishes the work.
    let host = spawn_host(backend, &log, &url, port, n, chunk, &confirmed);
    let limit = Duration::from_secs(240);
    let waited = Instant::now();
    loop {
        let audit = Audit::of(backend);
        // A callback stored but not settled when its host was killed is
        // settled by a later host's deadline watcher (after 10 s).
        let unsettled = audit.callbacks.get("received").copied().unwrap_or(0);
        let (delivered, _, _) = backend.host_results();
        if audit.total() == n && audit.terminal() == n && unsettled == 0 && delivered == n as u64 {
            break;
        }
        assert!(
            waited.elapsed() < limit,
            "not every submission terminal, callback settled or result delivered after {limit:?}: \
             {:?} {:?} delivered {delivered}\n{}",
            audit.by_state,
            audit.callbacks,
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.kill(&log);
    assert_eq!(backend.check(), "ok", "consistency at the end");

    let audit = Audit::of(backend);
    let stats = mock.stats();
    let effects = mock.side_effects();
    let effect_keys: std::collections::HashSet<_> =
        effects.iter().map(|e| e.idempotency_key.clone()).collect();
    let lost = audit.missing(n);
    let duplicates = audit.duplicates() + (effects.len() - effect_keys.len());
    let (delivered, host_rows, most_applied) = backend.host_results();
    println!(
        "crash loop ({}): seed {seed}, kills {kills}, submissions {n}, lost {lost}, duplicates {duplicates}; \
         states {:?}; partner: {} requests, {} side effects for {} keys, {} callbacks sent ({} failed); \
         callbacks stored by disposition {:?}; stale results journaled {}; \
         leases expired (attempts cut by a kill) {}; \
         {} confirmed before the last kill; results delivered {delivered}, in the host's table {host_rows}, \
         applied at most {most_applied} time(s); {:.1} s",
        backend.label(),
        audit.by_state,
        stats.requests,
        stats.side_effects,
        stats.distinct_keys,
        stats.callbacks_sent,
        stats.callbacks_failed,
        audit.callbacks,
        audit.stale_results,
        audit.leases_expired,
        confirmed_at_last_kill,
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(lost, 0, "lost submissions");
    assert_eq!(audit.total(), n, "one submission per key");
    assert_eq!(audit.duplicate_keys, 0, "a key stored twice");
    assert_eq!(audit.in_state("succeeded"), n, "every submission succeeded");
    assert_eq!(audit.settled_twice, 0, "a submission settled twice");
    assert_eq!(audit.applied_twice, 0, "a callback applied twice");
    assert_eq!(stats.distinct_keys, n as u64);
    assert_eq!(stats.side_effects, n as u64, "one side effect per key");
    assert_eq!(effect_keys.len(), n, "one side effect per key");
    assert_eq!(duplicates, 0);
    // Exactly once into the host's table: every result, none twice.
    assert_eq!(delivered, n as u64, "a result not delivered");
    assert_eq!(
        host_rows, n as u64,
        "a result missing from the host's table"
    );
    assert_eq!(
        most_applied, 1,
        "a result applied twice in the host's table"
    );
    // The receiver really took part: callbacks were applied, and the
    // duplicate deliveries were recognised as such.
    assert!(audit.callbacks.get("applied").copied().unwrap_or(0) > 0);
    assert!(audit.callbacks.get("duplicate").copied().unwrap_or(0) > 0);
}
