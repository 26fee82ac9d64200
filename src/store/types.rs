//! Values exchanged with an [`super::OutboxStore`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::model::event::{Actor, AttemptOutcome, EventKind};
use crate::model::result::ResultDocument;
use crate::model::submission::{Submission, SubmissionState};

/// What an enqueue returned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The stored submission (the existing one when deduplicated).
    pub submission: Submission,
    /// `true` when the key was already in the ledger with the same payload,
    /// so nothing new was written.
    pub deduplicated: bool,
}

/// A request for due work.
///
/// ```
/// use liaison::store::ClaimRequest;
/// use std::time::Duration;
///
/// let request = ClaimRequest::new("clearinghouse", 32, Duration::from_secs(30));
/// assert_eq!(request.limit, 32);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimRequest {
    /// Whose work to claim.
    pub partner: String,
    /// At most this many submissions (and at most 1,024 in one claim,
    /// whatever the limit: claim again for more).
    pub limit: usize,
    /// How long the lease lasts; a worker that has not reported by then is
    /// presumed dead and the work is returned to the queue.
    pub lease_for: Duration,
    /// The time the claim is made at (work due at or before it is claimed).
    pub now: DateTime<Utc>,
    /// When `true` (the default), a dead-lettered submission holds back later
    /// submissions with its ordering key until it is replayed or resolved.
    pub dead_letter_blocks_ordering: bool,
    /// The partner's limits, enforced for every claimer of the store in the
    /// claim's transaction (none by default).
    pub limits: super::PartnerLimits,
    /// Who claims, and how many of the partner's slots it holds now: a
    /// claimer that names itself is recorded as waiting when the
    /// concurrency refuses it, and the slots are shared fairly between
    /// the claimers that wait (none by default: a claimer that does not
    /// name itself counts as holding nothing and never waits).
    pub claimer: Option<(String, u32)>,
}

impl ClaimRequest {
    /// Claim up to `limit` of `partner`'s due work under leases of `lease_for`, now.
    ///
    /// "Now" is this host's clock. The store dates enqueues and due times by
    /// its own ([`crate::store::OutboxStore::now`]: on PostgreSQL the
    /// database's, as measured), so on a shared store pass
    /// `.at(store.now())`, as the engine does; by the host's clock, a claim
    /// made right after an enqueue can miss it by the clocks' difference.
    pub fn new(partner: impl Into<String>, limit: usize, lease_for: Duration) -> Self {
        ClaimRequest {
            partner: partner.into(),
            limit,
            lease_for,
            now: crate::clock::now(),
            dead_letter_blocks_ordering: true,
            limits: super::PartnerLimits::none(),
            claimer: None,
        }
    }

    /// Make the claim as of `now` (tests and simulations).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// Whether a dead-lettered submission holds back later submissions with
    /// its ordering key (default `true`).
    pub fn dead_letter_blocks_ordering(mut self, blocks: bool) -> Self {
        self.dead_letter_blocks_ordering = blocks;
        self
    }

    /// Enforce the partner's concurrency and rate limits for every claimer
    /// of the store ([`super::OutboxStore::claim_limited`] says what held a
    /// claim back).
    pub fn limits(mut self, limits: super::PartnerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Name the claimer (an instance, a worker: any name unique among the
    /// partner's claimers) and how many of the partner's slots it holds
    /// now, so the partner's concurrency is shared fairly with other
    /// claimers ([`super::Limited::FairShare`]).
    ///
    /// ```
    /// use liaison::store::{ClaimRequest, PartnerLimits};
    /// use std::time::Duration;
    ///
    /// let request = ClaimRequest::new("clearinghouse", 4, Duration::from_secs(30))
    ///     .limits(PartnerLimits::none().concurrency(4))
    ///     .claimer("instance-a", 2);
    /// assert_eq!(request.claimer, Some(("instance-a".to_string(), 2)));
    /// ```
    pub fn claimer(mut self, id: impl Into<String>, holding: u32) -> Self {
        self.claimer = Some((id.into(), holding));
        self
    }

    /// When a lease taken by this claim ends: `lease_for` after `now`, or
    /// the end of representable time for a lease that would outlast it
    /// (a huge `lease_for`, a claim dated near the end of time).
    pub(crate) fn lease_end(&self) -> DateTime<Utc> {
        crate::store::common::saturating_after(self.now, self.lease_for)
    }
}

/// The token that proves a worker still holds a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseToken(Uuid);

crate::id::uuid_id!(LeaseToken, "lease token");

impl LeaseToken {
    pub(crate) fn fresh() -> Self {
        LeaseToken(Uuid::new_v4())
    }
}

/// A claimed submission: the work, and the lease under which to report on it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Lease {
    /// The submission as it was when claimed (state `InFlight`).
    pub submission: Submission,
    /// The lease token; results are accepted only under it.
    pub token: LeaseToken,
    /// The attempt number this claim started (1 for the first).
    pub attempt: u32,
    /// When the lease ends.
    pub expires_at: DateTime<Utc>,
}

/// One finished attempt to record with [`super::OutboxStore::complete_batch`]:
/// the lease it ran under, how it ended, and the state change it leads to
/// (what [`super::OutboxStore::complete`] takes).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FinishedAttempt {
    /// The lease the attempt ran under.
    pub lease: Lease,
    /// How the attempt ended.
    pub report: AttemptReport,
    /// The state change it leads to.
    pub change: StateChange,
}

