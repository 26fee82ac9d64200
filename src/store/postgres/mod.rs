//! [`PostgresStore`]: the outbox on PostgreSQL, for several host instances
//! sharing one outbox.
//!
//! # Driver
//!
//! [tokio-postgres] with a [deadpool-postgres] pool. tokio-postgres is the
//! well-kept native async driver (no libpq), and deadpool adds only a small
//! pool with a per-connection statement cache. sqlx would bring a second SQL
//! toolkit and compile-time query checking the crate does not use; the SQL
//! here is plain, parameterised text like the SQLite store's. Driver types
//! appear in one public signature only:
//! [`PostgresStore::enqueue_in_transaction`] takes the host's
//! `tokio_postgres::Transaction`, as the SQLite store takes a rusqlite one.
//!
//! Connections use TLS (rustls, through tokio-postgres-rustls) when
//! [`PostgresConfig::tls`] says so; by default they are plain, for a local
//! socket or a private network.
//!
//! # Behaviour
//!
//! The same as [`crate::store::SqliteStore`], checked by one conformance
//! suite: every write is one `READ COMMITTED` transaction; claims take rows
//! with `FOR UPDATE SKIP LOCKED` under a fresh lease token; the idempotency
//! ledger's primary key decides concurrent enqueues of one key; settling a
//! callback locks what it decides about; a partial unique index keeps one
//! alert open per (partner, class). The counts by state that health reads
//! are kept without a shared row: each statement that changes submissions
//! appends its net change per (partner, state, currency) (a trigger, so the
//! host's transactions of [`PostgresStore::enqueue_in_transaction`] count
//! too, when they commit), and the deltas are folded into the counts before
//! a health read and on the lease reaper's pass. No writer waits for
//! another over a counter. See `docs/scaling.md`.
//!
//! [tokio-postgres]: https://docs.rs/tokio-postgres
//! [deadpool-postgres]: https://docs.rs/deadpool-postgres

mod alerts;
mod callbacks;
mod clock;
mod config;
mod db;
mod deadlines;
mod deliveries;
mod driver;
mod hints;
mod instances;
mod journal;
mod listen;
mod migrate;
mod notifications;
mod partners;
#[cfg(test)]
mod plans;
mod privacy;
mod queries;
mod results;
mod retention;
mod shared;
mod stats;
mod tls;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::IsolationLevel;
use tokio_postgres::NoTls;

pub use self::config::{PostgresConfig, PostgresTls};
pub use self::results::PostgresResultHandler;

use self::db::{Db, pg_err, pool_err};
use super::flow;
use super::rules::lookup;
use super::{
    AttemptReport, CallbackFilter, ClaimRequest, Claimed, DeliveryClaim, DeliveryEnd,
    DeliveryFilter, DeliveryLease, Enqueued, FinishedAttempt, HourlyCount, HourlyQuery, Instance,
    Lease, ListFilter, NewAlert, NewCallback, Note, NotificationWrite, OutboxStore, OverdueClaim,
    PartnerStats, Pause, PurgeCutoffs, PurgeReport, ReapPolicy, Reaped, Replay, Settlement,
    StateChange, StatsQuery, Wakeups,
};
use super::{CircuitOutcome, CircuitStep, RoleLease, SharedCircuit};
use crate::error::{Error, Result};
use crate::fingerprint::StoreKey;
use crate::model::alert::{Alert, AlertId};
use crate::model::callback::{CallbackId, CallbackReceipt, StoredCallback};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::event::{Actor, Attempt, Event};
use crate::model::notification::{AlertNotification, SinkFailure};
use crate::model::submission::{
    NewSubmission, Submission, SubmissionId, SubmissionState, ValidSubmission,
};
use crate::model::traffic::ExpectedTraffic;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine};

