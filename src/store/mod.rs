//! Durable storage: the [`OutboxStore`] trait and its two implementations,
//! [`SqliteStore`] (default) and `PostgresStore` (feature `postgres`).
//!
//! Everything liaison must not lose lives behind this trait: submissions and
//! their idempotency ledger, attempts, the event timeline, callbacks, alerts
//! and shared partner state. The rules every write follows are decided once,
//! in `rules` (pure) and `flow` (read, decide, write), over a `Driver` each
//! store implements; see docs/architecture.md.

mod callback_types;
mod circuit_types;
pub(crate) mod common;
pub(crate) mod driver;
pub(crate) mod flow;
pub(crate) mod impact;
mod instance_types;
mod limit_types;
mod notification_types;
mod reap_types;
pub(crate) mod rules;
mod stats_types;
mod types;
mod wake;
pub use crate::model::circuit::SharedCircuit;
pub use callback_types::{CallbackFilter, NewCallback, Settlement};
pub use circuit_types::{Admission, CircuitOutcome, CircuitSignal, CircuitStep, RoleLease};
pub use instance_types::Instance;
pub use limit_types::{Claimed, Limited, PartnerLimits, Rate};
pub use notification_types::{NotificationWrite, SinkRoute};
pub use reap_types::{ReapLimits, ReapPolicy, Reaped};
pub use stats_types::{
    AgeBand, DEFAULT_DEADLINE_LEAD_TIME, DeadlineRisk, HourlyCount, HourlyQuery, Impact,
    MAX_LATENCY_SAMPLES, NewAlert, Outcomes, PartnerStats, StatsQuery, Totals,
};
pub use types::{
    AttemptReport, ClaimRequest, DeliveryClaim, DeliveryEnd, DeliveryFilter, DeliveryLease,
    Enqueued, FinishedAttempt, HandOver, Lease, LeaseToken, ListFilter, Note, OverdueClaim, Pause,
    PurgeCutoffs, PurgeReport, Replay, StateChange,
};
pub use wake::{Wake, Wakeups};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrations;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteResultHandler, SqliteStore, Synchronous};

#[cfg(all(test, any(feature = "sqlite", feature = "postgres")))]
mod plan_workload;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresConfig, PostgresResultHandler, PostgresStore, PostgresTls};

use async_trait::async_trait;

/// Keeps [`OutboxStore`] implemented by this crate's stores only.
mod sealed {
    /// The private supertrait of [`super::OutboxStore`].
    pub trait Sealed {}

    #[cfg(feature = "sqlite")]
    impl Sealed for super::SqliteStore {}

    #[cfg(feature = "postgres")]
    impl Sealed for super::PostgresStore {}
}
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::model::alert::{Alert, AlertId};
use crate::model::callback::{CallbackId, CallbackReceipt, StoredCallback};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::event::Actor;
use crate::model::event::{Attempt, Event};
use crate::model::notification::{AlertNotification, SinkFailure};
use crate::model::submission::{NewSubmission, Submission, SubmissionId};
use crate::model::traffic::ExpectedTraffic;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine};

/// The durable core. Every state change is one transaction that also appends
/// its event to the timeline; a change that is not in the transition table
/// ([`crate::SubmissionState::can_become`]) is refused and changes nothing.
///
/// Implementations: [`SqliteStore`] (default) and `PostgresStore` (feature
/// `postgres`). The trait is object-safe, so the engine holds an
/// `Arc<dyn OutboxStore>`.
///
/// The trait is sealed: it is implemented by this crate's stores only, so
/// methods can be added to it without a breaking change. Use it to call a
/// store (directly, or as `Arc<dyn OutboxStore>`), not to write one.
#[async_trait]
pub trait OutboxStore: sealed::Sealed + Send + Sync + std::fmt::Debug {
    /// Write one submission, or return the one already holding its
    /// idempotency key when the payload fingerprint matches
    /// ([`Enqueued::deduplicated`]). Returns after the commit.
    ///
    /// Errors: [`crate::Error::InvalidInput`], [`crate::Error::PayloadTooLarge`],
    /// [`crate::Error::IdempotencyConflict`]; in each case nothing is written.
    async fn enqueue(&self, new: NewSubmission) -> Result<Enqueued>;

