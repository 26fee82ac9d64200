//! Contention: the host application writes to the same SQLite file as
//! liaison — its own table, its own `BEGIN IMMEDIATE` transactions, in
//! tight loops — from other threads and from another process, while liaison
//! dispatches a few thousand submissions enqueued in the host's own
//! transactions (the transactional outbox). No `SQLITE_BUSY` may reach
//! either side, nothing may be lost, and the file must stay intact.
//!
//! What the host needs (docs/reliability.md): a `busy_timeout` on each of
//! its connections (5 s here, liaison's default too), short transactions,
//! and `BEGIN IMMEDIATE` for every transaction that writes (a deferred one
//! that reads first cannot wait for the lock when it starts writing). WAL
//! mode is set by liaison on the file.
//!
//! Two children: `liaison` (the engine, two host writer threads and the
//! host's outbox thread) and `writer` (another host process). The liaison
//! child counts every warning and error liaison logs (a tiny `tracing`
//! subscriber) and reports them with its figures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use liaison::rusqlite::{self, TransactionBehavior};
use liaison::store::SqliteStore;
use liaison::testing::{Behavior, MockPartner};
use serde_json::{Value, json};

use super::{Audit, Backend, Lab, Spawned, child, integrity, log_tail};
use crate::dispatch::claim;

const ROLE: &str = "LIAISON_CT_ROLE";
const DB: &str = "LIAISON_CT_DB";
const URL: &str = "LIAISON_CT_URL";
const COUNT: &str = "LIAISON_CT_COUNT";
const STOP: &str = "LIAISON_CT_STOP";

/// What a host sets on its own connections to the shared file.
const HOST_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// What a host thread does between two of its write transactions (its
/// other work). With none at all, a loop that takes the write lock again
/// the moment it released it can starve every other writer past any
/// busy timeout: SQLite's busy handler polls, it does not queue.
const HOST_GAP: Duration = Duration::from_millis(1);
/// Submissions enqueued per host transaction.
const PER_TX: usize = 10;

/// A host connection: the settings docs/reliability.md asks of a host.
fn host_connection(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("host connection");
    conn.busy_timeout(HOST_BUSY_TIMEOUT).expect("busy timeout");
    conn
}

/// Counts of one host writer.
#[derive(Default)]
struct Tally {
    commits: AtomicU64,
    busy: AtomicU64,
    other_errors: AtomicU64,
}

impl Tally {
    fn error(&self, e: &rusqlite::Error) {
        let busy = matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        let counter = if busy { &self.busy } else { &self.other_errors };
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("host write failed: {e}");
        }
    }

    fn json(&self) -> Value {
        json!({
            "commits": self.commits.load(Ordering::SeqCst),
            "busy": self.busy.load(Ordering::SeqCst),
            "other_errors": self.other_errors.load(Ordering::SeqCst),
        })
    }
}

/// The host's own write, in a tight loop until `stop`: one row in its own
/// table per `BEGIN IMMEDIATE` transaction.
fn hammer(db: &Path, source: &str, stop: &AtomicBool, tally: &Tally) {
    let mut conn = host_connection(db);
    let mut n = 0i64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let result = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .and_then(|tx| {
                tx.execute(
                    "INSERT INTO host_orders (source, n, note) VALUES (?1, ?2, ?3)",
                    rusqlite::params![source, n, "x".repeat(64)],
                )?;
                tx.execute(
                    "UPDATE host_counters SET value = value + 1 WHERE name = ?1",
                    [source],
                )?;
                tx.commit()
            });
        match result {
            Ok(()) => {
                tally.commits.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => tally.error(&e),
        }
        std::thread::sleep(HOST_GAP);
    }
}

/// Warnings and errors liaison logged in this process.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A `tracing` subscriber keeping the message of every WARN and ERROR event.
struct Recorder;

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = format!("{}:", event.metadata().level());
        event.record(&mut Message(&mut text));
        LOGGED.lock().unwrap().push(text);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The children. Under a normal test run the variables are not set and it