/// The outbox on PostgreSQL: a pool of connections, every write one
/// `READ COMMITTED` transaction, and row locks where instances could race.
///
/// Cloning is cheap; clones share the pool. Tables are named `liaison_*`
/// (in [`PostgresConfig::schema`] if set), so the store can share the host's
/// own database — which is what makes
/// [`PostgresStore::enqueue_in_transaction`] possible.
///
/// ```no_run
/// use liaison::store::{OutboxStore, PostgresConfig, PostgresStore};
/// use liaison::NewSubmission;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liaison::Result<()> {
/// let store = PostgresStore::connect(
///     "postgres://liaison@db.internal/app",
///     PostgresConfig::default().schema("liaison"),
/// )
/// .await?;
/// let first = store
///     .enqueue(NewSubmission::new("bank", "payment", json!({"cents": 500})).idempotency_key("pay-1"))
///     .await?;
/// assert!(!first.deduplicated);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    hints: hints::Hints,
    config: PostgresConfig,
    /// The key of fingerprints and body hashes (`liaison_secrets`).
    key: StoreKey,
    database: String,
    listener: Arc<listen::Listener>,
    /// The database server's clock, as measured from here.
    clock: clock::DbClock,
}

impl fmt::Debug for PostgresStore {
    // The URL may carry a password: show only where the tables are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.inner.database)
            .field("schema", &self.inner.config.schema)
            .field("pool_size", &self.inner.config.pool_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string), apply pending migrations, and keep a
    /// pool of up to [`PostgresConfig::pool_size`] connections.
    ///
    /// Migrations run in one transaction under an advisory lock, so
    /// instances starting together apply them once. A database written by a
    /// newer liaison is refused with [`Error::SchemaTooNew`], one whose
    /// applied migrations differ from this build's (their recorded
    /// checksums) with [`Error::MigrationChanged`]; either way nothing is
    /// touched.
    ///
    /// With [`PostgresConfig::migrate`] off, nothing is created or migrated:
    /// the outbox must exist at this build's schema version, or `connect`
    /// fails touching nothing — [`Error::NotFound`] for a missing schema or
    /// a schema without liaison's tables, [`Error::SchemaTooOld`] for an
    /// older one. A server that cannot be reached is
    /// [`Error::Unavailable`]; a URL that does not parse,
    /// [`Error::InvalidInput`].
    pub async fn connect(url: &str, config: PostgresConfig) -> Result<Self> {
        config.check()?;
        // The URL may carry a password; the driver's message does not echo it.
        let mut pg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            // The cause names the option or value at fault ("unknown
            // option `x`"), never the password.
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            Error::invalid("url", format!("{e}{cause}"))
        })?;
        if pg.get_hosts().is_empty() && pg.get_hostaddrs().is_empty() {
            return Err(Error::invalid(
                "url",
                "it names no host: give postgres://user@host[:port]/database",
            ));
        }
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        if let Some(schema) = &config.schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        options.push_str(&format!(
            " -c lock_timeout={}",
            config.lock_timeout.as_millis()
        ));
        // The store sends its own wake-up hints after commit (`hints`).
        options.push_str(" -c liaison.quiet=on");
        pg.options(options.trim());
        // With TLS configured, a server that offers none is refused, unless
        // the URL says otherwise (`sslmode=prefer` or `disable`): the
        // driver's default, `prefer`, would silently fall back to plain TCP,
        // which anyone on the path can force.
        if config.tls != PostgresTls::Disabled && !url.contains("sslmode") {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("liaison");
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(config.acquire_timeout);
        }
        // The LISTEN connection lives outside the pool, named so operators
        // (and tests) can tell it apart in pg_stat_activity.
        let mut listen_config = pg.clone();
        listen_config.application_name(listen::application_name(
            config.schema.as_deref().unwrap_or("default"),
        ));
        let tls = tls::connector(&config.tls)?;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(pg, tls, manager_config()),
            None => Manager::from_config(pg, NoTls, manager_config()),
        };
        let wait = Some(config.acquire_timeout);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(wait)
            .create_timeout(wait)
            .recycle_timeout(wait)
            .build()
            .map_err(|e| Error::Storage {
                operation: "create connection pool",
                source: Box::new(e),
            })?;
        let mut client = pool.get().await.map_err(pool_err)?;
        if config.migrate {
            migrate::migrate(&mut client, config.schema.as_deref(), config.lock_timeout).await?;
        } else {
            migrate::check_existing(&mut client, config.schema.as_deref()).await?;
        }
        let key = migrate::store_key(&client).await?;
        let database: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .map_err(pg_err("read database name"))?
            .try_get(0)
            .map_err(pg_err("read database name"))?;
        let clock = clock::DbClock::default();
        let offset = clock.measure(&client).await?;
        tracing::debug!(offset_us = offset, "measured the database's clock");
        drop(client);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                hints: hints::Hints::start(pool.clone()),
                pool,
                config,
                key,
                database,
                listener: Arc::new(listen::Listener::new(listen_config, tls)),
                clock,
            }),
        })
    }

    /// The settings in force.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// Enqueue inside the host's own transaction on the same database: the
    /// host's business write and the submission commit or roll back
    /// together. The host's `tokio_postgres` must be the version liaison is
    /// built with (0.7).
    ///
    /// The enqueue runs inside a savepoint, so an error (a conflict, bad
    /// input) leaves the host's transaction usable. With
    /// [`PostgresConfig::schema`] set, the store's schema is put on the
    /// transaction's `search_path` for the enqueue only. Use the default
    /// `READ COMMITTED` isolation: under `REPEATABLE READ` or `SERIALIZABLE`
    /// an enqueue racing another of the same key fails with [`Error::Busy`]
    /// (retry the host's transaction). The enqueue is visible to dispatchers
    /// once the host commits.
    ///
    /// ```no_run
    /// use liaison::store::{OutboxStore, PostgresConfig, PostgresStore};
    /// use liaison::NewSubmission;
    /// use serde_json::json;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "postgres://app@db.internal/app";
    /// let store = PostgresStore::connect(url, PostgresConfig::default()).await?;
    /// // The host's own connection (tokio-postgres 0.7), on the same database.
    /// let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    /// tokio::spawn(connection);
    ///
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO claims (id, cents) VALUES ('C-1', 12500)", &[]).await?;
    /// let enqueued = store
    ///     .enqueue_in_transaction(
    ///         &tx,
    ///         NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-1"}))
    ///             .idempotency_key("C-1"),
    ///     )
    ///     .await?;
    /// tx.commit().await?; // both rows, or neither
    ///
    /// assert_eq!(store.get(enqueued.submission.id).await?.idempotency_key, "C-1");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn enqueue_in_transaction(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        new: NewSubmission,
    ) -> Result<Enqueued> {
        let mut all = self.enqueue_batch_in_transaction(tx, vec![new]).await?;
        Ok(all.remove(0))
    }

    /// Like [`PostgresStore::enqueue_in_transaction`] for several submissions.
    pub async fn enqueue_batch_in_transaction(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        batch: Vec<NewSubmission>,
    ) -> Result<Vec<Enqueued>> {
        let valid = self.validate(batch)?;
        let db = Db::new(tx.client(), None);
        let database: String = db
            .query_one("SELECT current_database()::text", &[], "read database name")
            .await
            .and_then(|row| db::get(&row, 0))?;
        if database != self.inner.database {
            return Err(Error::invalid(
                "transaction",
                format!(
                    "it is not on the store's database {:?}",
                    self.inner.database
                ),
            ));
        }
        db.batch(super::common::HOST_ENQUEUE_BEGIN, "savepoint")
            .await?;
        let result = self.enqueue_in_savepoint(&db, valid).await;
        db.batch(super::common::host_enqueue_end(&result), "end savepoint")
            .await?;
        result
    }

    async fn enqueue_in_savepoint(
        &self,
        db: &Db<'_>,
        valid: Vec<ValidSubmission>,
    ) -> Result<Vec<Enqueued>> {
        let Some(schema) = &self.inner.config.schema else {
            return flow::enqueue(db, &valid, self.inner.config.ledger_retention, self.now()).await;
        };
        let previous: String = db
            .query_one(
                "SELECT current_setting('search_path')",
                &[],
                "read search path",
            )
            .await
            .and_then(|row| db::get(&row, 0))?;
        db.query_one(
            "SELECT set_config('search_path', $1, true)",
            &[&schema.as_str()],
            "set search path",
        )
        .await?;
        let result =
            flow::enqueue(db, &valid, self.inner.config.ledger_retention, self.now()).await;
        if result.is_ok() {
            // On an error the savepoint's rollback restores it.
            db.query_one(
                "SELECT set_config('search_path', $1, true)",
                &[&previous],
                "restore search path",
            )
            .await?;
        }
        result
    }

    fn validate(&self, batch: Vec<NewSubmission>) -> Result<Vec<ValidSubmission>> {
        crate::store::common::validate(batch, self.inner.config.max_payload_bytes, &self.inner.key)
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(pool_err)
    }
}