impl FinishedAttempt {
    /// An attempt under `lease` that ended as `report` says and leads to
    /// `change`.
    pub fn new(lease: Lease, report: AttemptReport, change: StateChange) -> Self {
        FinishedAttempt {
            lease,
            report,
            change,
        }
    }
}

/// What to do once a store has taken a batch of results far enough that
/// every write it takes afterwards sees them
/// ([`super::OutboxStore::complete_batch_handing_over`]): it runs once,
/// when the store calls [`HandOver::run`] or drops it, whichever comes
/// first, so a store that fails before then still runs it.
///
/// The engine gives its attempts' concurrency slots back this way, and its
/// next claim (which counts the partner's work in flight) then finds them
/// free.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use liaison::store::HandOver;
///
/// let runs = Arc::new(AtomicUsize::new(0));
/// let counted = Arc::clone(&runs);
/// let hand_over = HandOver::new(move || {
///     counted.fetch_add(1, Ordering::SeqCst);
/// });
/// hand_over.run();
/// assert_eq!(runs.load(Ordering::SeqCst), 1);
///
/// // Dropped without being run: it runs then.
/// let counted = Arc::clone(&runs);
/// drop(HandOver::new(move || {
///     counted.fetch_add(1, Ordering::SeqCst);
/// }));
/// assert_eq!(runs.load(Ordering::SeqCst), 2);
/// ```
pub struct HandOver(Option<Box<dyn FnOnce() + Send>>);

impl HandOver {
    /// Run `then` once the batch is handed over.
    pub fn new(then: impl FnOnce() + Send + 'static) -> Self {
        HandOver(Some(Box::new(then)))
    }

    /// Nothing to run.
    pub fn nothing() -> Self {
        HandOver(None)
    }

    /// The batch is handed over: run it now.
    pub fn run(mut self) {
        self.fire();
    }

    fn fire(&mut self) {
        if let Some(then) = self.0.take() {
            then();
        }
    }
}

impl Drop for HandOver {
    fn drop(&mut self) {
        self.fire();
    }
}

impl std::fmt::Debug for HandOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOver")
            .field("pending", &self.0.is_some())
            .finish()
    }
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AttemptReport {
    /// The outcome.
    pub outcome: AttemptOutcome,
    /// The partner's HTTP status, if there was one.
    pub http_status: Option<u16>,
    /// The error text, if it failed (truncated to a bounded length when stored).
    pub error: Option<String>,
    /// When the attempt finished.
    pub finished_at: DateTime<Utc>,
}

impl AttemptReport {
    /// An attempt that ended with `outcome` now.
    pub fn new(outcome: AttemptOutcome) -> Self {
        AttemptReport {
            outcome,
            http_status: None,
            error: None,
            finished_at: crate::clock::now(),
        }
    }

    /// The partner's HTTP status.
    pub fn http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// The error text.
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// When the attempt finished (default: when the report was made).
    pub fn finished_at(mut self, at: DateTime<Utc>) -> Self {
        self.finished_at = at;
        self
    }
}

