//! The reliability proof (issue 8): lease fencing, failpoints and
//! contention; the crash loop is `dispatch::crash`. Docs: docs/reliability.md.
//!
//! Shared here: running one test of this binary in a child process (the way
//! SQLite's own crash tests run a writer they can kill), the "lab" host such
//! a child runs, the [`Backend`] it runs on (a SQLite file or a PostgreSQL
//! schema of its own), and the audit of that database afterwards, in plain
//! SQL.

mod contention;
#[cfg(feature = "failpoints")]
mod failpoints;
#[cfg(feature = "failpoints")]
mod fencing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::{JsonMatcher, StandardWebhooks};
use liaison::engine::{EngineSettings, Handle, Liaison, Partner};
use liaison::retry::{Fixed, RetryLimits};
use liaison::rusqlite;
use liaison::store::{OutboxStore, SqliteStore};
use liaison::{
    AttemptContext, HttpJsonAdapter, Outcome, PartnerAdapter, PartnerError, PollError, PollStatus,
    ResultMapping, Submission, SubmitOutcome,
};

/// The secret the mock signs its callbacks with and the host verifies.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).expect("signer")
}

/// This test binary, running only test `test` (full path, e.g.
/// `scale_out::instance_entry`); its output is left as it is.
pub fn entry(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    command
}

/// A command running only test `test` (full path, e.g.
/// `dispatch::crash::crash_child_entry`) of this binary, its stderr appended
/// to `log` so a failing child can be diagnosed.
pub fn child(test: &str, log: &Path) -> Command {
    let mut command = entry(test);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
        File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("child log"),
    );
    command
}

/// A child process that is killed (SIGKILL) and reaped when this is
/// dropped: a test that fails while its child runs (an assertion, a
/// timeout) does not leave it running. A crash loop's host, for one, works
/// until killed, and an orphaned one polled its database for good.
#[derive(Debug)]
pub struct Spawned(Child);

impl Spawned {
    /// Start `command`.
    pub fn start(command: &mut Command) -> Spawned {
        Spawned(command.spawn().expect("spawn child"))
    }

    /// SIGKILL (std's `kill` on Unix) and reap, now; the child must still
    /// be running.
    pub fn kill_and_reap(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap the child");
    }
}

impl Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Already ended and reaped: both calls fail harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_spawned_child_is_killed_and_reaped_when_dropped() {
    let child = Spawned::start(
        Command::new("sleep")
            .arg("600")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    assert!(proc_dir.exists());
    drop(child);
    assert!(
        !proc_dir.exists(),
        "the child still runs (or was not reaped)"
    );
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
            Some(_) => Ok(PollStatus::Done(Outcome::succeeded())),
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
        // The kills here are the test's, not a payload's: a submission
        // caught in flight by several kills in a row must not be given up
        // as poison (dispatch::poison tests the crash limit).
        .max_lease_expiries(liaison::store::ReapLimits::MAX_LEASE_EXPIRIES)
}

/// Engine settings for children: quick polls, a short lease margin.
pub fn lab_settings() -> EngineSettings {
    crate::dispatch::quick_settings().lease_margin(Duration::from_millis(200))
}

/// A running host: the engine and, if asked, its callback router.
pub struct Lab {
    pub liaison: Liaison,
    /// The running engine (children are killed, never shut down).
    handle: Handle,
}

impl Lab {
    /// Start the engine on `store` for [`lab_partner`] and, with a port,
    /// serve the callback router on `127.0.0.1:port` (the port the mock calls
    /// back to; a killed predecessor may have held it a moment ago).
    pub async fn start(
        store: Arc<dyn OutboxStore>,
        submit_url: &str,
        callback_port: Option<u16>,
    ) -> Lab {
        Lab::start_with(store, lab_partner(submit_url), callback_port).await
    }