/// Open a `READ COMMITTED` transaction on a pooled connection.
async fn begin(conn: &mut deadpool_postgres::Object) -> Result<deadpool_postgres::Transaction<'_>> {
    conn.build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(pg_err("begin transaction"))
}

/// The [`Db`] of an open transaction, with the connection's statement cache.
fn in_tx<'a>(tx: &'a deadpool_postgres::Transaction<'_>) -> Db<'a> {
    Db::new(tx.client(), Some(&tx.statement_cache))
}

async fn commit(tx: deadpool_postgres::Transaction<'_>) -> Result<()> {
    tx.commit().await.map_err(pg_err("commit"))
}

/// Roll `tx` back and wait for it, so that its locks are gone when the
/// caller hears of `error`. (A dropped transaction's rollback reaches the
/// server later: meanwhile a claim, which skips locked rows, missed the
/// rows the failed write had locked.) Should the rollback itself fail, the
/// connection is in doubt and its error is the answer (an unavailable one
/// keeps the connection out of the pool); the write's is logged.
async fn rolled_back(tx: deadpool_postgres::Transaction<'_>, error: Error) -> Error {
    match tx.rollback().await.map_err(pg_err("roll back")) {
        Ok(()) => error,
        Err(lost) => {
            tracing::warn!(%error, rollback = %lost, "rolling back a failed write failed");
            lost
        }
    }
}