    /// Write several submissions in one transaction: all of them or, on any
    /// error, none. Results are in input order.
    async fn enqueue_batch(&self, batch: Vec<NewSubmission>) -> Result<Vec<Enqueued>>;

    /// One submission by id.
    async fn get(&self, id: SubmissionId) -> Result<Submission>;

    /// The submission `partner` enqueued under `idempotency_key`, the
    /// host's own key.
    ///
    /// The idempotency ledger decides first: a key it holds names the
    /// submission an enqueue of that key would be answered with. So after a
    /// replay under a fresh key ([`Replay::fresh_key`]) both the original
    /// key and the derived one (`<key>~replay<n>`) find the submission,
    /// while the ledger keeps them (the store's ledger retention, and only
    /// until the submission is finished and the key pruned). A key the
    /// ledger no longer holds is looked up on the submissions themselves,
    /// by the key each is sent under now (the newest such submission when
    /// a freed key was used again); the original key of a replayed
    /// submission is then forgotten.
    ///
    /// Errors: [`crate::Error::NotFound`] when no submission of `partner`
    /// has the key; [`crate::Error::InvalidInput`] for a partner name or key
    /// that enqueue would refuse (so none can have it).
    async fn get_by_key(&self, partner: &str, idempotency_key: &str) -> Result<Submission>;

    /// Submissions matching a filter, oldest first (in enqueue order).
    ///
    /// Errors: [`crate::Error::InvalidInput`] for a correlation filter whose
    /// name or value enqueue would refuse ([`ListFilter::correlation`]).
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Submission>>;

    /// A submission's events, in the order they were written.
    async fn timeline(&self, id: SubmissionId) -> Result<Vec<Event>>;

    /// A submission's attempts, first to last.
    async fn attempts(&self, id: SubmissionId) -> Result<Vec<Attempt>>;

    /// Claim up to `limit` due submissions of one partner: each moves to
    /// `InFlight` under a fresh lease token, starts an attempt and is journaled.
    /// Submissions sharing an ordering key are claimed one at a time, in
    /// enqueue order. Two concurrent claims never return the same submission.
    /// The request's [`PartnerLimits`] hold for every claimer of the store
    /// ([`OutboxStore::claim_limited`]).
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Lease>> {
        Ok(self.claim_limited(request).await?.leases)
    }

    /// Claim like [`OutboxStore::claim`], and say which of the request's
    /// [`PartnerLimits`] held the claim below what it asked for.
    ///
    /// The limits are decided in the claim's transaction, for every claimer
    /// of the store at once (instances on one PostgreSQL database, processes
    /// on one SQLite file): the partner's row is locked first, then its live
    /// leases (in flight, lease not ended at `request.now`) are counted and
    /// its shared rate budget is spent. So no two claims together put more
    /// than `concurrency` of the partner's submissions in flight, nor start
    /// attempts faster than `rate`. Other partners' claims do not wait.
    async fn claim_limited(&self, request: ClaimRequest) -> Result<Claimed>;

    /// The time this store decides by: leases, due times, deadlines and
    /// windows are compared with it. On SQLite it is the host's clock (one
    /// machine: every process on the file reads the same clock); on
    /// PostgreSQL it is the database server's clock, as measured from this
    /// host (see `docs/scaling.md`). The engine dates what it stores with it.
    fn now(&self) -> DateTime<Utc>;

    /// Finish the lease's attempt and apply the state change it led to, if
    /// the lease is still the submission's current one.
    ///
    /// With a stale token nothing changes: the late result is journaled as
    /// [`crate::EventKind::StaleResultIgnored`] and
    /// [`crate::Error::StaleLease`] is returned.
    async fn complete(
        &self,
        lease: &Lease,
        report: AttemptReport,
        change: StateChange,
    ) -> Result<Submission>;