    /// [`Lab::start`] with another partner configuration.
    pub async fn start_with(
        store: Arc<dyn OutboxStore>,
        partner: Partner,
        callback_port: Option<u16>,
    ) -> Lab {
        let liaison = Liaison::builder_arc(store)
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

/// The database a test and its children share: a SQLite file, or a
/// PostgreSQL schema of the test's own (`crate::conformance::harness::pg::Schema`,
/// dropped by the test). A child learns it from environment variables
/// ([`Backend::pass_to`], [`Backend::from_env`]).
#[derive(Clone)]
pub enum Backend {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A schema in the PostgreSQL database at `url`.
    #[cfg(feature = "postgres")]
    Postgres { url: String, schema: String },
}

const SQLITE_VAR: &str = "LIAISON_REL_SQLITE";
#[cfg(feature = "postgres")]
const PG_URL_VAR: &str = "LIAISON_REL_PG_URL";
#[cfg(feature = "postgres")]
const PG_SCHEMA_VAR: &str = "LIAISON_REL_PG_SCHEMA";

/// Rows of text columns, one list per query: what [`Backend::query`] returns.
type Rows = Vec<Vec<String>>;

/// The host's own table of applied results, on the outbox's database:
/// one row per finished submission, `applied` counting how many times a
/// result was written into it (the crash loop wants exactly 1 each).
const HOST_RESULTS: &str = "CREATE TABLE IF NOT EXISTS host_results \
    (submission_id TEXT PRIMARY KEY, applied INTEGER NOT NULL)";
const APPLY: &str = "INSERT INTO host_results (submission_id, applied) VALUES ($1, 1) \
    ON CONFLICT (submission_id) DO UPDATE SET applied = host_results.applied + 1";

/// Writes each finished submission into `host_results`, in the transaction
/// that acknowledges its delivery.
#[derive(Debug)]
pub struct HostResults;

impl liaison::store::SqliteResultHandler for HostResults {
    fn handle(
        &self,
        conn: &rusqlite::Connection,
        finished: &liaison::FinishedSubmission,
    ) -> Result<(), liaison::BoxError> {
        conn.execute(
            &APPLY.replace("$1", "?1"),
            [finished.submission.id.to_string()],
        )?;
        Ok(())
    }
}

#[cfg(feature = "postgres")]
#[async_trait]
impl liaison::store::PostgresResultHandler for HostResults {
    async fn handle(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        finished: &liaison::FinishedSubmission,
    ) -> Result<(), liaison::BoxError> {
        tx.execute(APPLY, &[&finished.submission.id.to_string()])
            .await?;
        Ok(())
    }
}

impl Backend {
    /// Open the store with the host's result table, and `partner` writing
    /// its results into it transactionally ([`HostResults`]).
    pub async fn open_with_host_results(
        &self,
        partner: Partner,
    ) -> (Arc<dyn OutboxStore>, Partner) {
        match self {
            Backend::Sqlite(path) => {
                let store = SqliteStore::open(path).expect("open SQLite");
                let conn = rusqlite::Connection::open(path).expect("host connection");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                conn.execute_batch(HOST_RESULTS).expect("host table");
                let partner = partner.results_in_sqlite(&store, HostResults);
                (Arc::new(store), partner)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                let config = liaison::store::PostgresConfig::default()
                    .schema(schema.clone())
                    .pool_size(4);
                let store = liaison::store::PostgresStore::connect(url, config)
                    .await
                    .expect("open PostgreSQL");
                let host = crate::conformance::harness::pg::client(url).await;
                host.batch_execute(&format!("SET search_path = {schema}; {HOST_RESULTS}"))
                    .await
                    .expect("host table");
                let partner = partner.results_in_postgres(&store, HostResults);
                (Arc::new(store), partner)
            }
        }
    }

    /// Result deliveries delivered, rows in the host's table, and the most
    /// times one result was applied there.
    pub fn host_results(&self) -> (u64, u64, u64) {
        let Some(rows) = self.query(&[
            "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_deliveries WHERE state = 'delivered'",
            "SELECT CAST(COUNT(*) AS TEXT) FROM host_results",
            "SELECT CAST(COALESCE(MAX(applied), 0) AS TEXT) FROM host_results",
        ]) else {
            return (0, 0, 0);
        };
        let n = |i: usize| rows[i][0][0].parse::<u64>().expect("a count");
        (n(0), n(1), n(2))
    }

    /// The backend of a test's own schema.
    #[cfg(feature = "postgres")]
    pub fn postgres(schema: &crate::conformance::harness::pg::Schema) -> Backend {
        Backend::Postgres {
            url: schema.url.clone(),
            schema: schema.name.clone(),
        }
    }

    /// "SQLite" or "PostgreSQL", for messages (a URL may hold a password).
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => "PostgreSQL",
        }
    }

    /// Tell a child process where the database is.
    pub fn pass_to(&self, command: &mut Command) {
        match self {
            Backend::Sqlite(path) => command.env(SQLITE_VAR, path),
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                command.env(PG_URL_VAR, url).env(PG_SCHEMA_VAR, schema)
            }
        };
    }

    /// The backend a parent passed, or `None` (not a child: under a normal
    /// test run the child entries return at once).
    pub fn from_env() -> Option<Backend> {
        if let Ok(path) = std::env::var(SQLITE_VAR) {
            return Some(Backend::Sqlite(path.into()));
        }
        #[cfg(feature = "postgres")]
        if let (Ok(url), Ok(schema)) = (std::env::var(PG_URL_VAR), std::env::var(PG_SCHEMA_VAR)) {
            return Some(Backend::Postgres { url, schema });
        }
        None
    }