/// Run one write in its own transaction: commit on `Ok`, roll back on `Err`.
macro_rules! write_tx {
    ($store:expr, |$db:ident| $body:expr) => {{
        let mut conn = $store.conn().await?;
        let result = async {
            let tx = begin(&mut conn).await?;
            let out = {
                let $db = &in_tx(&tx);
                $body.await
            };
            match out {
                Ok(out) => {
                    commit(tx).await?;
                    Result::<_, Error>::Ok(out)
                }
                Err(error) => Err(rolled_back(tx, error).await),
            }
        }
        .await;
        keep_unless_lost(conn, &result);
        result
    }};
}

/// Run one statement on a pooled connection, outside a transaction: a
/// write commits by itself.
macro_rules! alone {
    ($store:expr, |$db:ident| $body:expr) => {
        read!($store, |$db| $body)
    };
}

/// Run one read on a pooled connection (no transaction: one statement
/// sees one snapshot).
macro_rules! read {
    ($store:expr, |$db:ident| $body:expr) => {{
        let conn = $store.conn().await?;
        let result = {
            let $db = &Db::new(&conn, Some(&conn.statement_cache));
            $body.await
        };
        keep_unless_lost(conn, &result);
        result
    }};
}

/// Return a connection to the pool, unless the operation found it lost:
/// the pool's quick check (`is_closed`) can lag behind the error the
/// connection's last query saw, and would hand the dead connection to the
/// next caller.
fn keep_unless_lost<T>(conn: deadpool_postgres::Object, result: &Result<T>) {
    if matches!(result, Err(Error::Unavailable { .. })) {
        drop(deadpool_postgres::Object::take(conn));
    }
}

impl PostgresStore {
    /// Fold the committed state-count deltas into the counts, in a
    /// transaction of its own.
    async fn fold_counts(&self) -> Result<i64> {
        write_tx!(self, |db| stats::fold_counts_on(db))
    }
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn enqueue(&self, new: NewSubmission) -> Result<Enqueued> {
        let mut all = self.enqueue_batch(vec![new]).await?;
        Ok(all.remove(0))
    }

    async fn enqueue_batch(&self, batch: Vec<NewSubmission>) -> Result<Vec<Enqueued>> {
        let valid = self.validate(batch)?;
        let retention = self.inner.config.ledger_retention;
        let now = self.now();
        if let [one] = valid.as_slice() {
            // A new key's enqueue is one statement: run alone, it commits
            // by itself, in one round trip.
            let id = SubmissionId::new();
            let fresh = alone!(self, |db| flow::enqueue_fresh(db, one, id, retention, now))?;
            if let Some(enqueued) = fresh {
                self.inner.hints.due([&enqueued.submission], now);
                return Ok(vec![enqueued]);
            }
        }
        let enqueued = write_tx!(self, |db| flow::enqueue(db, &valid, retention, now))?;
        let new = enqueued.iter().filter(|e| !e.deduplicated);
        self.inner.hints.due(new.map(|e| &e.submission), now);
        Ok(enqueued)
    }