    /// Record several finished attempts in one transaction: each exactly as
    /// [`OutboxStore::complete`] would (its answer, in input order, is what
    /// `complete` would have returned: the submission after, or
    /// [`crate::Error::StaleLease`], [`crate::Error::ReferenceTaken`],
    /// [`crate::Error::InvalidTransition`], [`crate::Error::NotFound`]; an
    /// item refused this way changes nothing, a stale one is journaled).
    /// The engine records what its attempts finish this way, a batch at a
    /// time, so a busy partner's results cost one transaction, not one each.
    ///
    /// Several attempts of one submission are applied in input order. An
    /// error of the whole call (storage, a lost connection) records none
    /// of them; recording each with `complete` then tells which fails.
    async fn complete_batch(
        &self,
        finished: Vec<FinishedAttempt>,
    ) -> Result<Vec<Result<Submission>>>;

    /// [`OutboxStore::complete_batch`], running `hand_over` as soon as every
    /// write this store takes afterwards runs after the batch (and so sees
    /// its results, should it commit): by default once it has committed. A
    /// store that applies its writes one after another in the order it takes
    /// them runs it as soon as it has taken the batch; `SqliteStore` does,
    /// and its writer runs a claim taken while a transaction is under way in
    /// that transaction, so the engine's next claim, made with the slots the
    /// batch gives back, shares the batch's commit.
    ///
    /// ```
    /// use liaison::store::{HandOver, OutboxStore, SqliteStore};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = SqliteStore::open_temporary()?;
    /// let (tx, handed) = tokio::sync::oneshot::channel();
    /// let answers = store
    ///     .complete_batch_handing_over(Vec::new(), HandOver::new(move || {
    ///         let _ = tx.send(());
    ///     }))
    ///     .await?;
    /// assert!(answers.is_empty());
    /// assert!(handed.await.is_ok());
    /// # Ok::<(), liaison::Error>(())
    /// # }).unwrap();
    /// ```
    async fn complete_batch_handing_over(
        &self,
        finished: Vec<FinishedAttempt>,
        hand_over: HandOver,
    ) -> Result<Vec<Result<Submission>>> {
        let answers = self.complete_batch(finished).await;
        hand_over.run();
        answers
    }

    /// How many [`OutboxStore::complete_batch`] calls the engine may have
    /// under way at once. `1` (the default) suits a store that writes one
    /// transaction at a time: the next batch gathers while one is written.
    /// A store whose transactions run side by side answers more, so a slow
    /// batch (one that matches many callbacks that arrived before their
    /// acceptance) does not hold up every result behind it. The engine
    /// starts a batch beside one being written only once 16 results have
    /// gathered, so more lanes do not mean smaller batches.
    /// `PostgresStore` (feature `postgres`) answers a quarter of its pool,
    /// from 1 to 4.
    ///
    /// ```
    /// use liaison::store::{OutboxStore, SqliteStore};
    ///
    /// let store = SqliteStore::open_temporary()?;
    /// assert_eq!(store.concurrent_completions(), 1);
    /// # Ok::<(), liaison::Error>(())
    /// ```
    fn concurrent_completions(&self) -> usize {
        1
    }

    /// Apply a state change that no lease governs (deadline passed, result
    /// received, replay, manual resolution, cancel). Refused with
    /// [`crate::Error::InvalidTransition`] when not in the table, when it
    /// would put work in flight (only a claim does), or when it would settle an
    /// attempt in flight (only the lease holder does; cancelling is allowed).
    async fn transition(&self, id: SubmissionId, change: StateChange) -> Result<Submission>;

    /// Replay a `Failed`, `DeadLettered` or `Stuck` submission: back to
    /// `Queued`, due now, with a fresh retry budget, journaled with the actor
    /// and reason; optionally under a fresh idempotency key (recorded in the
    /// ledger). Refused for other states, and once the payload was purged.
    async fn replay(&self, id: SubmissionId, replay: Replay) -> Result<Submission>;