/// returns at once.
#[test]
fn contention_child_entry() {
    let (Ok(role), Ok(db)) = (std::env::var(ROLE), std::env::var(DB)) else {
        return;
    };
    let db = PathBuf::from(db);
    match role.as_str() {
        "writer" => {
            let stop_file = PathBuf::from(std::env::var(STOP).expect("stop file"));
            let stop = Arc::new(AtomicBool::new(false));
            let tally = Arc::new(Tally::default());
            let worker = {
                let (db, stop, tally) = (db.clone(), Arc::clone(&stop), Arc::clone(&tally));
                std::thread::spawn(move || hammer(&db, "process", &stop, &tally))
            };
            while !stop_file.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::SeqCst);
            worker.join().expect("writer thread");
            println!("report {}", tally.json());
        }
        "liaison" => liaison_side(&db),
        other => panic!("unknown role {other}"),
    }
}

/// The engine, two host threads hammering, and the host's outbox thread
/// enqueueing `count` submissions `PER_TX` at a time, each transaction with
/// the host's own order rows.
fn liaison_side(db: &Path) {
    tracing::subscriber::set_global_default(Recorder).expect("subscriber");
    let url = std::env::var(URL).expect("url");
    let count: usize = std::env::var(COUNT).expect("count").parse().expect("n");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = Arc::new(Tally::default());
    let outbox = Arc::new(Tally::default());
    super::runtime().block_on(async {
        let store = SqliteStore::open(db).expect("open");
        let lab = Lab::start(Arc::new(store.clone()), &url, None).await;
        let hammers: Vec<_> = (0..2)
            .map(|_| {
                let (db, stop, tally) = (db.to_owned(), Arc::clone(&stop), Arc::clone(&threads));
                std::thread::spawn(move || hammer(&db, "thread", &stop, &tally))
            })
            .collect();
        let enqueuer = {
            let (db, store, tally) = (db.to_owned(), store.clone(), Arc::clone(&outbox));
            std::thread::spawn(move || {
                let mut conn = host_connection(&db);
                let mut i = 0;
                while i < count {
                    let end = (i + PER_TX).min(count);
                    let result = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(|e| e.to_string())
                        .and_then(|tx| {
                            for n in i..end {
                                tx.execute(
                                    "INSERT INTO host_orders (source, n, note) VALUES ('outbox', ?1, ?2)",
                                    rusqlite::params![i64::try_from(n).unwrap(), format!("C-{n}")],
                                )
                                .map_err(|e| e.to_string())?;
                            }
                            let batch = (i..end).map(|n| claim("lab", n)).collect();
                            store
                                .enqueue_batch_in_transaction(&tx, batch)
                                .map_err(|e| e.to_string())?;
                            tx.commit().map_err(|e| e.to_string())
                        });
                    match result {
                        Ok(()) => {
                            tally.commits.fetch_add(1, Ordering::SeqCst);
                            i = end;
                        }
                        // Counted, then the same transaction is tried again.
                        Err(e) if e.contains("locked") || e.contains("busy") => {
                            tally.busy.fetch_add(1, Ordering::SeqCst);
                            eprintln!("outbox transaction failed: {e}");
                        }
                        Err(e) => {
                            tally.other_errors.fetch_add(1, Ordering::SeqCst);
                            eprintln!("outbox transaction failed: {e}");
                            return;
                        }
                    }
                }
            })
        };
        enqueuer.join().expect("outbox thread");
        // Let the engine finish while the host keeps writing.
        let start = Instant::now();
        while Audit::of(&Backend::Sqlite(db.into())).terminal() < count && start.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
        for hammer in hammers {
            hammer.join().expect("host thread");
        }
        lab.stop().await;
    });
    let logged = LOGGED.lock().unwrap().clone();
    let report = json!({
        "threads": threads.json(),
        "outbox": outbox.json(),
        "logged": logged,
    });
    println!("report {report}");
}

