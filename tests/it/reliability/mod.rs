//! The reliability proof (issue 8): lease fencing, failpoints and
//! contention; the crash loop is `dispatch::crash`. Docs: docs/reliability.md.
//!
//! Shared here: running one test of this binary in a child process (the way
//! SQLite's own crash tests run a writer they can kill), the "lab" host such
//! a child runs, and the audit of a database file afterwards.

mod contention;
#[cfg(feature = "failpoints")]
mod failpoints;
#[cfg(feature = "failpoints")]
mod fencing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::{JsonMatcher, StandardWebhooks};
use liaison::engine::{EngineSettings, Handle, Liaison, Partner};
use liaison::retry::{Fixed, RetryLimits};
use liaison::rusqlite;
use liaison::store::SqliteStore;
use liaison::{
    AttemptContext, HttpJsonAdapter, Outcome, PartnerAdapter, PartnerError, PollError, PollStatus,
    ResultMapping, Submission, SubmitOutcome,
};

/// The secret the mock signs its callbacks with and the host verifies.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).expect("signer")
}

/// A command running only test `test` (full path, e.g.
/// `dispatch::crash::crash_child_entry`) of this binary, its stderr appended
/// to `log` so a failing child can be diagnosed.
pub fn child(test: &str, log: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .expect("child log"),
        );
    command
}

/// The end of a child's log, for an assertion message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let start = text.len().saturating_sub(4000);
    text.get(start..).unwrap_or(&text).to_owned()
}

/// A tokio runtime for a child process's work.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends through the HTTP adapter; a poll answers "succeeded" for a
/// submission the partner accepted (it has the partner's reference). Every
/// `MockPartner` behaviour these tests use reports success for what it
/// accepted, and `MockPartner` has no status endpoint, so this stands for
/// the partner's status API: a callback lost while the receiver was down is
/// made up for by the deadline watcher's poll.
#[derive(Debug)]
pub struct Pollable(pub HttpJsonAdapter);

#[async_trait]
impl PartnerAdapter for Pollable {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        self.0.submit(ctx, submission).await
    }

    async fn poll_status(&self, submission: &Submission) -> Result<PollStatus, PollError> {
        match submission.external_ref {
            Some(_) => Ok(PollStatus::Done(Outcome::Succeeded)),
            None => Err(PollError::Unsupported),
        }
    }
}

/// The partner every child process registers: "lab" on the mock at
/// `submit_url`, signed callbacks, short retries, a 1 s attempt timeout and a
/// 1 s result deadline after which the result is polled.
pub fn lab_partner(submit_url: &str) -> Partner {
    let adapter = HttpJsonAdapter::new(submit_url)
        .and_then(|a| a.status_pointer("/status", ResultMapping::new(["succeeded"], ["failed"])?))
        .expect("adapter");
    Partner::new("lab", Pollable(adapter))
        .callbacks(JsonMatcher::builder(signer()).build().expect("matcher"))
        .retry(Fixed::new(Duration::from_millis(20)).expect("retry"))
        .limits(RetryLimits::new(1000, Duration::from_secs(600)).expect("limits"))
        .attempt_timeout(Duration::from_secs(1))
        .concurrency(8)
        .without_circuit()
        .result_timeout(Duration::from_secs(1))
        .polling(Duration::from_millis(300), 5)
}

/// Engine settings for children: quick polls, a short lease margin.
pub fn lab_settings() -> EngineSettings {
    EngineSettings {
        lease_margin: Duration::from_millis(200),
        ..crate::dispatch::quick_settings()
    }
}

/// A running host: the engine and, if asked, its callback router.
pub struct Lab {
    pub liaison: Liaison,
    /// The running engine (children are killed, never shut down).
    handle: Handle,
}

impl Lab {
    /// Open `db`, start the engine for [`lab_partner`] and, with a port,
    /// serve the callback router on `127.0.0.1:port` (the port the mock calls
    /// back to; a killed predecessor may have held it a moment ago).
    pub async fn start(store: SqliteStore, submit_url: &str, callback_port: Option<u16>) -> Lab {
        Lab::start_with(store, lab_partner(submit_url), callback_port).await
    }

