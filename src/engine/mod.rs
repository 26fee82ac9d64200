//! The engine: the [`Liaison`] hub, its builder, and the tasks that move
//! work to partners.
//!
//! One dispatcher task per partner claims due work in batches, wakes at once
//! when the host enqueues through [`Liaison::enqueue`] (and otherwise polls),
//! enforces the partner's concurrency and rate limits and its circuit
//! breaker, and runs each attempt in its own task under a timeout and a
//! `tracing` span. A reaper returns the work of crashed workers.

mod alerting;
mod circuit;
mod completer;
mod deadlines;
mod dispatcher;
mod health;
mod heartbeat;
mod inbound;
mod journal;
mod lookup;
mod notifying;
mod partner_config;
mod privacy;
mod recovery;
mod results;
mod retention;
mod wakeups;

pub use crate::model::circuit::SharedCircuit;
pub use crate::model::traffic::{ExpectedTraffic, TrafficKind};
pub use alerting::{AlertSettings, AlertThresholds};
pub use circuit::{CircuitSettings, CircuitState};
pub use journal::{BulkOutcome, BulkScope};
pub use partner_config::Partner;
pub use privacy::ForgetTarget;
pub use recovery::BulkReport;
pub use results::{FinishedSubmission, ResultHandler};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::model::submission::{NewSubmission, SubmissionState};
use crate::ops::alerts::{AlertSink, Ownership};
use crate::store::{Enqueued, ListFilter, OutboxStore};

use self::completer::Completer;
use self::dispatcher::PartnerRuntime;

pub(crate) use crate::store::common::saturating_after;

/// Engine-wide settings. `Default` is what we recommend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineSettings {
    /// How often an idle dispatcher looks for due work it was not woken for
    /// (retries coming due, enqueues by other processes). Default 500 ms.
    pub poll_interval: Duration,
    /// How often expired leases are returned to the queue. Default 5 s.
    pub reap_interval: Duration,
    /// Most submissions claimed in one transaction. Default 32.
    pub claim_batch: usize,
    /// Added to the attempt timeout to get the lease length, so a lease
    /// outlives a slow but live attempt. Default 10 s.
    pub lease_margin: Duration,
    /// How often overdue results and unmatched callbacks are checked. Default 1 s.
    pub deadline_interval: Duration,
    /// Payloads and raw callback bodies of finished work are removed this
    /// long after it finished (personal and health data should not live for
    /// ever). Default 30 days.
    pub payload_retention: Duration,
    /// Bodies of callbacks that failed verification (`rejected`: a bad
    /// signature, or a partner without a matcher) are removed this long
    /// after they arrived: anyone can send them, and they are kept only to
    /// be reprocessed after a secret is fixed. Default 7 days.
    pub rejected_body_retention: Duration,
    /// Most bodies of callbacks that fail verification stored per configured
    /// partner per clock hour (UTC). Past it, a callback that fails
    /// verification is kept as metadata only: its body and all headers but
    /// the allowlist of callbacks to unknown names (`content-type`,
    /// `user-agent`) are cleared when its rejection is settled, and it is
    /// counted in `liaison_callbacks_unverified_dropped_total{partner}`.
    /// It is still answered 401. The count is kept in memory by each
    /// engine instance: with several instances behind a load balancer up to
    /// the cap times the number of instances are stored per hour, and a
    /// restart starts the count again. Reprocessing a stored callback is not
    /// counted (an operator asked for it). `None`: no cap, every body is
    /// stored; `Some(0)`: no body of a callback that fails verification is
    /// kept. Default `Some(100)`.
    pub unverified_bodies_per_hour: Option<u32>,
    /// Rows of settled callbacks (every disposition but `received` and
    /// `unmatched`, and none whose submission is unfinished) are deleted
    /// this long after they arrived. Their bodies went after
    /// `payload_retention` already; the rows (partner, time, size, hash,
    /// disposition, submission) are kept longer because they answer
    /// disputes and audits ("did you send us that result?") after the
    /// data itself is gone, and they are what repeats of an old delivery
    /// are recognised by. Timeline events of submissions are kept: they
    /// refer to callbacks only by id in their data. Default 180 days.
    /// Rows of callbacks to names that are no configured partner go after
    /// `payload_retention`.
    pub callback_row_retention: Duration,
    /// How often retention (and the idempotency ledger's pruning) runs. Default 1 h.
    pub retention_interval: Duration,
    /// How often a running engine records that it is alive (its beat) in
    /// the store. An instance that misses three of its beats counts as
    /// gone; a partner with work due for longer than that and no live
    /// instance serving it is `Down` ("no dispatcher is running"). Default
    /// 5 s; zero is refused at build.
    pub heartbeat_interval: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            poll_interval: Duration::from_millis(500),
            reap_interval: Duration::from_secs(5),
            claim_batch: 32,
            lease_margin: Duration::from_secs(10),
            deadline_interval: Duration::from_secs(1),
            payload_retention: Duration::from_secs(30 * 24 * 3600),
            rejected_body_retention: Duration::from_secs(7 * 24 * 3600),
            unverified_bodies_per_hour: Some(100),
            callback_row_retention: Duration::from_secs(180 * 24 * 3600),
            retention_interval: Duration::from_secs(3600),
            heartbeat_interval: crate::ops::health::DEFAULT_HEARTBEAT,
        }
    }
}