    async fn get(&self, id: SubmissionId) -> Result<Submission> {
        read!(self, |db| queries::get_on(db, id))
    }

    async fn get_by_key(&self, partner: &str, idempotency_key: &str) -> Result<Submission> {
        lookup::check_key(partner, idempotency_key)?;
        read!(self, |db| queries::by_key_on(db, partner, idempotency_key))?
            .ok_or_else(|| lookup::key_not_found(partner, idempotency_key))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Submission>> {
        filter.check()?;
        read!(self, |db| queries::list_on(db, filter))
    }

    async fn timeline(&self, id: SubmissionId) -> Result<Vec<Event>> {
        read!(self, |db| queries::timeline_on(db, id))
    }

    async fn attempts(&self, id: SubmissionId) -> Result<Vec<Attempt>> {
        read!(self, |db| queries::attempts_on(db, id))
    }

    async fn claim_limited(&self, request: ClaimRequest) -> Result<Claimed> {
        crate::model::submission::validate_partner(&request.partner)?;
        write_tx!(self, |db| flow::claim(db, &request))
    }

    async fn complete(
        &self,
        lease: &Lease,
        report: AttemptReport,
        change: StateChange,
    ) -> Result<Submission> {
        // A stale result is journaled and committed, then refused.
        let done = write_tx!(self, |db| flow::complete(
            db,
            lease,
            &report,
            &change,
            self.now()
        ))?
        .answer(lease.submission.id)?;
        self.inner.hints.due([&done], self.now());
        Ok(done)
    }

    async fn complete_batch(
        &self,
        finished: Vec<FinishedAttempt>,
    ) -> Result<Vec<Result<Submission>>> {
        let answers = write_tx!(self, |db| flow::complete_batch(db, &finished, self.now()))?;
        // Stale results were journaled and committed; now refused.
        let answers: Vec<Result<Submission>> = answers
            .into_iter()
            .zip(&finished)
            .map(|(answer, f)| answer.and_then(|done| done.answer(f.lease.submission.id)))
            .collect();
        self.inner
            .hints
            .due(answers.iter().filter_map(|a| a.as_ref().ok()), self.now());
        Ok(answers)
    }

    async fn transition(&self, id: SubmissionId, change: StateChange) -> Result<Submission> {
        let after = write_tx!(self, |db| flow::transition(db, id, &change, self.now()))?;
        self.inner.hints.due([&after], self.now());
        Ok(after)
    }

    async fn replay(&self, id: SubmissionId, replay: Replay) -> Result<Submission> {
        let retention = self.inner.config.ledger_retention;
        let after = write_tx!(self, |db| flow::replay(
            db,
            id,
            &replay,
            retention,
            self.now()
        ))?;
        self.inner.hints.due([&after], self.now());
        Ok(after)
    }

    async fn note(&self, id: SubmissionId, note: Note) -> Result<()> {
        write_tx!(self, |db| flow::note(db, id, &note, self.now()))
    }

    async fn reap_expired_leases(
        &self,
        now: DateTime<Utc>,
        policy: &ReapPolicy,
    ) -> Result<Vec<Reaped>> {
        let reaped = write_tx!(self, |db| flow::reap(db, now, policy))?;
        for r in reaped.iter().filter(|r| r.state == SubmissionState::Queued) {
            self.inner.hints.partner(&r.partner);
        }
        // The reaper's pass keeps the state-count deltas few, so a health
        // read sums a short list (the fold has its own transaction: it
        // never holds the reaped rows).
        self.fold_counts().await?;
        Ok(reaped)
    }

    async fn record_callback(&self, callback: NewCallback) -> Result<CallbackId> {
        let callback = crate::store::common::keyed_callback(callback, &self.inner.key);
        write_tx!(self, |db| flow::record_callback(db, &callback))
    }

    async fn record_and_settle_callback(
        &self,
        callback: NewCallback,
        settlement: Settlement,
    ) -> Result<CallbackReceipt> {
        let callback = crate::store::common::keyed_callback(callback, &self.inner.key);
        write_tx!(self, |db| flow::record_and_settle(
            db,
            &callback,
            &settlement,
            self.now()
        ))
    }

    async fn settle_callback(
        &self,
        id: CallbackId,
        settlement: Settlement,
    ) -> Result<CallbackReceipt> {
        write_tx!(self, |db| flow::settle(db, id, &settlement, self.now()))
    }

    async fn forget(&self, id: SubmissionId, actor: Actor, reason: String) -> Result<Submission> {
        write_tx!(self, |db| flow::forget(db, id, &actor, &reason, Utc::now()))
    }

    async fn dismiss_callback(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: String,
    ) -> Result<StoredCallback> {
        write_tx!(self, |db| flow::dismiss_callback(
            db,
            id,
            &actor,
            &reason,
            self.now()
        ))
    }

    async fn callback(&self, id: CallbackId) -> Result<StoredCallback> {
        read!(self, |db| callbacks::callback_on(db, id))
    }

    async fn list_callbacks(&self, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
        read!(self, |db| callbacks::list_on(db, filter))
    }

    async fn defer_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        note: Note,
    ) -> Result<Submission> {
        write_tx!(self, |db| flow::defer_deadline(
            db,
            id,
            until,
            &note,
            self.now()
        ))
    }