/// A requested state change and what to record with it.
///
/// ```
/// use liaison::{Actor, SubmissionState};
/// use liaison::store::StateChange;
///
/// let cancel = StateChange::to(SubmissionState::Cancelled)
///     .actor(Actor::person("alice"))
///     .reason("customer withdrew the claim");
/// assert_eq!(cancel.target, SubmissionState::Cancelled);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StateChange {
    /// The state to move to.
    pub target: SubmissionState,
    /// Who asks for it. Default: `system:liaison`.
    pub actor: Actor,
    /// Why, in words.
    pub reason: Option<String>,
    /// The event to record; by default derived from the two states.
    pub event: Option<EventKind>,
    /// Structured details for the event.
    pub data: Option<Value>,
    /// When the submission is next due (for a move to `Queued`; default now).
    pub due_at: Option<DateTime<Utc>>,
    /// The partner's reference (for a move to `AwaitingResult`).
    pub external_ref: Option<String>,
    /// When the partner's result is due (for a move to `AwaitingResult`).
    pub result_deadline: Option<DateTime<Utc>>,
    /// The error or partner reason to keep as `last_error`.
    pub error: Option<String>,
    /// When the change happens. Default: the time the store applies it.
    pub at: Option<DateTime<Utc>>,
    /// The partner's result document to keep with the submission (for a
    /// move to a finished state). Without one, a finished submission keeps
    /// the document it has; a move back to `Queued` clears it.
    pub result: Option<ResultDocument>,
    /// The count of consecutive leases that ended without a report, as the
    /// reaper sets it; `None` lets the change decide (see
    /// `rules::transition`). Only the reaper sets it.
    pub(crate) lease_expiries: Option<u32>,
}

impl StateChange {
    /// A change to `target`.
    pub fn to(target: SubmissionState) -> Self {
        StateChange {
            target,
            actor: Actor::system("liaison"),
            reason: None,
            event: None,
            data: None,
            due_at: None,
            external_ref: None,
            result_deadline: None,
            error: None,
            at: None,
            result: None,
            lease_expiries: None,
        }
    }

    /// Who asks for it.
    pub fn actor(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// Why.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Record this event instead of the one derived from the states.
    pub fn event(mut self, event: EventKind) -> Self {
        self.event = Some(event);
        self
    }

    /// Structured details for the event.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// When it is next due (for `Queued`).
    pub fn due_at(mut self, at: DateTime<Utc>) -> Self {
        self.due_at = Some(at);
        self
    }

    /// The partner's reference (for `AwaitingResult`).
    pub fn external_ref(mut self, reference: impl Into<String>) -> Self {
        self.external_ref = Some(reference.into());
        self
    }

    /// When the result is due (for `AwaitingResult`).
    pub fn result_deadline(mut self, at: DateTime<Utc>) -> Self {
        self.result_deadline = Some(at);
        self
    }

    /// The error or partner reason to keep.
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Apply as of `at` instead of the current time.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = Some(at);
        self
    }

    /// The partner's result document to keep (see [`StateChange::result`]).
    pub fn result(mut self, result: ResultDocument) -> Self {
        self.result = Some(result);
        self
    }
}

/// Which submissions [`super::OutboxStore::list`] returns. Empty fields match
/// everything; results are oldest first, at most `limit` (default 100, at most
/// 10,000).
///
/// Results are always in enqueue order, whatever the filter, and
/// [`ListFilter::after`] pages in that order. Filters by partner and
/// state, by [`ListFilter::correlation`] and by
/// [`ListFilter::updated_since`] are served by indexes.
///
/// ```
/// use liaison::SubmissionState;
/// use liaison::store::ListFilter;
///
/// let stuck = ListFilter::default().partner("clearinghouse").state(SubmissionState::Stuck);
/// assert_eq!(stuck.states, vec![SubmissionState::Stuck]);
///
/// // The host's own keys: every submission carrying claim_id = C-1042.
/// let claim = ListFilter::default()
///     .partner("clearinghouse")
///     .correlation("claim_id", "C-1042");
/// assert_eq!(claim.correlation, Some(("claim_id".into(), "C-1042".into())));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only this partner.
    pub partner: Option<String>,
    /// Only these states (any of them).
    pub states: Vec<SubmissionState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this idempotency key.
    pub idempotency_key: Option<String>,
    /// Only this ordering key.
    pub ordering_key: Option<String>,
    /// Only created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only created before this time.
    pub created_until: Option<DateTime<Utc>>,
    /// Only those carrying this correlation field, as (name, value): an
    /// exact, case-sensitive match of one field given at enqueue
    /// ([`crate::NewSubmission::correlation`]).
    pub correlation: Option<(String, String)>,
    /// Only those whose `updated_at` is at or after this time (see
    /// [`ListFilter::updated_since`]).
    pub updated_since: Option<DateTime<Utc>>,
    /// Only the one holding this partner reference (exact match; see
    /// [`ListFilter::external_ref`]).
    pub external_ref: Option<String>,
    /// Only those carrying this value in any correlation field (see
    /// [`ListFilter::correlation_value`]).
    pub correlation_value: Option<String>,
    /// Page after this submission (by enqueue order).
    pub after: Option<crate::SubmissionId>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// Leave the payloads out: each comes back as `Some(Value::Null)` where
    /// it is kept and `None` where retention purged it, so a listing that
    /// shows no payload reads none.
    pub without_payload: bool,
    /// Only open work (not succeeded, cancelled or resolved by hand) with a
    /// business deadline, nearest deadline first (see
    /// [`ListFilter::by_deadline`]).
    pub by_deadline: bool,
}