impl EngineSettings {
    /// Set [`EngineSettings::poll_interval`].
    pub fn poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Set [`EngineSettings::reap_interval`].
    pub fn reap_interval(mut self, reap_interval: Duration) -> Self {
        self.reap_interval = reap_interval;
        self
    }

    /// Set [`EngineSettings::claim_batch`].
    pub fn claim_batch(mut self, claim_batch: usize) -> Self {
        self.claim_batch = claim_batch;
        self
    }

    /// Set [`EngineSettings::lease_margin`].
    pub fn lease_margin(mut self, lease_margin: Duration) -> Self {
        self.lease_margin = lease_margin;
        self
    }

    /// Set [`EngineSettings::deadline_interval`].
    pub fn deadline_interval(mut self, deadline_interval: Duration) -> Self {
        self.deadline_interval = deadline_interval;
        self
    }

    /// Set [`EngineSettings::payload_retention`].
    pub fn payload_retention(mut self, payload_retention: Duration) -> Self {
        self.payload_retention = payload_retention;
        self
    }

    /// Set [`EngineSettings::rejected_body_retention`].
    pub fn rejected_body_retention(mut self, rejected_body_retention: Duration) -> Self {
        self.rejected_body_retention = rejected_body_retention;
        self
    }

    /// Set [`EngineSettings::unverified_bodies_per_hour`] (`None`: no cap).
    pub fn unverified_bodies_per_hour(mut self, cap: Option<u32>) -> Self {
        self.unverified_bodies_per_hour = cap;
        self
    }

    /// Set [`EngineSettings::callback_row_retention`].
    pub fn callback_row_retention(mut self, callback_row_retention: Duration) -> Self {
        self.callback_row_retention = callback_row_retention;
        self
    }

    /// Set [`EngineSettings::retention_interval`].
    pub fn retention_interval(mut self, retention_interval: Duration) -> Self {
        self.retention_interval = retention_interval;
        self
    }

    /// Set [`EngineSettings::heartbeat_interval`].
    pub fn heartbeat_interval(mut self, heartbeat_interval: Duration) -> Self {
        self.heartbeat_interval = heartbeat_interval;
        self
    }
}

/// The hub: the store, the registered partners and their policies.
///
/// Cloning is cheap and clones share everything.
///
/// ```
/// use async_trait::async_trait;
/// use liaison::engine::{Liaison, Partner};
/// use liaison::store::{OutboxStore, SqliteStore};
/// use liaison::{AttemptContext, NewSubmission, Outcome, PartnerAdapter, PartnerError};
/// use liaison::{Submission, SubmissionState, SubmitOutcome};
/// use serde_json::json;
///
/// #[derive(Debug)]
/// struct AlwaysOk;
///
/// #[async_trait]
/// impl PartnerAdapter for AlwaysOk {
///     async fn submit(&self, _: &AttemptContext, _: &Submission) -> Result<SubmitOutcome, PartnerError> {
///         Ok(SubmitOutcome::Completed(Outcome::succeeded()))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liaison::Result<()> {
/// let liaison = Liaison::builder(SqliteStore::open_temporary()?)
///     .partner(Partner::new("ledger", AlwaysOk))
///     .build()?;
/// let id = liaison
///     .enqueue(NewSubmission::new("ledger", "entry", json!({"cents": 10})))
///     .await?
///     .submission
///     .id;
/// liaison.run_until_idle().await?; // for tests: no sleeps
/// assert_eq!(liaison.store().get(id).await?.state, SubmissionState::Succeeded);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Liaison {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn OutboxStore>,
    pub(crate) partners: BTreeMap<String, Arc<PartnerRuntime>>,
    pub(crate) settings: EngineSettings,
    /// Notified whenever an attempt finishes.
    pub(crate) activity: tokio::sync::Notify,
    pub(crate) ownership: Ownership,
    pub(crate) sinks: notifying::Sinks,
    pub(crate) alert_settings: AlertSettings,
    pub(crate) metrics: crate::ops::Metrics,
    /// Callbacks to names that are no configured partner: counted, and
    /// logged at most once a minute.
    pub(crate) unknown_callbacks: inbound::UnknownCallbacks,
    pub(crate) unverified_bodies: inbound::UnverifiedBodies,
    /// Each registered partner's limits for its expired leases.
    pub(crate) reap_policy: crate::store::ReapPolicy,
}