    /// Open the store (migrating the database if needed).
    pub async fn open(&self) -> Arc<dyn OutboxStore> {
        match self {
            Backend::Sqlite(path) => Arc::new(SqliteStore::open(path).expect("open SQLite")),
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                let config = liaison::store::PostgresConfig::default()
                    .schema(schema.clone())
                    .pool_size(4);
                Arc::new(
                    liaison::store::PostgresStore::connect(url, config)
                        .await
                        .expect("open PostgreSQL"),
                )
            }
        }
    }

    /// Run `queries` (every column cast to text) in one connection. `None`
    /// when the first fails: the database is not created or migrated yet.
    /// Synchronous, so it can be called from a waiting loop's condition;
    /// PostgreSQL is queried from a thread and runtime of its own.
    pub fn query(&self, queries: &[&str]) -> Option<Vec<Rows>> {
        match self {
            Backend::Sqlite(path) => {
                let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE;
                let conn = rusqlite::Connection::open_with_flags(path, flags).ok()?;
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                let run = |sql: &str| -> rusqlite::Result<Rows> {
                    let mut stmt = conn.prepare(sql)?;
                    let width = stmt.column_count();
                    stmt.query_map([], |r| (0..width).map(|i| r.get(i)).collect())?
                        .collect()
                };
                let mut all = Vec::new();
                for (i, sql) in queries.iter().enumerate() {
                    match run(sql) {
                        Ok(rows) => all.push(rows),
                        Err(_) if i == 0 => return None,
                        Err(e) => panic!("{sql}: {e}"),
                    }
                }
                Some(all)
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { url, schema } => {
                let (url, schema) = (url.clone(), schema.clone());
                let queries: Vec<String> = queries.iter().map(|q| q.to_string()).collect();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        let c = crate::conformance::harness::pg::client(&url).await;
                        // The name is a plain identifier made by the harness.
                        c.batch_execute(&format!("SET search_path = {schema}"))
                            .await
                            .expect("search_path");
                        let mut all = Vec::new();
                        for (i, sql) in queries.iter().enumerate() {
                            match c.query(sql.as_str(), &[]).await {
                                Ok(rows) => all.push(
                                    rows.iter()
                                        .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                                        .collect(),
                                ),
                                Err(_) if i == 0 => return None,
                                Err(e) => panic!("{sql}: {e}"),
                            }
                        }
                        Some(all)
                    })
                })
                .join()
                .expect("query thread")
            }
        }
    }

    /// The database's own consistency after a crash: "ok", or what is
    /// wrong. SQLite: `PRAGMA integrity_check`. PostgreSQL: the counters
    /// `liaison_state_totals` (folded counts plus deltas) equal a count of the submissions (per
    /// partner and state: number and summed business value), read in one
    /// statement (one snapshot). Both: no submission `in_flight` without a
    /// lease token. A database not migrated yet holds nothing to check.
    pub fn check(&self) -> String {
        let mut problems = Vec::new();
        let unleased = "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_submissions \
                        WHERE state = 'in_flight' AND lease_token IS NULL";
        let queries = match self {
            Backend::Sqlite(path) => {
                let integrity = integrity(path);
                if integrity != "ok" {
                    problems.push(format!("integrity_check: {integrity}"));
                }
                vec![unleased]
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres { .. } => vec![
                unleased,
                "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_state_totals c \
                 FULL JOIN (SELECT partner, state, COALESCE(currency, '') AS currency, \
                                   COUNT(*) AS n, COALESCE(SUM(business_value), 0) AS value \
                            FROM liaison_submissions GROUP BY 1, 2, 3) a \
                   ON a.partner = c.partner AND a.state = c.state \
                  AND a.currency = c.currency \
                 WHERE COALESCE(c.n, 0) <> COALESCE(a.n, 0) \
                    OR COALESCE(c.value, 0) <> COALESCE(a.value, 0)",
            ],
        };
        if let Some(results) = self.query(&queries) {
            if results[0][0][0] != "0" {
                problems.push(format!(
                    "{} submissions in flight without a lease token",
                    results[0][0][0]
                ));
            }
            if let Some(drift) = results.get(1)
                && drift[0][0] != "0"
            {
                problems.push(format!(
                    "{} state counters drifted from the submissions",
                    drift[0][0]
                ));
            }
        }
        if problems.is_empty() {
            "ok".into()
        } else {
            problems.join("; ")
        }
    }

    /// Ids of the stored callbacks with `disposition` (a plain word).
    #[cfg(feature = "failpoints")]
    pub fn callbacks_in(&self, disposition: &str) -> Vec<String> {
        let sql = format!(
            "SELECT CAST(id AS TEXT) FROM liaison_callbacks WHERE disposition = '{disposition}'"
        );
        self.query(&[&sql])
            .map(|mut r| {
                r.remove(0)
                    .into_iter()
                    .map(|mut row| row.remove(0))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// `PRAGMA integrity_check` of a SQLite file.
pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open for integrity check");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// What a database holds, read with plain SQL.
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
    /// `lease_expired` events: attempts a crash interrupted, reclaimed.
    pub leases_expired: usize,
}

impl Audit {
    /// Read the database (while a child may be writing it: WAL readers and
    /// PostgreSQL readers do not block). A database not created or not
    /// migrated yet is empty.
    pub fn of(backend: &Backend) -> Audit {
        let mut audit = Audit::default();
        let Some(results) = backend.query(&[
            "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_migrations",
            "SELECT idempotency_key, state FROM liaison_submissions",
            "SELECT CAST(COUNT(*) AS TEXT) FROM (SELECT submission_id FROM liaison_events \
             WHERE to_state IN ('succeeded', 'failed') GROUP BY submission_id HAVING COUNT(*) > 1) t",
            "SELECT CAST(COUNT(*) AS TEXT) FROM (SELECT submission_id FROM liaison_callbacks \
             WHERE disposition = 'applied' GROUP BY submission_id HAVING COUNT(*) > 1) t",
            "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_events WHERE kind = 'stale_result_ignored'",
            "SELECT disposition, CAST(COUNT(*) AS TEXT) FROM liaison_callbacks GROUP BY disposition",
            "SELECT CAST(COUNT(*) AS TEXT) FROM liaison_events WHERE kind = 'lease_expired'",
        ]) else {
            return audit;
        };
        let number = |text: &str| text.parse::<usize>().expect("a count");
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for row in &results[1] {
            let (key, state) = (row[0].clone(), row[1].clone());
            *audit.by_state.entry(state).or_default() += 1;
            *per_key.entry(key.clone()).or_default() += 1;
            audit.keys.insert(key);
        }
        audit.duplicate_keys = per_key.values().filter(|n| **n > 1).count();
        audit.settled_twice = number(&results[2][0][0]);
        audit.applied_twice = number(&results[3][0][0]);
        audit.stale_results = number(&results[4][0][0]);
        for row in &results[5] {
            audit.callbacks.insert(row[0].clone(), number(&row[1]));
        }
        audit.leases_expired = number(&results[6][0][0]);
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

/// The consistency check finds what it is meant to find: a submission in
/// flight without a lease token, and (PostgreSQL) a drifted counter.
mod check_detects {
    use super::Backend;
    use crate::dispatch::claim;

    async fn enqueue_some(backend: &Backend) {
        let store = backend.open().await;
        let batch = (0..3)
            .map(|i| claim("lab", i).business_value(100 + i as i64))
            .collect();
        store.enqueue_batch(batch).await.expect("enqueue");
    }

    #[tokio::test]
    async fn an_unleased_submission_in_flight_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("check.db");
        let backend = Backend::Sqlite(db.clone());
        enqueue_some(&backend).await;
        assert_eq!(backend.check(), "ok");
        let conn = liaison::rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE liaison_submissions SET state = 'in_flight', lease_token = NULL \
             WHERE idempotency_key = 'C-1'",
            [],
        )
        .unwrap();
        assert_eq!(
            backend.check(),
            "1 submissions in flight without a lease token"
        );
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn a_drifted_counter_and_an_unleased_submission_on_postgres() {
        let Some(schema) = crate::conformance::harness::pg::Schema::create().await else {
            return;
        };
        let backend = Backend::postgres(&schema);
        enqueue_some(&backend).await;
        assert_eq!(backend.check(), "ok");
        let c = crate::conformance::harness::pg::client(&schema.url).await;
        let s = &schema.name;
        // Through the trigger: the counters follow, only the lease is wrong.
        c.batch_execute(&format!(
            "UPDATE {s}.liaison_submissions SET state = 'in_flight', lease_token = NULL \
             WHERE idempotency_key = 'C-1'"
        ))
        .await
        .unwrap();
        assert_eq!(
            backend.check(),
            "1 submissions in flight without a lease token"
        );
        c.batch_execute(&format!(
            "UPDATE {s}.liaison_submissions SET state = 'queued' WHERE idempotency_key = 'C-1'; \
             INSERT INTO {s}.liaison_state_deltas VALUES ('lab', 'queued', '', 0, 1)"
        ))
        .await
        .unwrap();
        assert_eq!(
            backend.check(),
            "1 state counters drifted from the submissions"
        );
    }
}