impl ListFilter {
    /// Largest page `list` returns.
    pub const MAX_LIMIT: usize = 10_000;

    /// Only this partner.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    /// Also match this state.
    pub fn state(mut self, state: SubmissionState) -> Self {
        self.states.push(state);
        self
    }

    /// Only this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only this idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Only this ordering key.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Only created at or after `at`.
    pub fn created_from(mut self, at: DateTime<Utc>) -> Self {
        self.created_from = Some(at);
        self
    }

    /// Only created before `at`.
    pub fn created_until(mut self, at: DateTime<Utc>) -> Self {
        self.created_until = Some(at);
        self
    }

    /// Only submissions carrying correlation field `name` with exactly
    /// `value` (replacing an earlier correlation filter). Combines with the
    /// other filters; with [`ListFilter::partner`], another partner's equal
    /// value does not match.
    ///
    /// A name or value that [`crate::NewSubmission::correlation`] would
    /// refuse (empty, longer than [`crate::MAX_CORRELATION_BYTES`], a name
    /// with other characters than letters, digits, `_`, `-`, `.`, `:`, `/`,
    /// a value with control characters) makes `list` fail with
    /// [`crate::Error::InvalidInput`].
    ///
    /// ```
    /// use liaison::store::ListFilter;
    ///
    /// let filter = ListFilter::default().correlation("order_no", "SO-9913");
    /// assert_eq!(filter.correlation, Some(("order_no".into(), "SO-9913".into())));
    /// ```
    pub fn correlation(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.correlation = Some((name.into(), value.into()));
        self
    }

    /// Only submissions changed at or after `at`, to pull what changed
    /// since the last pull. A change is what sets `updated_at`: the
    /// enqueue, every state change (claims, retries, results, replays,
    /// recovery actions) and a deferred result deadline; retention purging
    /// a payload is not one.
    ///
    /// Results stay in enqueue order, not in order of change, so paging
    /// with [`ListFilter::after`] (by enqueue order, which never changes)
    /// neither skips nor repeats a submission within one pull: a
    /// submission that matched when the pull began still matches (its
    /// `updated_at` only moves forward, as far as the clocks stamping it
    /// agree) and comes back once, as it is when its page is read. A change made while you page to a submission
    /// already returned shows in the next pull. Take the next pull's
    /// `since` from the clock *before* the first page, less a margin
    /// longer than your longest write transaction and any clock skew
    /// between hosts (a change is stamped when it is made and seen when it
    /// commits), and expect to see some submissions twice: compare their
    /// `updated_at` with what you hold.
    ///
    /// ```
    /// use chrono::{Duration, Utc};
    /// use liaison::store::ListFilter;
    ///
    /// let pull_started = Utc::now();
    /// let last_pull = pull_started - Duration::minutes(5);
    /// let changed = ListFilter::default()
    ///     .partner("lab")
    ///     .updated_since(last_pull - Duration::seconds(30))
    ///     .without_payload()
    ///     .limit(500);
    /// assert!(changed.updated_since.is_some());
    /// ```
    pub fn updated_since(mut self, at: DateTime<Utc>) -> Self {
        self.updated_since = Some(at);
        self
    }

    /// Only the submission holding this partner reference (the
    /// reference the partner gave when it accepted the work), of any
    /// partner unless [`ListFilter::partner`] narrows it: what a caller
    /// reads out from the partner's portal.
    ///
    /// ```
    /// use liaison::store::ListFilter;
    ///
    /// let filter = ListFilter::default().external_ref("LAB-55120");
    /// assert_eq!(filter.external_ref.as_deref(), Some("LAB-55120"));
    /// ```
    pub fn external_ref(mut self, reference: impl Into<String>) -> Self {
        self.external_ref = Some(reference.into());
        self
    }

