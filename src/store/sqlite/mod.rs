//! [`SqliteStore`]: the embedded default store.

mod alerts;
mod callbacks;
mod checkpoint;
mod counts;
pub(crate) mod db;
mod deadlines;
mod deliveries;
mod driver;
mod instances;
mod journal;
mod migrate;
mod notifications;
mod partners;
#[cfg(test)]
mod plans;
mod privacy;
mod queries;
mod reader;
mod results;
mod retention;
mod shared;
mod stats;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use self::db::db_err;
use self::driver::{Sql, run};
use self::reader::ReadPool;
pub use self::results::SqliteResultHandler;
use self::writer::{CallerWrites, Writer};
use super::flow;
use super::rules::lookup;
use super::{
    AttemptReport, CallbackFilter, ClaimRequest, Claimed, DeliveryClaim, DeliveryEnd,
    DeliveryFilter, DeliveryLease, Enqueued, FinishedAttempt, HandOver, HourlyCount, HourlyQuery,
    Instance, Lease, ListFilter, NewAlert, NewCallback, Note, NotificationWrite, OutboxStore,
    OverdueClaim, PartnerStats, Pause, PurgeCutoffs, PurgeReport, ReapPolicy, Reaped, Replay,
    Settlement, StateChange, StatsQuery,
};
use super::{CircuitOutcome, CircuitStep, RoleLease, SharedCircuit};
use crate::error::{Error, Result};
use crate::fingerprint::StoreKey;
use crate::model::alert::{Alert, AlertId};
use crate::model::callback::{CallbackId, CallbackReceipt, StoredCallback};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::event::Actor;
use crate::model::event::{Attempt, Event};
use crate::model::notification::{AlertNotification, SinkFailure};
use crate::model::submission::{NewSubmission, Submission, SubmissionId, ValidSubmission};
use crate::model::traffic::ExpectedTraffic;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine};

pub use self::migrate::SCHEMA_VERSION;

/// SQLite's `synchronous` setting for the store's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is on stable storage before it returns: a committed
    /// enqueue survives power loss. The default.
    #[default]
    Full,
    /// In WAL mode, commits survive a crash of the process but the last ones
    /// may be lost on power loss or an OS crash. Several times faster per
    /// commit; choose it only when the host can re-create what it enqueued.
    ///
    /// A commit then never waits for the disk, so an enqueue of one
    /// submission made while the store's writer is idle is written on the
    /// calling thread (tens of microseconds), without a round trip to the
    /// writer's thread.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Settings for [`SqliteStore`]. `Default` is what we recommend.
///
/// ```
/// use liaison::store::{SqliteConfig, Synchronous};
/// use std::time::Duration;
///
/// let config = SqliteConfig::default()
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(5))
///     .max_payload_bytes(256 * 1024)
///     .ledger_retention(Some(Duration::from_secs(90 * 24 * 3600)))
///     .read_connections(2);
/// assert_eq!(config.max_payload_bytes, 256 * 1024);
/// assert_eq!(config.read_connections, 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// Durability of each commit. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a statement waits for another connection's lock. Default 5 s.
    pub busy_timeout: Duration,
    /// Largest payload accepted, in bytes of canonical JSON. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// How long an idempotency key stays in the ledger after its enqueue
    /// (it is removed only once its submission is terminal). `None` keeps
    /// keys until they are pruned otherwise. Default 30 days.
    pub ledger_retention: Option<Duration>,
    /// Read connections kept open, which is also how many reads run at
    /// once: a read that finds every connection busy waits for one instead
    /// of opening another. Default 4.
    pub read_connections: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_payload_bytes: 1024 * 1024,
            ledger_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            read_connections: 4,
        }
    }
}

impl SqliteConfig {
    /// Set [`SqliteConfig::synchronous`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Set [`SqliteConfig::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Set [`SqliteConfig::max_payload_bytes`].
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Set [`SqliteConfig::ledger_retention`].
    pub fn ledger_retention(mut self, retention: Option<Duration>) -> Self {
        self.ledger_retention = retention;
        self
    }

    /// Set [`SqliteConfig::read_connections`] (at least 1).
    pub fn read_connections(mut self, connections: usize) -> Self {
        self.read_connections = connections;
        self
    }

    fn check(&self) -> Result<()> {
        if self.max_payload_bytes == 0 {
            return Err(Error::invalid("max_payload_bytes", "must be above zero"));
        }
        if self.read_connections == 0 {
            return Err(Error::invalid("read_connections", "must be at least 1"));
        }
        Ok(())
    }
}