    /// Append a note to a submission's timeline; its state is not touched.
    async fn note(&self, id: SubmissionId, note: Note) -> Result<()>;

    /// Close the attempt of each submission whose lease ended before `now`
    /// (an expired lease counts as an attempt) and return it to `Queued`,
    /// due at once, journaling [`crate::EventKind::LeaseExpired`] — or, when
    /// `policy`'s limits for its partner are reached (consecutive expired
    /// leases, max attempts, max age), dead-letter it with the reason.
    /// Returns what became of each.
    async fn reap_expired_leases(
        &self,
        now: DateTime<Utc>,
        policy: &ReapPolicy,
    ) -> Result<Vec<Reaped>>;

    /// Store an inbound callback raw. Nothing is parsed here: this is the
    /// write that makes sure nothing inbound is lost.
    async fn record_callback(&self, callback: NewCallback) -> Result<CallbackId>;

    /// Store an inbound callback and settle it ([`OutboxStore::settle_callback`])
    /// in one transaction, for a callback verified and parsed before it is
    /// stored. Answer the partner only after this returns: a callback
    /// answered with 2xx is then stored, and one lost to a crash before the
    /// commit was never answered, so the partner sends it again.
    ///
    /// The default stores, then settles, in two transactions; both bundled
    /// stores do it in one.
    async fn record_and_settle_callback(
        &self,
        callback: NewCallback,
        settlement: Settlement,
    ) -> Result<CallbackReceipt> {
        let id = self.record_callback(callback).await?;
        self.settle_callback(id, settlement).await
    }

    /// Settle a stored callback in one transaction: record the verdict and,
    /// for a parsed report, recognise repeats and conflicts, match the
    /// submission and apply the outcome at most once. Only callbacks not yet
    /// settled, unmatched or quarantined can be settled (again).
    async fn settle_callback(
        &self,
        id: CallbackId,
        settlement: Settlement,
    ) -> Result<CallbackReceipt>;

    /// Dismiss a quarantined callback (one of
    /// [`crate::callback::Disposition::QUARANTINED`]) in one transaction: its
    /// disposition becomes `Dismissed`, who, when and why are kept with it
    /// ([`StoredCallback::dismissal`]) and journaled on the timeline of the
    /// submission it was matched to, if any. Returns it as it is after.
    ///
    /// Errors, each changing nothing: [`crate::Error::InvalidInput`] for a
    /// blank `actor` or `reason`; [`crate::Error::NotQuarantined`] for a
    /// callback that is not quarantined; [`crate::Error::NotFound`].
    async fn dismiss_callback(
        &self,
        id: CallbackId,
        actor: Actor,
        reason: String,
    ) -> Result<StoredCallback>;

    /// Erase a finished submission's personal data in one transaction:
    /// its payload, result document, correlation values (and their index
    /// rows), partner reference and errors; its attempts' errors; every
    /// reason and data on its timeline; its result deliveries' errors; and
    /// the bodies, headers, errors, references and parsed outcomes of the
    /// callbacks matched to it. What happened stays: ids, states, times,
    /// event kinds and actors, the fingerprint and the idempotency key. The
    /// erasure itself is journaled ([`crate::EventKind::Forgotten`], with
    /// `actor` and `reason`). Returns the submission as it is after.
    ///
    /// Errors, each changing nothing: [`crate::Error::InvalidInput`] for a
    /// blank `actor` or `reason`; [`crate::Error::Unfinished`] for a
    /// submission that is not finished (cancel or resolve it first);
    /// [`crate::Error::NotFound`].
    async fn forget(&self, id: SubmissionId, actor: Actor, reason: String) -> Result<Submission>;

    /// One stored callback.
    async fn callback(&self, id: CallbackId) -> Result<StoredCallback>;