    /// Only submissions carrying `value` in any of their correlation
    /// fields (exact, case-sensitive), whatever the field's name: a claim
    /// or order number read out on the phone, when the name of the field
    /// it was given under is not known. A value that
    /// [`crate::NewSubmission::correlation`] would refuse makes `list` fail
    /// with [`crate::Error::InvalidInput`].
    ///
    /// ```
    /// use liaison::store::ListFilter;
    ///
    /// let filter = ListFilter::default().correlation_value("SO-9913");
    /// assert_eq!(filter.correlation_value.as_deref(), Some("SO-9913"));
    /// ```
    pub fn correlation_value(mut self, value: impl Into<String>) -> Self {
        self.correlation_value = Some(value.into());
        self
    }

    /// The page after this submission (by enqueue order, or by deadline
    /// with [`ListFilter::by_deadline`]): pass the last id of the previous
    /// page.
    pub fn after(mut self, id: crate::SubmissionId) -> Self {
        self.after = Some(id);
        self
    }

    /// At most `limit`.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Leave the payloads out (see [`ListFilter::without_payload`]).
    pub fn without_payload(mut self) -> Self {
        self.without_payload = true;
        self
    }

    /// Only open work (not succeeded, cancelled or resolved by hand) that
    /// has a business deadline ([`crate::NewSubmission::business_deadline`]),
    /// nearest deadline first (then by enqueue order), served by an index.
    /// Combines with the other filters; [`ListFilter::after`] pages on in
    /// the same order (after that submission's deadline and place).
    ///
    /// ```
    /// use liaison::store::ListFilter;
    ///
    /// let nearest = ListFilter::default().partner("clearinghouse").by_deadline().limit(10);
    /// assert!(nearest.by_deadline);
    /// ```
    pub fn by_deadline(mut self) -> Self {
        self.by_deadline = true;
        self
    }

    /// The states asked for, each once, in order: a list reads each
    /// state's part on its own, and a state named twice must not list its
    /// submissions twice.
    pub(crate) fn distinct_states(&self) -> Vec<SubmissionState> {
        let mut states = Vec::with_capacity(self.states.len());
        for state in &self.states {
            if !states.contains(state) {
                states.push(*state);
            }
        }
        states
    }

    /// The page size to use.
    pub(crate) fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, Self::MAX_LIMIT)
    }

    /// Refuse a filter that could never match anything stored, with the
    /// error enqueue gives for the same value: every store checks a filter
    /// here before it reads.
    pub(crate) fn check(&self) -> crate::Result<()> {
        if let Some((name, value)) = &self.correlation {
            crate::model::submission::validate_correlation(name, value)?;
        }
        if let Some(value) = &self.correlation_value {
            crate::model::submission::validate_correlation("value", value)?;
        }
        Ok(())
    }
}

/// A line for a submission's timeline that changes no state (a submission
/// held back, a progress report, an operator's comment).
///
/// ```
/// use liaison::{Actor, EventKind};
/// use liaison::store::Note;
///
/// let note = Note::new(EventKind::Held, Actor::system("dispatcher")).reason("waiting behind C-1");
/// assert_eq!(note.kind, EventKind::Held);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Note {
    /// What it records.
    pub kind: EventKind,
    /// Who writes it.
    pub actor: Actor,
    /// Why, in words.
    pub reason: Option<String>,
    /// Structured details.
    pub data: Option<Value>,
}

impl Note {
    /// A note of `kind` by `actor`.
    pub fn new(kind: EventKind, actor: Actor) -> Self {
        Note {
            kind,
            actor,
            reason: None,
            data: None,
        }
    }

    /// Why.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Structured details.
    pub fn data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// A replay request: who, why, and whether to send under a fresh key.
///
/// ```
/// use liaison::Actor;
/// use liaison::store::Replay;
///
/// let replay = Replay::new(Actor::person("ops@clinic"), "partner fixed their mapping").fresh_key(true);
/// assert!(replay.fresh_key);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replay {
    /// Who replays it.
    pub actor: Actor,
    /// Why (required: it goes on the timeline).
    pub reason: String,
    /// Send under a new idempotency key derived from the original
    /// (`<key>~replay<n>`), for a partner that would otherwise answer with
    /// its stored refusal. `false` keeps the key, for a partner that may hold
    /// the original and must not process it twice.
    pub fresh_key: bool,
}