/// The `report {json}` line of a child's stdout.
fn report(stdout: impl std::io::Read, log: &Path) -> Value {
    // Read to the end: a child whose stdout closes early fails to print.
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    // libtest may have begun the line with "test ... ".
    let line = lines
        .iter()
        .find_map(|l| l.split_once("report ").map(|(_, r)| r.to_owned()));
    let line =
        line.unwrap_or_else(|| panic!("a child ended without its report\n{}", log_tail(log)));
    serde_json::from_str(&line).expect("report json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_writers_in_threads_and_a_process_meet_no_busy_and_lose_nothing() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let log = dir.path().join("children.log");
    let stop_file = dir.path().join("stop");
    // The host's schema lives next to liaison's.
    drop(SqliteStore::open(&db).unwrap());
    host_connection(&db)
        .execute_batch(
            "CREATE TABLE host_orders (id INTEGER PRIMARY KEY, source TEXT NOT NULL, \
             n INTEGER NOT NULL, note TEXT);
             CREATE TABLE host_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO host_counters VALUES ('thread', 0), ('process', 0);",
        )
        .unwrap();
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();

    let mut writer = Spawned::start(
        child("reliability::contention::contention_child_entry", &log)
            .env(ROLE, "writer")
            .env(DB, &db)
            .env(STOP, &stop_file)
            .stdout(Stdio::piped()),
    );
    let mut host = Spawned::start(
        child("reliability::contention::contention_child_entry", &log)
            .env(ROLE, "liaison")
            .env(DB, &db)
            .env(URL, mock.submit_url())
            .env(COUNT, N.to_string())
            .stdout(Stdio::piped()),
    );
    let host_out = host.stdout.take().unwrap();
    let host_log = log.clone();
    let host_report = tokio::task::spawn_blocking(move || report(host_out, &host_log))
        .await
        .unwrap();
    let status = host.wait().unwrap();
    assert!(
        status.success(),
        "liaison side: {status}\n{}",
        log_tail(&log)
    );
    std::fs::write(&stop_file, b"").unwrap();
    let writer_out = writer.stdout.take().unwrap();
    let writer_log = log.clone();
    let writer_report = tokio::task::spawn_blocking(move || report(writer_out, &writer_log))
        .await
        .unwrap();
    assert!(writer.wait().unwrap().success(), "{}", log_tail(&log));

    assert_eq!(integrity(&db), "ok");
    let audit = Audit::of(&Backend::Sqlite(db.clone()));
    let stats = mock.stats();
    let conn = host_connection(&db);
    let rows = |source: &str| -> u64 {
        conn.query_row(
            "SELECT COUNT(*) FROM host_orders WHERE source = ?1",
            [source],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u64::try_from(n).unwrap())
        .unwrap()
    };
    let counter = |name: &str| -> u64 {
        conn.query_row(
            "SELECT value FROM host_counters WHERE name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| u64::try_from(n).unwrap())
        .unwrap()
    };
    // Every outbox order row has its submission, and the reverse.
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM host_orders o WHERE o.source = 'outbox' AND NOT EXISTS \
             (SELECT 1 FROM liaison_submissions s WHERE s.idempotency_key = o.note)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    println!(
        "contention: {N} submissions {:?}; host threads {}, host process {}, outbox {}; \
         partner side effects {}; liaison warnings/errors {}",
        audit.by_state,
        host_report["threads"],
        writer_report,
        host_report["outbox"],
        stats.side_effects,
        host_report["logged"],
    );
    let logged = host_report["logged"].as_array().unwrap();
    let busy_logged: Vec<_> = logged
        .iter()
        .filter(|l| {
            let l = l.as_str().unwrap_or_default().to_lowercase();
            l.contains("busy") || l.contains("locked")
        })
        .collect();
    assert!(
        busy_logged.is_empty(),
        "liaison met SQLITE_BUSY: {busy_logged:?}"
    );
    for side in [
        &host_report["threads"],
        &host_report["outbox"],
        &writer_report,
    ] {
        assert_eq!(side["busy"], 0, "a host write met SQLITE_BUSY: {side}");
        assert_eq!(side["other_errors"], 0, "a host write failed: {side}");
    }
    // The host really wrote while liaison worked.
    let thread_commits = host_report["threads"]["commits"].as_u64().unwrap();
    let process_commits = writer_report["commits"].as_u64().unwrap();
    assert!(thread_commits > 0 && process_commits > 0);
    assert_eq!(rows("thread"), thread_commits, "host thread rows");
    assert_eq!(counter("thread"), thread_commits);
    assert_eq!(rows("process"), process_commits, "host process rows");
    assert_eq!(counter("process"), process_commits);
    assert_eq!(rows("outbox"), N as u64);
    assert_eq!(orphans, 0, "an order without its submission");
    // Liaison: nothing lost, each once.
    assert_eq!(audit.missing(N), 0, "lost submissions");
    assert_eq!(audit.total(), N);
    assert_eq!(audit.in_state("succeeded"), N, "{:?}", audit.by_state);
    assert_eq!(audit.duplicates(), 0);
    assert_eq!(stats.side_effects, N as u64);
    assert_eq!(stats.distinct_keys, N as u64);
}