impl Shared {
    /// The store's time ([`OutboxStore::now`]): what the engine dates
    /// everything it stores or compares with stored times by.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.store.now()
    }
}

/// Builds a [`Liaison`].
#[derive(Debug)]
pub struct LiaisonBuilder {
    store: Arc<dyn OutboxStore>,
    partners: Vec<Partner>,
    settings: EngineSettings,
    ownership: Ownership,
    sinks: Vec<Arc<dyn AlertSink>>,
    owner_sinks: Vec<(String, Arc<dyn AlertSink>)>,
    alert_settings: AlertSettings,
    results: Option<results::Results>,
}

impl LiaisonBuilder {
    /// Deliver the results of every partner without a handler of its own
    /// ([`Partner::results`]) to `handler`: see [`ResultHandler`].
    pub fn results(mut self, handler: impl ResultHandler) -> Self {
        self.results = Some(results::Results::Handler(Arc::new(handler)));
        self
    }

    /// Write the results of every partner without a handler of its own
    /// into the host's tables on the outbox's SQLite file, in the
    /// transaction that acknowledges each delivery: see
    /// [`crate::store::SqliteResultHandler`].
    #[cfg(feature = "sqlite")]
    pub fn results_in_sqlite(
        mut self,
        store: &crate::store::SqliteStore,
        handler: impl crate::store::SqliteResultHandler,
    ) -> Self {
        self.results = Some(results::Results::Sqlite(store.clone(), Arc::new(handler)));
        self
    }

    /// Write the results of every partner without a handler of its own
    /// into the host's tables on the store's PostgreSQL database, in the
    /// transaction that acknowledges each delivery: see
    /// [`crate::store::PostgresResultHandler`].
    #[cfg(feature = "postgres")]
    pub fn results_in_postgres(
        mut self,
        store: &crate::store::PostgresStore,
        handler: impl crate::store::PostgresResultHandler,
    ) -> Self {
        self.results = Some(results::Results::Postgres(store.clone(), Arc::new(handler)));
        self
    }

    /// Register a partner.
    pub fn partner(mut self, partner: Partner) -> Self {
        self.partners.push(partner);
        self
    }