    /// Stored callbacks matching a filter, newest first.
    async fn list_callbacks(&self, filter: &CallbackFilter) -> Result<Vec<StoredCallback>>;

    /// Move an `AwaitingResult` submission's result deadline to `until` and
    /// journal `note` (a status poll that brought no result).
    async fn defer_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        note: Note,
    ) -> Result<Submission>;

    /// Quarantine (`Expired`) unmatched callbacks whose matching window ended
    /// before `now`. Returns how many.
    async fn expire_unmatched(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Submissions awaiting a result whose deadline passed before `now`,
    /// most overdue first, at most `limit`.
    async fn overdue_results(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Submission>>;

    /// Take overdue results of one partner for polling: up to `limit`
    /// submissions awaiting a result whose deadline passed at `now`, most
    /// overdue first, with their deadline moved to `now + hold` in the same
    /// transaction, so no other instance (or later round) takes them while
    /// they are polled. Rows another transaction holds are skipped. Nothing
    /// is journaled: the poll that follows records what it found.
    async fn claim_overdue(&self, claim: OverdueClaim) -> Result<Vec<Submission>>;

    /// Record (or, with `None` for `partner`'s pause, lift) a partner's pause.
    /// Shared by every host instance on this store.
    async fn set_pause(&self, partner: &str, pause: Option<Pause>) -> Result<()>;

    /// [`OutboxStore::set_pause`] and its line in the operations journal,
    /// in one transaction: both happen or neither.
    async fn set_pause_journaled(
        &self,
        partner: &str,
        pause: Option<Pause>,
        line: JournalLine,
    ) -> Result<JournalEntry>;

    /// Write a line to the operations journal on its own (for an action
    /// whose own writes are separate transactions, after them).
    async fn journal(&self, line: JournalLine) -> Result<JournalEntry>;

    /// The operations journal, newest first, as `filter` narrows it.
    async fn ops_journal(&self, filter: &JournalFilter) -> Result<Vec<JournalEntry>>;

    /// Partners whose pause has not ended at `now`.
    async fn pauses(&self, now: DateTime<Utc>) -> Result<Vec<Pause>>;

    /// Every partner's circuit as shared by all engine instances on this
    /// store, by partner name: one per partner the store has a row for
    /// (partners never paused, configured or tripped have none: their
    /// circuit is closed, see [`SharedCircuit::closed`]).
    async fn circuits(&self) -> Result<Vec<SharedCircuit>>;

    /// One partner's shared circuit; closed with no failures when the store
    /// has none recorded. A plain read: the engine reads it before each
    /// claim and takes a [`OutboxStore::circuit_step`] only when the step
    /// would change something.
    async fn circuit(&self, partner: &str) -> Result<SharedCircuit>;

    /// Apply one step to `partner`'s shared circuit at `now`, in one
    /// transaction on the circuit as it is (locked on PostgreSQL, the one
    /// writer on SQLite, so concurrent steps of several instances are
    /// applied one after the other): admit an instance (taking the probe
    /// when it is due), report an attempt's signal, or give a probe back.
    /// The rule is the same for both stores (see [`CircuitStep`]).
    ///
    /// Errors: [`crate::Error::InvalidInput`] for a partner name enqueue
    /// would refuse or an empty instance id; nothing is written then.
    async fn circuit_step(
        &self,
        partner: &str,
        step: CircuitStep,
        now: DateTime<Utc>,
    ) -> Result<CircuitOutcome>;

    /// Take `role` for `holder` (an engine instance's id) until
    /// `now + lease_for`, or renew it when `holder` holds it already:
    /// `true` when `holder` holds it now, `false` when another instance
    /// holds it and its lease has not run out. One holder at a time,
    /// whatever the concurrency, across processes and instances.
    ///
    /// Errors: [`crate::Error::InvalidInput`] for an empty role or holder.
    async fn claim_role(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        lease_for: std::time::Duration,
    ) -> Result<bool>;

    /// Give `role` up at `now` if `holder` holds it (a graceful shutdown),
    /// so another instance may take it at once; otherwise nothing changes.
    async fn release_role(&self, role: &str, holder: &str, now: DateTime<Utc>) -> Result<()>;

    /// Every role that was ever held, with its holder and lease (lapsed
    /// leases too: compare [`RoleLease::expires_at`] with the time).
    async fn roles(&self) -> Result<Vec<RoleLease>>;

    /// Record an engine instance's beat: its row is written on the first
    /// beat and its last beat (and partners and interval) updated on the
    /// next ones. A beat after [`OutboxStore::stop_instance`] changes
    /// nothing: a stopped instance stays stopped. Shared by every instance
    /// on this store.
    async fn beat(&self, instance: &Instance) -> Result<()>;

    /// Mark an instance stopped at `at` (its graceful shutdown): it is no
    /// longer live, and `at` is its last beat.
    async fn stop_instance(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    /// Every recorded instance, the latest beat first.
    async fn instances(&self) -> Result<Vec<Instance>>;

    /// Remove instances whose last beat is before `before`, keeping for
    /// each of their partners the latest last beat
    /// ([`PartnerStats::last_served_at`]). Returns how many were removed.
    async fn prune_instances(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Record (or, with `None`, clear) a partner's expected traffic, so
    /// health computed anywhere checks it. The engine records what each of
    /// its partners is configured with when it starts.
    async fn set_expected_traffic(
        &self,
        partner: &str,
        expected: Option<&ExpectedTraffic>,
    ) -> Result<()>;

    /// The expected traffic recorded per partner (only partners with one).
    async fn expected_traffic(&self) -> Result<Vec<(String, ExpectedTraffic)>>;

    /// Open an alert for (partner, class), or return the open one (with its
    /// details updated). The flag is `true` when it was newly opened. At most
    /// one alert per (partner, class) is open, whatever the concurrency.
    async fn open_alert(&self, alert: NewAlert) -> Result<(Alert, bool)>;

    /// Record that an alert's owner was notified in the round sent at
    /// `at`: the alert's last notification time becomes `at` (unless a
    /// later round was recorded), and a round is counted once however many
    /// sinks delivered it.
    async fn alert_notified(&self, id: AlertId, at: DateTime<Utc>) -> Result<()>;

    /// Resolve an open alert (its condition cleared).
    async fn resolve_alert(&self, id: AlertId, at: DateTime<Utc>) -> Result<Alert>;

    /// Acknowledge an alert: its owner knows; re-notifications stop.
    async fn acknowledge_alert(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Alert>;

    /// [`OutboxStore::acknowledge_alert`] and its line in the operations
    /// journal, in one transaction: both happen or neither.
    async fn acknowledge_alert_journaled(
        &self,
        id: AlertId,
        actor: Actor,
        at: DateTime<Utc>,
        line: JournalLine,
    ) -> Result<(Alert, JournalEntry)>;

    /// Alerts, newest first: only open ones, or all (at most `limit`).
    async fn alerts(&self, open_only: bool, limit: usize) -> Result<Vec<Alert>>;

    /// One alert. [`crate::Error::NotFound`] when there is none.
    async fn alert(&self, id: AlertId) -> Result<Alert>;

    /// Journal notifications about to get their first try (each held until
    /// its `next_try_at`, the end of the try's lease).
    async fn record_notifications(&self, rows: Vec<AlertNotification>) -> Result<()>;

    /// Claim up to `limit` pending notifications whose next try is due at
    /// `now`, earliest first: each counts a try and is held until `until`.
    /// Two concurrent claims never return the same notification.
    async fn claim_notifications(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<AlertNotification>>;

    /// End a try as the engine decided ([`NotificationWrite`]): the
    /// notification's new state, the alert notified in that round (each
    /// round counted once), and whether the sink is failing for the
    /// (partner, owner, sink). `false`, and nothing written, when the try is
    /// no longer the notification's last (its claim lapsed and another
    /// instance took it) or the notification is no longer pending.
    async fn finish_notification(&self, write: NotificationWrite) -> Result<bool>;

    /// An alert's notifications, in the order they were sent.
    async fn alert_notifications(&self, id: AlertId) -> Result<Vec<AlertNotification>>;

    /// Pending notifications, earliest next try first (at most `limit`).
    async fn pending_notifications(&self, limit: usize) -> Result<Vec<AlertNotification>>;

    /// Sinks whose deliveries to an owner are failing now, per partner.
    async fn sink_failures(&self) -> Result<Vec<SinkFailure>>;

    /// Statistics for health, per partner. Counts by state come from counters
    /// the store keeps, so their cost does not grow with history.
    async fn stats(&self, query: &StatsQuery) -> Result<Vec<PartnerStats>>;

    /// One partner's submissions counted by the hour they were created in,
    /// the hour they ended in and their state ([`HourlyCount`]), in one
    /// grouped query: those created from [`HourlyQuery::from`] on, and
    /// those created before it that are unfinished now. Groups in no
    /// particular order; no payload is read.
    async fn hourly_counts(&self, query: &HourlyQuery) -> Result<Vec<HourlyCount>>;

    /// Retention: remove the payloads of submissions that became terminal
    /// before `cutoffs.finished`, the raw bodies of callbacks received
    /// before it (except those still waiting to be processed or matched),
    /// the bodies of rejected callbacks received before
    /// `cutoffs.rejected`, and deletes the rows of callbacks settled for
    /// good received before `cutoffs.settled_rows` (never one `received` or
    /// `unmatched`, nor one about an unfinished submission) and of callbacks
    /// to names not in `cutoffs.configured` received before
    /// `cutoffs.unknown_rows`. Ids, states,
    /// fingerprints and timelines stay; space is given back to the file
    /// where the database allows. Works in bounded batches; call until it
    /// reports nothing left.
    async fn purge(&self, cutoffs: PurgeCutoffs) -> Result<PurgeReport>;

    /// Record (`true`) or stop recording (`false`) a result delivery for
    /// every change that finishes a submission of `partner`. Shared by every
    /// host instance on the store; the engine turns it on for partners with
    /// a result handler.
    async fn set_result_delivery(&self, partner: &str, on: bool) -> Result<()>;

    /// Claim due result deliveries of `claim.partners` under fresh leases,
    /// oldest first. A delivery waits while an earlier result of the same
    /// ordering key (or, without one, of the same submission) is not yet
    /// delivered.
    async fn claim_deliveries(&self, claim: DeliveryClaim) -> Result<Vec<DeliveryLease>>;

    /// End a claimed delivery, journaling it on the submission's timeline.
    /// [`crate::Error::StaleLease`] when its lease is no longer the
    /// current one.
    async fn finish_delivery(&self, lease: &DeliveryLease, end: DeliveryEnd) -> Result<()>;

    /// Result deliveries matching `filter`, oldest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>>;

    /// Send a parked delivery to the host's handler again, with a fresh
    /// retry budget; journaled with `note`'s actor and reason.
    async fn rerun_delivery(&self, id: DeliveryId, note: Note) -> Result<Delivery>;

    /// Remove idempotency keys whose retention ended before `now` and whose
    /// submission is terminal. Returns how many were removed.
    async fn prune_ledger(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Hints that work became due, including work written by other
    /// processes sharing this store, so dispatchers wake without waiting for
    /// their next poll. `None` (the default) when the store has no such
    /// channel: [`crate::engine::Liaison`] then relies on its in-process
    /// wake-ups and on polling. `PostgresStore` (feature `postgres`) answers with a
    /// `LISTEN`/`NOTIFY` subscription, started on first call (it needs a
    /// Tokio runtime; outside one it answers `None`).
    fn wakeups(&self) -> Option<Wakeups> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::OutboxStore;

    // Hosts and the engine hold stores as trait objects: keep that possible.
    fn _object_safe(_: std::sync::Arc<dyn OutboxStore>) {}
}
