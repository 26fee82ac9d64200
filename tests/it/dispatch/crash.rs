//! Crash recovery: a dispatcher in a child process is killed with SIGKILL
//! mid-run and restarted on the same file, several times. Nothing is lost,
//! every submission ends terminal, the partner sees one side effect per key,
//! and the database stays intact.
//!
//! The child is this same test binary, re-run with only
//! [`crash_child_entry`] selected and its settings in environment variables.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use liaison::engine::{Liaison, Partner};
use liaison::rusqlite;
use liaison::store::SqliteStore;
use liaison::testing::{Behavior, MockPartner};
use liaison::{HttpJsonAdapter, ResultMapping, SubmissionState};

use super::{all, claim, eventually, quick_settings};

const DB: &str = "LIAISON_CRASH_CHILD_DB";
const URL: &str = "LIAISON_CRASH_CHILD_URL";
const COUNT: &str = "LIAISON_CRASH_CHILD_COUNT";

/// The child process's work. Under a normal test run the variables are not
/// set and it returns at once; the crash test runs it in a child process.
#[test]
fn crash_child_entry() {
    let (Ok(db), Ok(url), Ok(count)) =
        (std::env::var(DB), std::env::var(URL), std::env::var(COUNT))
    else {
        return;
    };
    let count: usize = count.parse().expect("count");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = SqliteStore::open(&db).expect("open");
        let adapter = HttpJsonAdapter::new(&url)
            .and_then(|a| {
                a.status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?)
            })
            .expect("adapter");
        let partner = Partner::new("lab", adapter)
            .retry(liaison::retry::Fixed::new(Duration::from_millis(20)).unwrap())
            .limits(liaison::retry::RetryLimits::new(1000, Duration::from_secs(600)).unwrap())
            .attempt_timeout(Duration::from_secs(1))
            .concurrency(8)
            .without_circuit();
        let mut settings = quick_settings();
        settings.lease_margin = Duration::from_millis(200);
        let liaison = Liaison::builder(store)
            .partner(partner)
            .settings(settings)
            .build()
            .unwrap();
        // Enqueueing again after a restart deduplicates: same keys, same payloads.
        let batch = (0..count).map(|i| claim("lab", i)).collect();
        liaison.enqueue_batch(batch).await.expect("enqueue");
        let _handle = liaison.start();
        // Work until killed.
        std::future::pending::<()>().await;
    });
}

fn spawn_child(db: &Path, url: &str, count: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "dispatch::crash::crash_child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB, db)
        .env(URL, url)
        .env(COUNT, count.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatcher_loses_nothing_and_duplicates_nothing() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let mock = MockPartner::start_with(Behavior::flaky(
        4,
        Behavior::slow(Duration::from_millis(15), Behavior::AcceptAndComplete),
    ))
    .await
    .unwrap();
    let url = mock.submit_url();

    let mut kills = 0;
    for round in 1..=3u64 {
        let mut child = spawn_child(&db, &url, N);
        let target = round * N as u64 / 4;
        eventually(
            "progress before the kill",
            Duration::from_secs(60),
            || async { mock.stats().side_effects >= target },
        )
        .await;
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        child.wait().unwrap();
        kills += 1;
        assert_eq!(integrity(&db), "ok", "after kill {kills}");
    }

    let mut child = spawn_child(&db, &url, N);
    let store = SqliteStore::open(&db).unwrap();
    eventually(
        "every submission terminal",
        Duration::from_secs(120),
        || async {
            let subs = all(&store, "lab").await;
            subs.len() == N && subs.iter().all(|s| s.state == SubmissionState::Succeeded)
        },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(kills, 3);
    assert_eq!(
        all(&store, "lab").await.len(),
        N,
        "none lost, none duplicated"
    );
    let stats = mock.stats();
    assert_eq!(stats.distinct_keys, N as u64);
    assert_eq!(stats.side_effects, N as u64, "one side effect per key");
    drop(store);
    assert_eq!(integrity(&db), "ok");
}