    /// Engine-wide settings.
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Who owns each class of problem; alerts carry their owner.
    pub fn ownership(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Add a catch-all place alerts go: every alert, whoever owns it.
    /// Without any, the catch-all is [`crate::ops::alerts::TracingSink`].
    pub fn alert_sink(mut self, sink: impl AlertSink + 'static) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Add a place the alerts of one owner go (besides the catch-all
    /// sinks), by the owner's name as the [`Ownership`] names it. An owner
    /// may have several sinks; an owner without any gets the catch-all
    /// sinks only. A name no owner of the ownership has is refused at
    /// [`LiaisonBuilder::build`] (`InvalidInput`).
    ///
    /// Notifications are journaled by the sink's
    /// [`AlertSink::name`]; when several sinks share a name, the second and
    /// later get `#2`, `#3`... in the order they were added (catch-all
    /// sinks first): keep that order across restarts so retries find their
    /// sink.
    ///
    /// ```
    /// use liaison::engine::Liaison;
    /// use liaison::ops::alerts::{ChatWebhookSink, Owner, Ownership, ProblemClass};
    /// use liaison::store::SqliteStore;
    ///
    /// # fn main() -> liaison::Result<()> {
    /// let ownership = Ownership::new(Owner::new("integrations", "#integrations"))
    ///     .route_partner(
    ///         "clearinghouse",
    ///         ProblemClass::PartnerUnavailable,
    ///         Owner::new("revenue cycle", "#revenue-cycle"),
    ///     )
    ///     .partner("lab", Owner::new("lab operations", "#lab-ops"));
    /// let liaison = Liaison::builder(SqliteStore::open_temporary()?)
    ///     .ownership(ownership)
    ///     .owner_sink("revenue cycle", ChatWebhookSink::new("https://hooks.slack.example/services/T0/B0/XYZ")?)
    ///     .owner_sink("lab operations", ChatWebhookSink::new("https://chat.example/hooks/abc")?)
    ///     .build()?;
    /// # drop(liaison);
    /// // An owner the ownership does not name is refused.
    /// let refused = Liaison::builder(SqliteStore::open_temporary()?)
    ///     .owner_sink("nobody", ChatWebhookSink::new("https://chat.example/hooks/abc")?)
    ///     .build()
    ///     .unwrap_err();
    /// assert!(refused.is_invalid_input());
    /// # Ok(())
    /// # }
    /// ```
    pub fn owner_sink(mut self, owner: impl Into<String>, sink: impl AlertSink + 'static) -> Self {
        self.owner_sinks.push((owner.into(), Arc::new(sink)));
        self
    }

    /// How alerts are evaluated and re-notified.
    pub fn alert_settings(mut self, settings: AlertSettings) -> Self {
        self.alert_settings = settings;
        self
    }

    /// Check the configuration and build the hub.
    pub fn build(self) -> Result<Liaison> {
        if self.settings.claim_batch == 0 {
            return Err(Error::invalid("claim_batch", "must be at least 1"));
        }
        if self.settings.poll_interval.is_zero()
            || self.settings.reap_interval.is_zero()
            || self.settings.deadline_interval.is_zero()
            || self.settings.retention_interval.is_zero()
        {
            return Err(Error::invalid(
                "poll_interval",
                "poll, reap and deadline intervals must be above zero",
            ));
        }
        if self.settings.heartbeat_interval.is_zero() {
            return Err(Error::invalid("heartbeat_interval", "must be above zero"));
        }
        let mut partners = BTreeMap::new();
        let mut reap_policy = crate::store::ReapPolicy::default();
        for mut partner in self.partners {
            if partner.results.is_none() {
                partner.results = self.results.clone();
            }
            let limits = partner.check()?;
            let name = partner.name.clone();
            if partners.contains_key(&name) {
                return Err(Error::invalid(
                    "partner",
                    format!("{name:?} is registered twice"),
                ));
            }
            reap_policy = reap_policy.partner(name.clone(), partner.reap_limits()?);
            partners.insert(name, Arc::new(PartnerRuntime::new(partner, limits)));
        }
        if self.alert_settings.interval.is_zero() || self.alert_settings.window.is_zero() {
            return Err(Error::invalid(
                "alert_settings",
                "the evaluation interval and window must be above zero",
            ));
        }
        if self
            .alert_settings
            .evaluator_lease
            .is_some_and(|lease| lease <= self.alert_settings.interval)
        {
            return Err(Error::invalid(
                "evaluator_lease",
                "must be longer than the alert evaluation interval, or the evaluator role would lapse between renewals",
            ));
        }
        if self.alert_settings.sink_attempts == 0 || self.alert_settings.sink_timeout.is_zero() {
            return Err(Error::invalid(
                "alert_settings",
                "sink_attempts and sink_timeout must be above zero",
            ));
        }
        let sinks = notifying::Sinks::build(self.sinks, self.owner_sinks, &self.ownership)?;
        Ok(Liaison {
            shared: Arc::new(Shared {
                store: self.store,
                partners,
                settings: self.settings,
                activity: tokio::sync::Notify::new(),
                ownership: self.ownership,
                sinks,
                alert_settings: self.alert_settings,
                metrics: crate::ops::Metrics::new(),
                unknown_callbacks: inbound::UnknownCallbacks::default(),
                unverified_bodies: inbound::UnverifiedBodies::default(),
                reap_policy,
            }),
        })
    }
}

impl Liaison {
    /// Start building a hub on `store`.
    pub fn builder(store: impl OutboxStore + 'static) -> LiaisonBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Like [`Liaison::builder`] with a store already behind an `Arc`.
    pub fn builder_arc(store: Arc<dyn OutboxStore>) -> LiaisonBuilder {
        LiaisonBuilder {
            store,
            partners: Vec::new(),
            settings: EngineSettings::default(),
            ownership: Ownership::default(),
            sinks: Vec::new(),
            owner_sinks: Vec::new(),
            alert_settings: AlertSettings::default(),
            results: None,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn OutboxStore> {
        &self.shared.store
    }

    /// Enqueue for a registered partner and wake its dispatcher. Returns
    /// after the commit. An unregistered partner is refused.
    pub async fn enqueue(&self, new: NewSubmission) -> Result<Enqueued> {
        let partner = self.registered(new.partner())?;
        let enqueued = self.shared.store.enqueue(new).await?;
        if !enqueued.deduplicated {
            self.shared
                .metrics
                .submission_enqueued(&enqueued.submission.partner);
        }
        partner.wake.notify_one();
        Ok(enqueued)
    }

    /// Enqueue several (all or none) and wake their dispatchers.
    pub async fn enqueue_batch(&self, batch: Vec<NewSubmission>) -> Result<Vec<Enqueued>> {
        for new in &batch {
            self.registered(new.partner())?;
        }
        let enqueued = self.shared.store.enqueue_batch(batch).await?;
        for e in enqueued.iter().filter(|e| !e.deduplicated) {
            self.shared
                .metrics
                .submission_enqueued(&e.submission.partner);
        }
        self.notify();
        Ok(enqueued)
    }

    /// Wake every dispatcher now: call it after committing a transaction in
    /// which you used `enqueue_in_transaction`, so the work goes out without
    /// waiting for the next poll.
    pub fn notify(&self) {
        for partner in self.shared.partners.values() {
            partner.wake.notify_one();
        }
    }

    /// The circuit state of a registered partner, as this hub last learnt
    /// it from the circuit all instances share (it reads it before each
    /// claim and learns every change its own attempts make). For the
    /// stored state itself, read [`OutboxStore::circuits`].
    pub fn circuit_state(&self, partner: &str) -> Option<CircuitState> {
        self.shared.partners.get(partner).map(|p| p.circuit_state())
    }

    /// The Prometheus recorder this hub feeds (attempts, callbacks, alerts...).
    pub fn metrics(&self) -> &crate::ops::Metrics {
        &self.shared.metrics
    }

    /// The Prometheus text exposition: counters and histograms recorded so
    /// far plus gauges from a fresh health report over `window`. Serve it
    /// with [`crate::ops::Metrics::CONTENT_TYPE`].
    pub async fn render_metrics(&self, window: Duration) -> Result<String> {
        let health = self.health(window).await?;
        Ok(self.shared.metrics.render(&health))
    }

    /// Names of the registered partners.
    pub fn partners(&self) -> impl Iterator<Item = &str> {
        self.shared.partners.keys().map(String::as_str)
    }

    fn registered(&self, partner: &str) -> Result<&Arc<PartnerRuntime>> {
        self.shared.partners.get(partner).ok_or_else(|| {
            Error::invalid(
                "partner",
                format!("{partner:?} is not registered with this Liaison"),
            )
        })
    }

    /// Start the dispatchers and the lease reaper. Stop them with
    /// [`Handle::shutdown`].
    pub fn start(&self) -> Handle {
        let stop_claiming = CancellationToken::new();
        let abandon = CancellationToken::new();
        let attempts = TaskTracker::new();
        let instance = crate::store::Instance::this_process(
            self.shared.partners.keys().cloned().collect(),
            self.shared.settings.heartbeat_interval,
        );
        let instance_id = instance.id.clone();
        let me: Arc<str> = Arc::from(instance_id.as_str());
        // Ends once the dispatchers and their attempts are done.
        let (completer, completing) = Completer::start(Arc::clone(&self.shared.store));
        let mut loops = Vec::new();
        for runtime in self.shared.partners.values() {
            loops.push(tokio::spawn(dispatcher::run_partner(
                Arc::clone(&self.shared),
                Arc::clone(runtime),
                Arc::clone(&me),
                completer.clone(),
                stop_claiming.clone(),
                abandon.clone(),
                attempts.clone(),
            )));
        }
        loops.push(tokio::spawn(results::run_results(
            Arc::clone(&self.shared),
            stop_claiming.clone(),
        )));
        loops.push(tokio::spawn(dispatcher::run_reaper(
            Arc::clone(&self.shared),
            stop_claiming.clone(),
        )));
        loops.push(tokio::spawn(deadlines::run_deadlines(
            Arc::clone(&self.shared),
            stop_claiming.clone(),
        )));
        loops.push(tokio::spawn(retention::run_retention(
            Arc::clone(&self.shared),
            stop_claiming.clone(),
        )));
        loops.push(tokio::spawn(alerting::run_alerts(
            Arc::clone(&self.shared),
            Arc::clone(&me),
            stop_claiming.clone(),
        )));
        // Beats go on while attempts drain; they stop just before the stop
        // is recorded.
        let stop_beating = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat::run_heartbeat(
            Arc::clone(&self.shared),
            instance,
            stop_beating.clone(),
        ));
        if let Some(wakeups) = self.shared.store.wakeups() {
            loops.push(tokio::spawn(wakeups::run_wakeups(
                Arc::clone(&self.shared),
                wakeups,
                stop_claiming.clone(),
            )));
        }
        drop(completer);
        Handle {
            liaison: self.clone(),
            stop_claiming,
            abandon,
            attempts,
            completing,
            loops,
            instance_id,
            stop_beating,
            heartbeat,
        }
    }

    /// Run the engine until no submission of a registered partner is
    /// `Queued` or `InFlight`, then shut it down. Meant for host tests: it
    /// waits out scheduled retries (configure short ones in tests), so a
    /// partner that never recovers keeps it running until its retry limits
    /// end the work. Wrap it in `tokio::time::timeout` to bound it.
    pub async fn run_until_idle(&self) -> Result<()> {
        let handle = self.start();
        let outcome = loop {
            match self.has_open_work().await {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
            // Attempts finishing wake us; the tick catches retries coming due.
            let _ =
                tokio::time::timeout(Duration::from_millis(20), self.shared.activity.notified())
                    .await;
        };
        handle.shutdown(Duration::from_secs(5)).await?;
        outcome
    }

    async fn has_open_work(&self) -> Result<bool> {
        for name in self.shared.partners.keys() {
            let filter = ListFilter::default()
                .partner(name.clone())
                .state(SubmissionState::Queued)
                .state(SubmissionState::InFlight)
                .limit(1);
            if !self.shared.store.list(&filter).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The running engine. Dropping it without [`Handle::shutdown`] leaves the
/// tasks running until the runtime ends; leases then expire and the work is
/// claimed again on the next start, so nothing is lost either way.
#[derive(Debug)]
pub struct Handle {
    liaison: Liaison,
    stop_claiming: CancellationToken,
    abandon: CancellationToken,
    attempts: TaskTracker,
    /// The completer's task: it ends after the last attempt recorded.
    completing: JoinHandle<()>,
    loops: Vec<JoinHandle<()>>,
    instance_id: String,
    stop_beating: CancellationToken,
    heartbeat: JoinHandle<()>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every attempt in flight finished within the grace period.
    pub drained: bool,
    /// Attempts that were cut off and whose leases were released.
    pub released: usize,
}

impl Handle {
    /// The hub this handle runs.
    pub fn liaison(&self) -> &Liaison {
        &self.liaison
    }

    /// This engine's instance id, as it beats into the store
    /// ([`crate::store::Instance::id`]).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Stop claiming, let attempts in flight finish for up to `grace`, then
    /// cut off the rest and release their leases (back to `Queued`, due at
    /// once, journaled). No submission is left `InFlight` by this engine.
    /// Last, the instance is recorded as stopped: from then on it serves
    /// none of its partners.
    pub async fn shutdown(self, grace: Duration) -> Result<ShutdownReport> {
        self.stop_claiming.cancel();
        for task in self.loops {
            let _ = task.await;
        }
        self.attempts.close();
        let drained = tokio::time::timeout(grace, self.attempts.wait())
            .await
            .is_ok();
        let mut released = 0;
        if !drained {
            released = self.attempts.len();
            self.abandon.cancel();
            self.attempts.wait().await;
        }
        // Every attempt is done, so is every sender of the completer.
        let _ = self.completing.await;
        self.stop_beating.cancel();
        let _ = self.heartbeat.await;
        if let Err(error) = self
            .liaison
            .store()
            .stop_instance(&self.instance_id, self.liaison.store().now())
            .await
        {
            // It ages out as a dead instance three beats from now instead.
            tracing::warn!(%error, instance = %self.instance_id, "could not record this engine's stop");
        }
        Ok(ShutdownReport { drained, released })
    }
}