impl Replay {
    /// A replay by `actor` for `reason`, keeping the idempotency key.
    pub fn new(actor: Actor, reason: impl Into<String>) -> Self {
        Replay {
            actor,
            reason: reason.into(),
            fresh_key: false,
        }
    }

    /// Whether to derive a fresh idempotency key.
    pub fn fresh_key(mut self, fresh: bool) -> Self {
        self.fresh_key = fresh;
        self
    }
}

/// An announced pause of a partner (maintenance): nothing is sent until it
/// ends or is lifted; nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pause {
    /// The partner.
    pub partner: String,
    /// When sending resumes by itself.
    pub until: DateTime<Utc>,
    /// Who paused it.
    pub actor: Actor,
    /// Why.
    pub reason: String,
}

impl Pause {
    /// `partner` paused until `until` by `actor` for `reason`.
    ///
    /// ```
    /// use liaison::Actor;
    /// use liaison::store::Pause;
    ///
    /// let until = chrono::Utc::now() + chrono::Duration::hours(2);
    /// let pause = Pause::new("bank", until, Actor::person("ops"), "bank maintenance window");
    /// assert_eq!(pause.partner, "bank");
    /// ```
    pub fn new(
        partner: impl Into<String>,
        until: DateTime<Utc>,
        actor: Actor,
        reason: impl Into<String>,
    ) -> Self {
        Pause {
            partner: partner.into(),
            until,
            actor,
            reason: reason.into(),
        }
    }
}

/// What retention removes, as cutoff times: the engine computes them from
/// its settings ([`crate::engine::EngineSettings::payload_retention`],
/// [`crate::engine::EngineSettings::rejected_body_retention`] and
/// [`crate::engine::EngineSettings::callback_row_retention`]) and its
/// configured partners, and each store applies them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeCutoffs {
    /// Payloads of submissions that became terminal before it, and bodies
    /// of settled callbacks received before it (except rejected ones).
    pub finished: DateTime<Utc>,
    /// Bodies of callbacks that failed verification (`rejected`) received
    /// before it.
    pub rejected: DateTime<Utc>,
    /// Rows of callbacks settled for good (every disposition but `received`
    /// and `unmatched`), received before it, whose submission (if any) is
    /// finished. `DateTime::<Utc>::MIN_UTC` (the default): none.
    pub settled_rows: DateTime<Utc>,
    /// Rows of callbacks to names that are not in `configured` (stored as
    /// `rejected` or `too_large`), received before it.
    /// `DateTime::<Utc>::MIN_UTC` (the default): none.
    pub unknown_rows: DateTime<Utc>,
    /// The configured partner names, which `unknown_rows` does not touch.
    pub configured: Vec<String>,
}

impl PurgeCutoffs {
    /// Cutoffs for finished work and for rejected callback bodies; no
    /// callback row is deleted (see [`PurgeCutoffs::rows`]).
    pub fn new(finished: DateTime<Utc>, rejected: DateTime<Utc>) -> Self {
        PurgeCutoffs {
            finished,
            rejected,
            settled_rows: DateTime::<Utc>::MIN_UTC,
            unknown_rows: DateTime::<Utc>::MIN_UTC,
            configured: Vec::new(),
        }
    }

    /// Also delete rows of callbacks settled for good received before
    /// `settled`, and rows of callbacks to names other than `configured`
    /// received before `unknown`.
    pub fn rows(
        mut self,
        settled: DateTime<Utc>,
        unknown: DateTime<Utc>,
        configured: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.settled_rows = settled;
        self.unknown_rows = unknown;
        self.configured = configured.into_iter().map(Into::into).collect();
        self
    }
}