/// The outbox on an SQLite file: WAL, `BEGIN IMMEDIATE` writes through one
/// writer thread that groups concurrent operations into one commit, and a
/// small pool of read connections.
///
/// Cloning is cheap; clones share the writer. Tables are named `liaison_*`,
/// so the store can share the host's own database file — which is what makes
/// [`SqliteStore::enqueue_in_transaction`] possible.
///
/// ```
/// use liaison::store::{OutboxStore, SqliteStore};
/// use liaison::NewSubmission;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liaison::Result<()> {
/// let store = SqliteStore::open_temporary()?;
/// let first = store
///     .enqueue(NewSubmission::new("bank", "payment", json!({"cents": 500})).idempotency_key("pay-1"))
///     .await?;
/// let again = store
///     .enqueue(NewSubmission::new("bank", "payment", json!({"cents": 500})).idempotency_key("pay-1"))
///     .await?;
/// assert!(again.deduplicated);
/// assert_eq!(first.submission.id, again.submission.id);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Field order is drop order: the writer finishes before the temporary
    // directory (if any) is removed.
    writer: Writer,
    // Stopped by a signal of its own; its drop waits a bounded time.
    _checkpointer: checkpoint::Checkpointer,
    readers: Arc<ReadPool>,
    config: SqliteConfig,
    /// The key of fingerprints and body hashes (`liaison_secrets`).
    key: StoreKey,
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `path` with the recommended settings.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteConfig::default())
    }

    /// Open (creating if missing) the database at `path`.
    ///
    /// Applies pending migrations; refuses with [`Error::SchemaTooNew`] a
    /// database written by a newer liaison, and with
    /// [`Error::MigrationChanged`] one whose applied migrations differ from
    /// this build's (their recorded checksums).
    pub fn open_with(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self> {
        Self::open_inner(path.as_ref().to_path_buf(), config, None)
    }

    /// A store on a fresh database in a temporary directory, removed when the
    /// last clone is dropped. For tests and examples: it behaves exactly like
    /// a file store (WAL, separate readers), it just does not outlive you.
    pub fn open_temporary() -> Result<Self> {
        Self::open_temporary_with(SqliteConfig::default())
    }

    /// Like [`SqliteStore::open_temporary`], with settings.
    pub fn open_temporary_with(config: SqliteConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("liaison-")
            .tempdir()
            .map_err(|e| Error::Storage {
                operation: "create temporary directory",
                source: Box::new(e),
            })?;
        let path = dir.path().join("liaison.db");
        Self::open_inner(path, config, Some(dir))
    }

    fn open_inner(
        path: PathBuf,
        config: SqliteConfig,
        temp: Option<tempfile::TempDir>,
    ) -> Result<Self> {
        config.check()?;
        create_private(&path);
        let mut conn = connect(&path, &config)?;
        migrate::migrate(&conn)?;
        let key = migrate::store_key(&conn)?;
        let callers = Arc::new(CallerWrites::new(config.busy_timeout));
        let checkpointer = checkpoint::Checkpointer::start(&mut conn, &path, &config, &callers)?;
        // The writer walks a dozen indexes per submission; a 16 MiB page
        // cache (SQLite's default is 2 MiB) keeps their upper levels in
        // memory however long the history grows. Each grouped operation runs
        // in a savepoint, whose sub-journal SQLite spills to a temporary
        // file past 64 KiB: keeping it in memory saves a file write per
        // page per operation.
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;")
            .map_err(db_err("set writer pragmas"))?;
        let readers = Arc::new(ReadPool::new(path.clone(), config.clone()));
        // A small write may run on its caller's thread only where a commit
        // never waits for the disk (not under `synchronous=FULL`) and never
        // checkpoints (the checkpointer runs, and takes the backstop's
        // checkpoint off callers: see `CallerWrites`).
        let writer = if checkpointer.is_running() && config.synchronous != Synchronous::Full {
            Writer::spawn_sharing(conn, callers)?
        } else {
            Writer::spawn(conn)?
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer,
                _checkpointer: checkpointer,
                readers,
                config,
                key,
                path,
                _temp: temp,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings in force.
    pub fn config(&self) -> &SqliteConfig {
        &self.inner.config
    }

    /// A new connection to the same file, set up as the store's own are (WAL,
    /// the same `synchronous`, the busy timeout, a statement cache of 128 and
    /// SQLite's query planner stability guarantee, under which plans do not
    /// depend on bound values). Use it for the host's business writes that
    /// must commit together with an enqueue.
    pub fn connect(&self) -> Result<Connection> {
        connect(&self.inner.path, &self.inner.config)
    }

    /// Enqueue inside the host's own transaction on the same database file:
    /// the host's business write and the submission commit or roll back
    /// together. Start the transaction with
    /// [`rusqlite::TransactionBehavior::Immediate`] so it takes the write lock
    /// up front (a deferred transaction that reads first can fail with
    /// `SQLITE_BUSY` when it starts writing).
    ///
    /// The enqueue is visible to dispatchers once the host commits. It runs
    /// in a savepoint of its own: when it fails, nothing of it stays in the
    /// transaction and the host's own work does, for the host to commit or
    /// roll back.
    ///
    /// ```
    /// use liaison::rusqlite::TransactionBehavior;
    /// use liaison::store::{OutboxStore, SqliteStore};
    /// use liaison::NewSubmission;
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = SqliteStore::open_temporary()?;
    /// let mut conn = store.connect()?;
    /// conn.execute_batch("CREATE TABLE claims (id TEXT PRIMARY KEY, amount INTEGER)")?;
    ///
    /// let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    /// tx.execute("INSERT INTO claims VALUES ('C-1', 12500)", [])?;
    /// let enqueued = store.enqueue_in_transaction(
    ///     &tx,
    ///     NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-1"}))
    ///         .idempotency_key("C-1"),
    /// )?;
    /// tx.commit()?; // both rows, or neither
    ///
    /// assert_eq!(store.get(enqueued.submission.id).await?.idempotency_key, "C-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn enqueue_in_transaction(
        &self,
        tx: &rusqlite::Transaction<'_>,
        new: NewSubmission,
    ) -> Result<Enqueued> {
        let mut all = self.enqueue_batch_in_transaction(tx, vec![new])?;
        Ok(all.remove(0))
    }

    /// Like [`SqliteStore::enqueue_in_transaction`] for several submissions.
    pub fn enqueue_batch_in_transaction(
        &self,
        tx: &rusqlite::Transaction<'_>,
        batch: Vec<NewSubmission>,
    ) -> Result<Vec<Enqueued>> {
        self.check_same_database(tx)?;
        let valid = self.validate(batch)?;
        let retention = self.inner.config.ledger_retention;
        tx.execute_batch(super::common::HOST_ENQUEUE_BEGIN)
            .map_err(db_err("savepoint"))?;
        let result = run(flow::enqueue(
            &Sql(tx),
            &valid,
            retention,
            crate::clock::now(),
        ));
        tx.execute_batch(super::common::host_enqueue_end(&result))
            .map_err(db_err("end savepoint"))?;
        result
    }

    fn check_same_database(&self, conn: &Connection) -> Result<()> {
        let theirs = conn.path().filter(|p| !p.is_empty()).map(PathBuf::from);
        let same = match theirs {
            Some(theirs) => same_file(&theirs, &self.inner.path),
            None => false,
        };
        if same {
            Ok(())
        } else {
            Err(Error::invalid(
                "transaction",
                format!(
                    "it is not on the store's database file {}",
                    self.inner.path.display()
                ),
            ))
        }
    }

    fn validate(&self, batch: Vec<NewSubmission>) -> Result<Vec<ValidSubmission>> {
        crate::store::common::validate(batch, self.inner.config.max_payload_bytes, &self.inner.key)
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.inner.readers.read(f).await
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Create the database file readable and writable by its owner only
/// (`0600`) when it does not exist yet, before SQLite opens it: SQLite gives
/// the `-wal` and `-shm` files it creates the main file's permissions, so
/// all three stay private. An existing file is left as it is; any other
/// failure is left for SQLite's open to report.
#[cfg(unix)]
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return;
    }
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

#[cfg(not(unix))]
fn create_private(_path: &Path) {}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// Open a connection with the store's pragmas.
pub(super) fn connect(path: &Path, config: &SqliteConfig) -> Result<Connection> {
    #[cfg_attr(not(test), allow(unused_mut))]
    let mut conn = Connection::open(path).map_err(db_err("open database"))?;
    #[cfg(test)]
    plans::watch(&mut conn, path);
    // The store runs a few dozen distinct statements; rusqlite caches 16 by
    // default, so the hot ones were evicted and parsed again and again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans must not depend on bound values: otherwise SQLite marks a
    // statement whose plan looked at a parameter (a `LIMIT ?`, a value
    // compared with a partial index's condition) to be compiled again each
    // time that parameter changes, which defeats the statement cache. The
    // plans test checks the plans this leaves.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db_err("set query planner stability"))?;
    // Only takes effect on a new, empty database (before the first table):
    // lets retention give space back with `incremental_vacuum`. An existing
    // file keeps its mode until a one-time `VACUUM`.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
        .map_err(db_err("set auto_vacuum"))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(db_err("set busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(db_err("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage {
            operation: "enable WAL",
            source: format!("journal_mode stayed {mode}").into(),
        });
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;",
        config.synchronous.pragma()
    ))
    .map_err(db_err("set pragmas"))?;
    Ok(conn)
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn enqueue(&self, new: NewSubmission) -> Result<Enqueued> {
        let mut all = self.enqueue_batch(vec![new]).await?;
        Ok(all.remove(0))
    }

    async fn enqueue_batch(&self, batch: Vec<NewSubmission>) -> Result<Vec<Enqueued>> {
        let valid = self.validate(batch)?;
        let one = valid.len() == 1;
        let retention = self.inner.config.ledger_retention;
        let write = move |conn: &Connection| {
            run(flow::enqueue(
                &Sql(conn),
                &valid,
                retention,
                crate::clock::now(),
            ))
        };
        // One submission is a few statements: written on this thread when
        // the writer is idle; a batch waits for the writer's thread.
        if one {
            return self.inner.writer.write_small(write).await;
        }
        self.inner.writer.write(write).await
    }

    async fn get(&self, id: SubmissionId) -> Result<Submission> {
        self.read(move |conn| queries::get_on(conn, id)).await
    }

    async fn get_by_key(&self, partner: &str, idempotency_key: &str) -> Result<Submission> {
        lookup::check_key(partner, idempotency_key)?;
        let (p, k) = (partner.to_owned(), idempotency_key.to_owned());
        self.read(move |conn| queries::by_key_on(conn, &p, &k))
            .await?
            .ok_or_else(|| lookup::key_not_found(partner, idempotency_key))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Submission>> {
        filter.check()?;
        let filter = filter.clone();
        self.read(move |conn| queries::list_on(conn, &filter)).await
    }

    async fn timeline(&self, id: SubmissionId) -> Result<Vec<Event>> {
        self.read(move |conn| queries::timeline_on(conn, id)).await
    }

    async fn attempts(&self, id: SubmissionId) -> Result<Vec<Attempt>> {
        self.read(move |conn| queries::attempts_on(conn, id)).await
    }

    fn now(&self) -> DateTime<Utc> {
        crate::clock::now()
    }

    async fn claim_limited(&self, request: ClaimRequest) -> Result<Claimed> {
        crate::model::submission::validate_partner(&request.partner)?;
        self.inner
            .writer
            .write_joining(move |conn| run(flow::claim(&Sql(conn), &request)))
            .await
    }

    async fn complete(
        &self,
        lease: &Lease,
        report: AttemptReport,
        change: StateChange,
    ) -> Result<Submission> {
        let lease = lease.clone();
        let id = lease.submission.id;
        // A stale result is journaled and committed, then refused.
        self.inner
            .writer
            .write(move |conn| {
                run(flow::complete(
                    &Sql(conn),
                    &lease,
                    &report,
                    &change,
                    crate::clock::now(),
                ))
            })
            .await?
            .answer(id)
    }

    async fn complete_batch(
        &self,
        finished: Vec<FinishedAttempt>,
    ) -> Result<Vec<Result<Submission>>> {
        self.complete_batch_handing_over(finished, HandOver::nothing())
            .await
    }

    async fn complete_batch_handing_over(
        &self,
        finished: Vec<FinishedAttempt>,
        hand_over: HandOver,
    ) -> Result<Vec<Result<Submission>>> {
        let ids: Vec<SubmissionId> = finished.iter().map(|f| f.lease.submission.id).collect();
        // Stale results are journaled and committed, then refused. Once
        // the batch is in the writer's queue, every later write runs after
        // it: it is handed over.
        let answers = self
            .inner
            .writer
            .write_then(
                move |conn| {
                    run(flow::complete_batch(
                        &Sql(conn),
                        &finished,
                        crate::clock::now(),
                    ))
                },
                || hand_over.run(),
            )
            .await?;
        Ok(answers
            .into_iter()
            .zip(ids)
            .map(|(answer, id)| answer.and_then(|done| done.answer(id)))
            .collect())
    }

    async fn transition(&self, id: SubmissionId, change: StateChange) -> Result<Submission> {
        self.inner
            .writer
            .write(move |conn| {
                run(flow::transition(
                    &Sql(conn),
                    id,
                    &change,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn replay(&self, id: SubmissionId, replay: Replay) -> Result<Submission> {
        let retention = self.inner.config.ledger_retention;
        self.inner
            .writer
            .write(move |conn| {
                run(flow::replay(
                    &Sql(conn),
                    id,
                    &replay,
                    retention,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn note(&self, id: SubmissionId, note: Note) -> Result<()> {
        self.inner
            .writer
            .write(move |conn| run(flow::note(&Sql(conn), id, &note, crate::clock::now())))
            .await
    }

    async fn record_callback(&self, callback: NewCallback) -> Result<CallbackId> {
        let callback = crate::store::common::keyed_callback(callback, &self.inner.key);
        self.inner
            .writer
            .write(move |conn| run(flow::record_callback(&Sql(conn), &callback)))
            .await
    }

    async fn record_and_settle_callback(
        &self,
        callback: NewCallback,
        settlement: Settlement,
    ) -> Result<CallbackReceipt> {
        let callback = crate::store::common::keyed_callback(callback, &self.inner.key);
        self.inner
            .writer
            .write(move |conn| {
                run(flow::record_and_settle(
                    &Sql(conn),
                    &callback,
                    &settlement,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn settle_callback(
        &self,
        id: CallbackId,
        settlement: Settlement,
    ) -> Result<CallbackReceipt> {
        self.inner
            .writer
            .write(move |conn| {
                run(flow::settle(
                    &Sql(conn),
                    id,
                    &settlement,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn forget(&self, id: SubmissionId, actor: Actor, reason: String) -> Result<Submission> {
        self.inner
            .writer
            .write(move |conn| run(flow::forget(&Sql(conn), id, &actor, &reason, Utc::now())))
            .await
    }

    async fn dismiss_callback(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: String,
    ) -> Result<StoredCallback> {
        self.inner
            .writer
            .write(move |conn| {
                run(flow::dismiss_callback(
                    &Sql(conn),
                    id,
                    &actor,
                    &reason,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn callback(&self, id: CallbackId) -> Result<StoredCallback> {
        self.read(move |conn| callbacks::callback_on(conn, id))
            .await
    }

    async fn list_callbacks(&self, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
        let filter = filter.clone();
        self.read(move |conn| callbacks::list_on(conn, &filter))
            .await
    }

    async fn defer_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        note: Note,
    ) -> Result<Submission> {
        self.inner
            .writer
            .write(move |conn| {
                run(flow::defer_deadline(
                    &Sql(conn),
                    id,
                    until,
                    &note,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn expire_unmatched(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner
            .writer
            .write(move |conn| deadlines::expire_unmatched_on(conn, now))
            .await
    }

    async fn overdue_results(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Submission>> {
        self.read(move |conn| deadlines::overdue_on(conn, now, limit))
            .await
    }

    async fn claim_overdue(&self, claim: OverdueClaim) -> Result<Vec<Submission>> {
        self.inner
            .writer
            .write(move |conn| deadlines::claim_overdue_on(conn, &claim))
            .await
    }

    async fn reap_expired_leases(
        &self,
        now: DateTime<Utc>,
        policy: &ReapPolicy,
    ) -> Result<Vec<Reaped>> {
        let policy = policy.clone();
        self.inner
            .writer
            .write(move |conn| run(flow::reap(&Sql(conn), now, &policy)))
            .await
    }

    async fn open_alert(&self, alert: NewAlert) -> Result<(Alert, bool)> {
        self.inner
            .writer
            .write(move |conn| alerts::open_alert_on(conn, &alert))
            .await
    }

    async fn alert_notified(&self, id: AlertId, at: DateTime<Utc>) -> Result<()> {
        self.inner
            .writer
            .write(move |conn| alerts::notified_on(conn, id, at))
            .await
    }

    async fn resolve_alert(&self, id: AlertId, at: DateTime<Utc>) -> Result<Alert> {
        self.inner
            .writer
            .write(move |conn| alerts::resolve_on(conn, id, at))
            .await
    }

    async fn acknowledge_alert(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Alert> {
        self.inner
            .writer
            .write(move |conn| alerts::acknowledge_on(conn, id, &actor, at))
            .await
    }

    async fn acknowledge_alert_journaled(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
        line: JournalLine,
    ) -> Result<(Alert, JournalEntry)> {
        self.inner
            .writer
            .write(move |conn| {
                let alert = alerts::acknowledge_on(conn, id, &actor, at)?;
                Ok((alert, journal::write_on(conn, &line)?))
            })
            .await
    }

    async fn alerts(&self, open_only: bool, limit: usize) -> Result<Vec<Alert>> {
        self.read(move |conn| alerts::alerts_on(conn, open_only, limit))
            .await
    }

    async fn alert(&self, id: AlertId) -> Result<Alert> {
        self.read(move |conn| alerts::get_alert(conn, id)).await
    }

    async fn record_notifications(&self, rows: Vec<AlertNotification>) -> Result<()> {
        self.inner
            .writer
            .write(move |conn| notifications::record_on(conn, &rows))
            .await
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AlertNotification>> {
        self.inner
            .writer
            .write(move |conn| notifications::claim_on(conn, now, until, limit))
            .await
    }

    async fn finish_notification(&self, write: NotificationWrite) -> Result<bool> {
        self.inner
            .writer
            .write(move |conn| {
                let finished = notifications::finish_on(conn, &write)?;
                if finished && let Some(round) = write.notified_round {
                    alerts::notified_on(conn, write.alert_id, round)?;
                }
                Ok(finished)
            })
            .await
    }

    async fn alert_notifications(&self, id: AlertId) -> Result<Vec<AlertNotification>> {
        self.read(move |conn| notifications::of_alert_on(conn, id))
            .await
    }

    async fn pending_notifications(&self, limit: usize) -> Result<Vec<AlertNotification>> {
        self.read(move |conn| notifications::pending_on(conn, limit))
            .await
    }

    async fn sink_failures(&self) -> Result<Vec<SinkFailure>> {
        self.read(notifications::failures_on).await
    }

    async fn set_pause(&self, partner: &str, pause: Option<Pause>) -> Result<()> {
        crate::model::submission::validate_partner(partner)?;
        let partner = partner.to_owned();
        self.inner
            .writer
            .write(move |conn| {
                partners::set_pause_on(conn, &partner, pause.as_ref(), crate::clock::now())
            })
            .await
    }

    async fn set_pause_journaled(
        &self,
        partner: &str,
        pause: Option<Pause>,
        line: JournalLine,
    ) -> Result<JournalEntry> {
        crate::model::submission::validate_partner(partner)?;
        let partner = partner.to_owned();
        self.inner
            .writer
            .write(move |conn| {
                partners::set_pause_on(conn, &partner, pause.as_ref(), crate::clock::now())?;
                journal::write_on(conn, &line)
            })
            .await
    }

    async fn journal(&self, line: JournalLine) -> Result<JournalEntry> {
        self.inner
            .writer
            .write(move |conn| journal::write_on(conn, &line))
            .await
    }

    async fn ops_journal(&self, filter: &JournalFilter) -> Result<Vec<JournalEntry>> {
        let filter = filter.clone();
        self.read(move |conn| journal::read_on(conn, &filter)).await
    }

    async fn pauses(&self, now: DateTime<Utc>) -> Result<Vec<Pause>> {
        self.read(move |conn| partners::pauses_on(conn, now)).await
    }

    async fn circuits(&self) -> Result<Vec<SharedCircuit>> {
        self.read(shared::circuits_on).await
    }

    async fn circuit(&self, partner: &str) -> Result<SharedCircuit> {
        crate::model::submission::validate_partner(partner)?;
        let partner = partner.to_owned();
        self.read(move |conn| shared::circuit_on(conn, &partner))
            .await
    }

    async fn circuit_step(
        &self,
        partner: &str,
        step: CircuitStep,
        now: DateTime<Utc>,
    ) -> Result<CircuitOutcome> {
        let partner = partner.to_owned();
        self.inner
            .writer
            .write(move |conn| run(flow::circuit_step(&Sql(conn), &partner, &step, now)))
            .await
    }

    async fn claim_role(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_for: std::time::Duration,
    ) -> Result<bool> {
        let (role, holder) = (role.to_owned(), holder.to_owned());
        self.inner
            .writer
            .write(move |conn| run(flow::claim_role(&Sql(conn), &role, &holder, now, lease_for)))
            .await
    }

    async fn release_role(&self, role: &str, holder: &str, now: DateTime<Utc>) -> Result<()> {
        let (role, holder) = (role.to_owned(), holder.to_owned());
        self.inner
            .writer
            .write(move |conn| run(flow::release_role(&Sql(conn), &role, &holder, now)))
            .await
    }

    async fn roles(&self) -> Result<Vec<RoleLease>> {
        self.read(shared::roles_on).await
    }

    async fn beat(&self, instance: &Instance) -> Result<()> {
        let instance = instance.clone();
        self.inner
            .writer
            .write(move |conn| instances::beat_on(conn, &instance))
            .await
    }

    async fn stop_instance(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        let id = id.to_owned();
        self.inner
            .writer
            .write(move |conn| instances::stop_on(conn, &id, at))
            .await
    }

    async fn instances(&self) -> Result<Vec<Instance>> {
        self.read(instances::instances_on).await
    }

    async fn prune_instances(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner
            .writer
            .write(move |conn| instances::prune_on(conn, before, crate::clock::now()))
            .await
    }

    async fn set_expected_traffic(
        &self,
        partner: &str,
        expected: Option<&ExpectedTraffic>,
    ) -> Result<()> {
        super::common::check_expected_traffic(partner, expected)?;
        let partner = partner.to_owned();
        let expected = expected.cloned();
        self.inner
            .writer
            .write(move |conn| {
                instances::set_expected_traffic_on(
                    conn,
                    &partner,
                    expected.as_ref(),
                    crate::clock::now(),
                )
            })
            .await
    }

    async fn expected_traffic(&self) -> Result<Vec<(String, ExpectedTraffic)>> {
        self.read(instances::expected_traffic_on).await
    }

    async fn set_result_delivery(&self, partner: &str, on: bool) -> Result<()> {
        crate::model::submission::validate_partner(partner)?;
        let partner = partner.to_owned();
        self.inner
            .writer
            .write(move |conn| {
                deliveries::set_result_delivery_on(conn, &partner, on, crate::clock::now())
            })
            .await
    }

    async fn claim_deliveries(&self, claim: DeliveryClaim) -> Result<Vec<DeliveryLease>> {
        self.inner
            .writer
            .write(move |conn| run(flow::claim_deliveries(&Sql(conn), &claim)))
            .await
    }

    async fn finish_delivery(&self, lease: &DeliveryLease, end: DeliveryEnd) -> Result<()> {
        let lease = lease.clone();
        self.inner
            .writer
            .write(move |conn| {
                run(flow::finish_delivery(
                    &Sql(conn),
                    &lease,
                    &end,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        let filter = filter.clone();
        self.read(move |conn| deliveries::list_on(conn, &filter))
            .await
    }

    async fn rerun_delivery(&self, id: DeliveryId, note: Note) -> Result<Delivery> {
        self.inner
            .writer
            .write(move |conn| {
                run(flow::rerun_delivery(
                    &Sql(conn),
                    id,
                    &note,
                    crate::clock::now(),
                ))
            })
            .await
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Vec<PartnerStats>> {
        let query = query.clone();
        self.read(move |conn| stats::stats_on(conn, &query)).await
    }

    async fn hourly_counts(&self, query: &HourlyQuery) -> Result<Vec<HourlyCount>> {
        let query = query.clone();
        self.read(move |conn| queries::hourly_on(conn, &query))
            .await
    }

    async fn purge(&self, cutoffs: PurgeCutoffs) -> Result<PurgeReport> {
        self.inner
            .writer
            .write(move |conn| retention::purge_on(conn, &cutoffs, crate::clock::now()))
            .await
    }

    async fn prune_ledger(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner
            .writer
            .write(move |conn| retention::prune_ledger_on(conn, now))
            .await
    }
}

#[cfg(test)]
impl SqliteStore {
    /// Keep the writer busy until the sender is used or dropped: answers
    /// once the operation holding it runs, with the sender and the task
    /// that ends when the writer is let go.
    pub(crate) async fn hold_writer(
        &self,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (op, release, running) = writer::held_op(|_| Ok(()));
        let store = self.clone();
        let busy = tokio::spawn(async move { store.inner.writer.write(op).await });
        running.await.unwrap();
        (release, busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's threads show as themselves where Linux lists threads
    /// (`/proc/<pid>/task/*/comm`, what `top -H`, `perf` and debuggers
    /// read): each name fits in the 15 bytes kept, so the writer and the
    /// checkpointer are told apart in a profile or a dump of stuck threads.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_and_checkpointer_threads_are_told_apart_by_the_system() {
        use super::checkpoint::CHECKPOINT_THREAD;
        use super::writer::WRITER_THREAD;
        let config = SqliteConfig::default().synchronous(Synchronous::Normal);
        let store = SqliteStore::open_temporary_with(config).unwrap();
        assert!(store.inner._checkpointer.is_running());
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|comm| comm.trim_end().to_owned())
                .collect()
        };
        // A new thread carries its parent's name until it has started and
        // named itself: wait for that, within a bound.
        let named = |names: &[String]| {
            [WRITER_THREAD, CHECKPOINT_THREAD]
                .iter()
                .all(|name| names.iter().any(|n| n == name))
        };
        let mut seen = names();
        for _ in 0..200 {
            if named(&seen) {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
            seen = names();
        }
        assert!(
            named(&seen),
            "{WRITER_THREAD} and {CHECKPOINT_THREAD} in {seen:?}"
        );
        drop(store);
    }

    /// A batch of results is handed over once it is in the writer's queue,
    /// before it runs; a claim made then runs after it, in the same
    /// transaction, and finds free the slot the results give back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_made_once_results_are_handed_over_runs_after_them() {
        use crate::AttemptOutcome;
        use crate::model::submission::NewSubmission;
        use crate::model::submission::SubmissionState::{InFlight, Succeeded};
        use crate::store::{AttemptReport, ClaimRequest, PartnerLimits, StateChange};

        let store = Arc::new(SqliteStore::open_temporary().unwrap());
        for key in ["k1", "k2"] {
            let new = NewSubmission::new("bank", "claim.submit", serde_json::json!({ "k": key }))
                .idempotency_key(key);
            store.enqueue(new).await.unwrap();
        }
        // One slot for the partner, across every instance.
        let claim = |store: &SqliteStore| {
            ClaimRequest::new("bank", 1, Duration::from_secs(30))
                .at(store.now())
                .limits(PartnerLimits::none().concurrency(1))
                .claimer("instance-a", 0)
        };
        let first = store.claim_limited(claim(&store)).await.unwrap();
        let [lease] = first.leases.as_slice() else {
            panic!("one lease: {first:?}")
        };
        assert!(
            store
                .claim_limited(claim(&store))
                .await
                .unwrap()
                .leases
                .is_empty()
        );

        // The writer is busy with something else while the result comes.
        let (release, busy) = store.hold_writer().await;
        // Handed over while the writer is still busy, so before the batch
        // ran; the claim made then is queued after it.
        let (claimed_tx, claimed) = tokio::sync::oneshot::channel();
        let (handed_tx, handed) = tokio::sync::oneshot::channel();
        let claimer = Arc::clone(&store);
        let hand_over = HandOver::new(move || {
            let request = claim(&claimer);
            tokio::spawn(async move {
                let _ = claimed_tx.send(claimer.claim_limited(request).await);
            });
            let _ = handed_tx.send(());
        });
        let done = FinishedAttempt::new(
            lease.clone(),
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(Succeeded),
        );
        let results = Arc::clone(&store);
        let batch = tokio::spawn(async move {
            results
                .complete_batch_handing_over(vec![done], hand_over)
                .await
        });
        tokio::time::timeout(Duration::from_secs(30), handed)
            .await
            .expect("handed over before the writer is free")
            .unwrap();
        assert!(!batch.is_finished(), "the batch has not run yet");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let answers = batch.await.unwrap().unwrap();
        assert_eq!(answers[0].as_ref().unwrap().state, Succeeded);
        let next = claimed.await.unwrap().unwrap();
        assert_eq!(next.leases.len(), 1, "the freed slot is taken: {next:?}");
        assert_ne!(next.leases[0].submission.id, lease.submission.id);
        assert_eq!(next.leases[0].submission.state, InFlight);
    }

    /// A caller's thread writes only where a commit never waits for the
    /// disk: under `NORMAL`, never under `FULL` (the default).
    #[test]
    fn only_under_normal_do_callers_write_on_their_own_thread() {
        for (synchronous, shares) in [(Synchronous::Full, false), (Synchronous::Normal, true)] {
            let config = SqliteConfig::default().synchronous(synchronous);
            let store = SqliteStore::open_temporary_with(config).unwrap();
            assert_eq!(
                store.inner.writer.shares_with_callers(),
                shares,
                "{synchronous:?}"
            );
        }
        assert!(
            !SqliteStore::open_temporary()
                .unwrap()
                .inner
                .writer
                .shares_with_callers()
        );
    }
}