    async fn expire_unmatched(&self, now: DateTime<Utc>) -> Result<u64> {
        write_tx!(self, |db| deadlines::expire_unmatched_on(db, now))
    }

    async fn overdue_results(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Submission>> {
        read!(self, |db| deadlines::overdue_on(db, now, limit))
    }

    async fn claim_overdue(&self, claim: OverdueClaim) -> Result<Vec<Submission>> {
        write_tx!(self, |db| deadlines::claim_overdue_on(db, &claim))
    }

    async fn prune_ledger(&self, now: DateTime<Utc>) -> Result<u64> {
        write_tx!(self, |db| retention::prune_ledger_on(db, now))
    }

    fn wakeups(&self) -> Option<Wakeups> {
        self.inner.listener.subscribe()
    }

    fn concurrent_completions(&self) -> usize {
        // Each batch holds a connection for its transaction: leave the
        // rest of the pool to claims, callbacks and reads.
        (self.inner.config.pool_size / 4).clamp(1, 4)
    }

    async fn set_pause(&self, partner: &str, pause: Option<Pause>) -> Result<()> {
        crate::model::submission::validate_partner(partner)?;
        write_tx!(self, |db| partners::set_pause_on(
            db,
            partner,
            pause.as_ref(),
            self.now()
        ))
    }

    async fn set_pause_journaled(
        &self,
        partner: &str,
        pause: Option<Pause>,
        line: JournalLine,
    ) -> Result<JournalEntry> {
        crate::model::submission::validate_partner(partner)?;
        write_tx!(self, |db| async {
            partners::set_pause_on(db, partner, pause.as_ref(), self.now()).await?;
            journal::write_on(db, &line).await
        })
    }

    async fn journal(&self, line: JournalLine) -> Result<JournalEntry> {
        write_tx!(self, |db| journal::write_on(db, &line))
    }

    async fn ops_journal(&self, filter: &JournalFilter) -> Result<Vec<JournalEntry>> {
        read!(self, |db| journal::read_on(db, filter))
    }

    async fn pauses(&self, now: DateTime<Utc>) -> Result<Vec<Pause>> {
        read!(self, |db| partners::pauses_on(db, now))
    }

    async fn circuits(&self) -> Result<Vec<SharedCircuit>> {
        read!(self, |db| shared::circuits_on(db))
    }

    async fn circuit(&self, partner: &str) -> Result<SharedCircuit> {
        crate::model::submission::validate_partner(partner)?;
        read!(self, |db| shared::circuit_on(db, partner))
    }

    async fn circuit_step(
        &self,
        partner: &str,
        step: CircuitStep,
        now: DateTime<Utc>,
    ) -> Result<CircuitOutcome> {
        write_tx!(self, |db| flow::circuit_step(db, partner, &step, now))
    }

    async fn claim_role(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_for: std::time::Duration,
    ) -> Result<bool> {
        write_tx!(self, |db| flow::claim_role(
            db, role, holder, now, lease_for
        ))
    }

    async fn release_role(&self, role: &str, holder: &str, now: DateTime<Utc>) -> Result<()> {
        write_tx!(self, |db| flow::release_role(db, role, holder, now))
    }

    async fn roles(&self) -> Result<Vec<RoleLease>> {
        read!(self, |db| shared::roles_on(db))
    }

    async fn beat(&self, instance: &Instance) -> Result<()> {
        write_tx!(self, |db| instances::beat_on(db, instance))?;
        // Clocks drift: measure the database's again with every beat.
        let conn = self.conn().await?;
        let measured = self.inner.clock.measure(&conn).await;
        keep_unless_lost(conn, &measured);
        measured.map(drop)
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    async fn stop_instance(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        write_tx!(self, |db| instances::stop_on(db, id, at))
    }

    async fn instances(&self) -> Result<Vec<Instance>> {
        read!(self, |db| instances::instances_on(db))
    }

    async fn prune_instances(&self, before: DateTime<Utc>) -> Result<u64> {
        write_tx!(self, |db| instances::prune_on(db, before, self.now()))
    }

    async fn set_expected_traffic(
        &self,
        partner: &str,
        expected: Option<&ExpectedTraffic>,
    ) -> Result<()> {
        super::common::check_expected_traffic(partner, expected)?;
        write_tx!(self, |db| instances::set_expected_traffic_on(
            db,
            partner,
            expected,
            self.now()
        ))
    }

    async fn expected_traffic(&self) -> Result<Vec<(String, ExpectedTraffic)>> {
        read!(self, |db| instances::expected_traffic_on(db))
    }

    async fn set_result_delivery(&self, partner: &str, on: bool) -> Result<()> {
        crate::model::submission::validate_partner(partner)?;
        write_tx!(self, |db| deliveries::set_result_delivery_on(
            db,
            partner,
            on,
            self.now()
        ))
    }

    async fn claim_deliveries(&self, claim: DeliveryClaim) -> Result<Vec<DeliveryLease>> {
        write_tx!(self, |db| flow::claim_deliveries(db, &claim))
    }

    async fn finish_delivery(&self, lease: &DeliveryLease, end: DeliveryEnd) -> Result<()> {
        write_tx!(self, |db| flow::finish_delivery(
            db,
            lease,
            &end,
            self.now()
        ))
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        read!(self, |db| deliveries::list_on(db, filter))
    }

    async fn rerun_delivery(&self, id: DeliveryId, note: Note) -> Result<Delivery> {
        write_tx!(self, |db| flow::rerun_delivery(db, id, &note, self.now()))
    }

    async fn open_alert(&self, alert: NewAlert) -> Result<(Alert, bool)> {
        write_tx!(self, |db| alerts::open_alert_on(db, &alert))
    }

    async fn alert_notified(&self, id: AlertId, at: DateTime<Utc>) -> Result<()> {
        write_tx!(self, |db| alerts::notified_on(db, id, at))
    }

    async fn resolve_alert(&self, id: AlertId, at: DateTime<Utc>) -> Result<Alert> {
        write_tx!(self, |db| alerts::resolve_on(db, id, at))
    }

    async fn acknowledge_alert(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Alert> {
        write_tx!(self, |db| alerts::acknowledge_on(db, id, &actor, at))
    }

    async fn acknowledge_alert_journaled(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
        line: JournalLine,
    ) -> Result<(Alert, JournalEntry)> {
        write_tx!(self, |db| async {
            let alert = alerts::acknowledge_on(db, id, &actor, at).await?;
            Ok::<_, Error>((alert, journal::write_on(db, &line).await?))
        })
    }

    async fn alerts(&self, open_only: bool, limit: usize) -> Result<Vec<Alert>> {
        read!(self, |db| alerts::alerts_on(db, open_only, limit))
    }

    async fn alert(&self, id: AlertId) -> Result<Alert> {
        read!(self, |db| alerts::get_alert(db, id, false))
    }

    async fn record_notifications(&self, rows: Vec<AlertNotification>) -> Result<()> {
        write_tx!(self, |db| notifications::record_on(db, &rows))
    }

    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AlertNotification>> {
        write_tx!(self, |db| notifications::claim_on(db, now, until, limit))
    }

    async fn finish_notification(&self, write: NotificationWrite) -> Result<bool> {
        write_tx!(self, |db| async {
            let finished = notifications::finish_on(db, &write).await?;
            if finished && let Some(round) = write.notified_round {
                alerts::notified_on(db, write.alert_id, round).await?;
            }
            Ok::<_, Error>(finished)
        })
    }

    async fn alert_notifications(&self, id: AlertId) -> Result<Vec<AlertNotification>> {
        read!(self, |db| notifications::of_alert_on(db, id))
    }

    async fn pending_notifications(&self, limit: usize) -> Result<Vec<AlertNotification>> {
        read!(self, |db| notifications::pending_on(db, limit))
    }

    async fn sink_failures(&self) -> Result<Vec<SinkFailure>> {
        read!(self, |db| notifications::failures_on(db))
    }

    async fn hourly_counts(&self, query: &HourlyQuery) -> Result<Vec<HourlyCount>> {
        read!(self, |db| queries::hourly_on(db, query))
    }

    async fn stats(&self, query: &StatsQuery) -> Result<Vec<PartnerStats>> {
        // Exact without it (the totals sum what is not folded yet); folding
        // first keeps what the snapshot sums short.
        self.fold_counts().await?;
        // Several statements: one snapshot, so counts and windows agree.
        let mut conn = self.conn().await?;
        let result = async {
            let tx = conn
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(pg_err("begin snapshot"))?;
            let stats = stats::stats_on(&in_tx(&tx), query).await?;
            commit(tx).await?;
            Ok(stats)
        }
        .await;
        keep_unless_lost(conn, &result);
        result
    }

    async fn purge(&self, cutoffs: PurgeCutoffs) -> Result<PurgeReport> {
        write_tx!(self, |db| retention::purge_on(db, &cutoffs, self.now()))
    }
}

/// The test database (as the integration tests'), or `None` after a
/// notice; `LIAISON_REQUIRE_PG=1` makes a missing one a failure.
#[cfg(test)]
pub(super) fn test_url() -> Option<String> {
    match std::env::var("LIAISON_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("LIAISON_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("LIAISON_REQUIRE_PG=1 but LIAISON_TEST_PG_URL is not set")
        }
        _ => {
            eprintln!("skipped: LIAISON_TEST_PG_URL is not set");
            None
        }
    }
}

/// Run `check` on a store in a schema of its own (`{prefix}_{pid}`, opened
/// with `config`), in a task of its own, so that the schema is dropped
/// whether the checks pass or fail; a failure is raised after. Nothing
/// runs without a test database ([`test_url`]).
#[cfg(test)]
pub(super) async fn in_test_schema<F, Fut>(prefix: &str, config: PostgresConfig, check: F)
where
    F: FnOnce(PostgresStore) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(url) = test_url() else {
        return;
    };
    let schema = format!("{prefix}_{}", std::process::id());
    let store = PostgresStore::connect(&url, config.schema(&schema))
        .await
        .expect("open the store");
    let checked = tokio::spawn(check(store.clone())).await;
    let conn = store.conn().await.expect("a connection");
    conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .expect("drop the schema");
    if let Err(failed) = checked {
        std::panic::resume_unwind(failed.into_panic());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::submission::SubmissionState;
    use crate::store::StateChange;

    /// A write refused after it locked its row has let go of the lock when
    /// its error is returned: a claim right after, on another connection,
    /// skips locked rows and would miss the row. (A rollback left to the
    /// dropped transaction reached the server later, and a re-run delivery
    /// claimed just after its refused re-run was skipped now and then.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_write_has_let_go_of_its_locks_when_it_returns() {
        in_test_schema(
            "liaison_rollback",
            PostgresConfig::default().pool_size(4),
            refused_writes_unlock,
        )
        .await;
    }

    async fn refused_writes_unlock(store: PostgresStore) {
        let id = store
            .enqueue(NewSubmission::new("bank", "payment", json!({})).idempotency_key("r-1"))
            .await
            .expect("enqueue")
            .submission
            .id;
        store
            .transition(id, StateChange::to(SubmissionState::Cancelled))
            .await
            .expect("cancel");
        // Held here, so the writes below take other connections.
        let other = store.conn().await.expect("a connection");
        for round in 0..200 {
            // Locks the row, then is refused: a cancelled submission stays.
            let refused = store
                .transition(id, StateChange::to(SubmissionState::Succeeded))
                .await
                .expect_err("refused");
            assert!(refused.is_invalid_transition(), "{refused:?}");
            let free = other
                .query(
                    "SELECT id FROM liaison_submissions WHERE id = $1 FOR UPDATE SKIP LOCKED",
                    &[&db::sid(id)],
                )
                .await
                .expect("look for the row");
            assert_eq!(
                free.len(),
                1,
                "round {round}: the refused write still held the row"
            );
        }
    }
}