impl From<DateTime<Utc>> for PurgeCutoffs {
    /// One cutoff for payloads and bodies; no callback row is deleted.
    fn from(cutoff: DateTime<Utc>) -> Self {
        PurgeCutoffs::new(cutoff, cutoff)
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PurgeReport {
    /// Submission payloads removed.
    pub payloads: u64,
    /// Raw callback bodies removed.
    pub callback_bodies: u64,
    /// Rows of callbacks settled for good deleted.
    pub settled_callbacks: u64,
    /// Rows of callbacks to names that are no configured partner deleted.
    pub unknown_callbacks: u64,
    /// Finished submissions whose personal data was cleared (correlation
    /// values, partner reference, errors; their attempts' errors, the
    /// reasons liaison wrote on their timelines, their correlation rows).
    pub personal_data: u64,
    /// Callbacks whose headers, error and reference were cleared.
    pub callback_personal_data: u64,
    /// More were due than one pass removes: call again.
    pub more: bool,
}

/// Which overdue results to take for polling: see
/// [`crate::store::OutboxStore::claim_overdue`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverdueClaim {
    /// Whose submissions.
    pub partner: String,
    /// Deadlines at or before this time are overdue.
    pub now: DateTime<Utc>,
    /// How long the taken submissions are hidden from other claims (the
    /// poll's time budget). A poller that dies leaves them overdue again
    /// after it.
    pub hold: Duration,
    /// At most this many.
    pub limit: usize,
}

impl OverdueClaim {
    /// Take up to `limit` of `partner`'s overdue results now, hiding them
    /// from other claims for `hold`.
    pub fn new(partner: impl Into<String>, limit: usize, hold: Duration) -> Self {
        OverdueClaim {
            partner: partner.into(),
            now: crate::clock::now(),
            hold,
            limit,
        }
    }

    /// Take them as of `now` (tests and simulations).
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }
}

/// A request for due result deliveries.
///
/// ```
/// use liaison::store::DeliveryClaim;
/// use std::time::Duration;
///
/// let claim = DeliveryClaim::new(vec!["clearinghouse".into()], 16, Duration::from_secs(60));
/// assert_eq!(claim.limit, 16);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeliveryClaim {
    /// Whose deliveries (the partners this host instance has handlers for).
    pub partners: Vec<String>,
    /// At most this many.
    pub limit: usize,
    /// How long the lease lasts; an unfinished delivery is claimed again
    /// after it.
    pub lease_for: Duration,
    /// The time the claim is made at.
    pub now: DateTime<Utc>,
}

impl DeliveryClaim {
    /// Claim up to `limit` due deliveries of `partners` under leases of
    /// `lease_for`, now.
    pub fn new(partners: Vec<String>, limit: usize, lease_for: Duration) -> Self {
        DeliveryClaim {
            partners,
            limit,
            lease_for,
            now: crate::clock::now(),
        }
    }

    /// Make the claim as of `now`.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    pub(crate) fn lease_end(&self) -> DateTime<Utc> {
        crate::store::common::saturating_after(self.now, self.lease_for)
    }
}

/// A claimed delivery: what to hand to the handler, and the lease to
/// report under.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeliveryLease {
    /// The delivery as claimed.
    pub delivery: crate::model::delivery::Delivery,
    /// The lease token; the end is accepted only under it.
    pub token: LeaseToken,
    /// When the lease ends.
    pub expires_at: DateTime<Utc>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeliveryEnd {
    /// The host's handler took the result.
    Delivered,
    /// The handler failed; try again at `due_at`.
    Retry {
        /// When to try again.
        due_at: DateTime<Utc>,
        /// The handler's error.
        error: String,
    },
    /// The handler failed and its retries are spent: park it.
    Parked {
        /// The handler's error.
        error: String,
    },
}

/// Which deliveries [`super::OutboxStore::deliveries`] returns: oldest
/// first, at most `limit` (default 100, at most 10,000).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct DeliveryFilter {
    /// Only this partner.
    pub partner: Option<String>,
    /// Only this state.
    pub state: Option<crate::model::delivery::DeliveryState>,
    /// Only those of this submission.
    pub submission: Option<crate::SubmissionId>,
    /// At most this many.
    pub limit: Option<usize>,
    /// The page after this delivery (oldest first): pass the last id of
    /// the previous page.
    pub after: Option<crate::model::delivery::DeliveryId>,
}

impl DeliveryFilter {
    /// The page after this delivery (see [`DeliveryFilter::after`]).
    pub fn after(mut self, id: crate::model::delivery::DeliveryId) -> Self {
        self.after = Some(id);
        self
    }

    /// Only this partner.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    /// Only this state.
    pub fn state(mut self, state: crate::model::delivery::DeliveryState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only those of this submission.
    pub fn submission(mut self, id: crate::SubmissionId) -> Self {
        self.submission = Some(id);
        self
    }

    /// At most this many.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn bounded_limit(&self) -> i64 {
        i64::try_from(self.limit.unwrap_or(100).min(ListFilter::MAX_LIMIT)).unwrap_or(100)
    }
}