    /// [`Lab::start`] with another partner configuration.
    pub async fn start_with(
        store: SqliteStore,
        partner: Partner,
        callback_port: Option<u16>,
    ) -> Lab {
        let liaison = Liaison::builder(store)
            .partner(partner)
            .settings(lab_settings())
            .build()
            .expect("engine");
        if let Some(port) = callback_port {
            let listener = bind_patiently(port).await;
            let app = liaison::http::callback_router(liaison.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let handle = liaison.start();
        Lab { liaison, handle }
    }

    /// Stop the engine (the callback router's task ends with the runtime).
    pub async fn stop(self) {
        self.handle
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    }
}

async fn bind_patiently(port: u16) -> tokio::net::TcpListener {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(e) if tries < 250 => {
                tries += 1;
                if tries == 1 {
                    eprintln!("port {port} busy ({e}); retrying");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind the callback port {port}: {e}"),
        }
    }
}

/// Wait (bounded, not timed) until `child` exits by itself.
#[cfg(feature = "failpoints")]
pub async fn exited(child: &mut std::process::Child, log: &Path) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the child did not exit within 60 s\n{}",
            log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `check` holds, polling every 50 ms, failing after `limit`.
/// A bound on waiting for a condition, not a timing assertion.
#[cfg(feature = "failpoints")]
pub async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free port on 127.0.0.1 (bound and released; the children bind it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `PRAGMA integrity_check` of the file.
pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open for integrity check");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// What a database file holds, read with plain SQL.
#[derive(Debug, Default)]
pub struct Audit {
    /// Submissions by state.
    pub by_state: BTreeMap<String, usize>,
    /// Idempotency keys of the submissions.
    pub keys: HashSet<String>,
    /// Submissions stored more than once under one key.
    pub duplicate_keys: usize,
    /// Submissions whose timeline reaches a terminal state more than once.
    pub settled_twice: usize,
    /// Submissions with more than one callback applied.
    pub applied_twice: usize,
    /// Callbacks by disposition.
    pub callbacks: BTreeMap<String, usize>,
    /// `stale_result_ignored` events.
    pub stale_results: usize,
}

impl Audit {
    /// Read `db` (while a child may be writing it: WAL readers do not
    /// block). A file not created or not migrated yet is empty.
    pub fn of(db: &Path) -> Audit {
        let mut audit = Audit::default();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
        let Ok(conn) = rusqlite::Connection::open_with_flags(db, flags) else {
            return audit;
        };
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        let migrated: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'liaison_migrations')",
                [],
                |r| r.get(0),
            )
            .expect("read the schema");
        if !migrated {
            return audit;
        }
        let mut per_key: HashMap<String, usize> = HashMap::new();
        let mut stmt = conn
            .prepare("SELECT idempotency_key, state FROM liaison_submissions")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for row in rows {
            let (key, state) = row.unwrap();
            *audit.by_state.entry(state).or_default() += 1;
            *per_key.entry(key.clone()).or_default() += 1;
            audit.keys.insert(key);
        }
        audit.duplicate_keys = per_key.values().filter(|n| **n > 1).count();
        let count = |sql: &str| -> usize {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| usize::try_from(n).unwrap_or(0))
                .unwrap()
        };
        audit.settled_twice = count(
            "SELECT COUNT(*) FROM (SELECT submission_id FROM liaison_events \
             WHERE to_state IN ('succeeded', 'failed') GROUP BY submission_id HAVING COUNT(*) > 1)",
        );
        audit.applied_twice = count(
            "SELECT COUNT(*) FROM (SELECT submission_id FROM liaison_callbacks \
             WHERE disposition = 'applied' GROUP BY submission_id HAVING COUNT(*) > 1)",
        );
        audit.stale_results =
            count("SELECT COUNT(*) FROM liaison_events WHERE kind = 'stale_result_ignored'");
        let mut stmt = conn
            .prepare("SELECT disposition, COUNT(*) FROM liaison_callbacks GROUP BY disposition")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .unwrap();
        for row in rows {
            let (disposition, n) = row.unwrap();
            audit
                .callbacks
                .insert(disposition, usize::try_from(n).unwrap_or(0));
        }
        audit
    }

    pub fn total(&self) -> usize {
        self.by_state.values().sum()
    }

    pub fn in_state(&self, state: &str) -> usize {
        self.by_state.get(state).copied().unwrap_or(0)
    }

    /// Submissions in a terminal state.
    pub fn terminal(&self) -> usize {
        ["succeeded", "failed", "dead_lettered", "cancelled"]
            .iter()
            .map(|s| self.in_state(s))
            .sum()
    }

    /// Keys `C-0 .. C-{n-1}` with no submission.
    pub fn missing(&self, n: usize) -> usize {
        (0..n)
            .filter(|i| !self.keys.contains(&format!("C-{i}")))
            .count()
    }

    /// Every duplicate this audit can see.
    pub fn duplicates(&self) -> usize {
        self.duplicate_keys + self.settled_twice + self.applied_twice
    }
}

/// An environment variable as a number, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}
