//! Registering a partner: its adapter and the policies the engine applies.

use std::sync::Arc;
use std::time::Duration;

use crate::callback::CallbackMatcher;
use crate::error::{Error, Result};
use crate::model::submission::validate_partner;
use crate::partner::PartnerAdapter;
use crate::retry::{Exponential, RetryLimits, RetryPolicy};
use crate::store::{PartnerLimits, Rate, ReapLimits};

use super::circuit::CircuitSettings;

/// One partner as the engine runs it. `Partner::new` gives the recommended
/// settings; change what your partner's contract says.
///
/// ```
/// use liaison::engine::{CircuitSettings, Partner};
/// use liaison::retry::{Exponential, RetryLimits};
/// # use liaison::{AttemptContext, PartnerAdapter, PartnerError, Submission, SubmitOutcome};
/// use std::time::Duration;
///
/// # #[derive(Debug)] struct MyAdapter;
/// # #[async_trait::async_trait]
/// # impl PartnerAdapter for MyAdapter {
/// #     async fn submit(&self, _: &AttemptContext, _: &Submission) -> Result<SubmitOutcome, PartnerError> {
/// #         Ok(SubmitOutcome::AwaitResult { external_ref: None })
/// #     }
/// # }
/// # let adapter = MyAdapter;
/// let partner = Partner::new("clearinghouse", adapter)
///     .retry(Exponential::new(Duration::from_millis(500), Duration::from_secs(60))?)
///     .limits(RetryLimits::new(8, Duration::from_secs(6 * 3600))?)
///     .attempt_timeout(Duration::from_secs(10))
///     .concurrency(4)
///     .rate_limit_per_second(20)
///     .circuit(CircuitSettings::new(5, Duration::from_secs(30))?)
///     .result_timeout(Duration::from_secs(3600));
/// # let _ = partner;
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Partner {
    pub(crate) name: String,
    pub(crate) adapter: Arc<dyn PartnerAdapter>,
    pub(crate) retry: Arc<dyn RetryPolicy>,
    pub(crate) limits: RetryLimits,
    pub(crate) attempt_timeout: Duration,
    pub(crate) concurrency: usize,
    /// Attempts per period, as configured (checked when the hub is built).
    pub(crate) rate_limit: Option<RateSetting>,
    pub(crate) circuit: Option<CircuitSettings>,
    pub(crate) result_timeout: Duration,
    pub(crate) dead_letter_blocks_ordering: bool,
    pub(crate) callbacks: Option<Arc<dyn CallbackMatcher>>,
    pub(crate) max_callback_bytes: usize,
    pub(crate) max_result_bytes: usize,
    pub(crate) results: Option<super::results::Results>,
    pub(crate) unmatched_ttl: Duration,
    pub(crate) poll_every: Duration,
    pub(crate) max_polls: u32,
    pub(crate) delay_budget: Option<Duration>,
    pub(crate) deadline_lead_time: Duration,
    pub(crate) alert_thresholds: super::AlertThresholds,
    pub(crate) max_lease_expiries: u32,
    pub(crate) expected_traffic: Option<super::ExpectedTraffic>,
}

impl Partner {
    /// A partner named `name` served by `adapter`, with: exponential retries
    /// (1 s base, 5 min cap, full jitter), 10 attempts within 24 h, a 30 s
    /// attempt timeout, 8 concurrent attempts, no rate limit, a circuit that
    /// opens after 5 consecutive failures for 30 s, a 24 h result deadline,
    /// and dead letters holding back their ordering key.
    pub fn new(name: impl Into<String>, adapter: impl PartnerAdapter) -> Self {
        Self::from_arc(name, Arc::new(adapter))
    }

    /// Like [`Partner::new`] with an adapter already behind an `Arc`.
    pub fn from_arc(name: impl Into<String>, adapter: Arc<dyn PartnerAdapter>) -> Self {
        Partner {
            name: name.into(),
            adapter,
            retry: Arc::new(Exponential::default()),
            limits: RetryLimits::default(),
            attempt_timeout: Duration::from_secs(30),
            concurrency: 8,
            rate_limit: None,
            circuit: Some(CircuitSettings::default()),
            result_timeout: Duration::from_secs(24 * 3600),
            dead_letter_blocks_ordering: true,
            callbacks: None,
            max_callback_bytes: super::inbound::DEFAULT_CALLBACK_CAP,
            max_result_bytes: crate::model::result::DEFAULT_MAX_RESULT_BYTES,
            results: None,
            unmatched_ttl: Duration::from_secs(3600),
            poll_every: Duration::from_secs(300),
            max_polls: 3,
            delay_budget: None,
            deadline_lead_time: crate::store::DEFAULT_DEADLINE_LEAD_TIME,
            alert_thresholds: super::AlertThresholds::default(),
            max_lease_expiries: ReapLimits::DEFAULT_MAX_LEASE_EXPIRIES,
            expected_traffic: None,
        }
    }

    /// The retry policy.
    pub fn retry(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Maximum attempts and maximum age: retries always end. They hold for
    /// attempts whose worker never reported too: an expired lease counts as
    /// an attempt.
    pub fn limits(mut self, limits: RetryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// After this many leases in a row ended without the worker reporting
    /// (it crashed or hung on the submission), the reaper dead-letters the
    /// submission instead of returning it to the queue: "the worker crashed
    /// or hung on it N times", problem class
    /// [`crate::ops::alerts::ProblemClass::WorkerCrashed`]. Any result the
    /// worker reports starts the count again. Default 3
    /// ([`ReapLimits::DEFAULT_MAX_LEASE_EXPIRIES`]); 0 or above
    /// [`ReapLimits::MAX_LEASE_EXPIRIES`] is refused when the hub is built
    /// ([`crate::Error::InvalidInput`], field `max_lease_expiries`).
    ///
    /// Every instance reaps every partner's expired leases: give the
    /// partner the same setting on every instance. An instance that does
    /// not run the partner applies the default (and no attempt or age
    /// limit).
    pub fn max_lease_expiries(mut self, n: u32) -> Self {
        self.max_lease_expiries = n;
        self
    }

    /// How long one attempt may take before it counts as a timeout.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Most attempts in flight at once for this partner, across every
    /// instance sharing the store (and every process on one SQLite file):
    /// each claim counts the partner's live leases in its transaction. 0 is
    /// refused when the hub is built ([`crate::Error::InvalidInput`], field
    /// `concurrency`). Give the partner the same setting on every instance.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = limit;
        self
    }

    /// Most attempts started per second, across every instance sharing the
    /// store: see [`Partner::rate_limit`].
    pub fn rate_limit_per_second(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(RateSetting::Per(per_second, Duration::from_secs(1)));
        self
    }

    /// At most `count` attempts started per `per`, across every instance
    /// sharing the store: one budget on the partner's row, spent in the
    /// claim's transaction ([`crate::store::Rate`]: a steady pace that may
    /// run a period's worth ahead after a quiet spell). A dispatcher whose
    /// claim finds the budget spent waits until the next attempt conforms.
    /// A count of 0, a period of zero or above a day, or a pace faster than
    /// one attempt per microsecond is refused when the hub is built
    /// ([`crate::Error::InvalidInput`], field `rate_limit`).
    pub fn rate_limit(mut self, count: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateSetting::Per(count, per));
        self
    }

    /// Like [`Partner::rate_limit`] with a rate built and checked already,
    /// e.g. with a burst of its own ([`Rate::with_burst`]).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate_limit = Some(RateSetting::Checked(rate));
        self
    }

    /// Circuit breaker settings.
    pub fn circuit(mut self, settings: CircuitSettings) -> Self {
        self.circuit = Some(settings);
        self
    }

    /// Never open the circuit for this partner.
    pub fn without_circuit(mut self) -> Self {
        self.circuit = None;
        self
    }

    /// How long after acceptance the partner's result is due.
    pub fn result_timeout(mut self, timeout: Duration) -> Self {
        self.result_timeout = timeout;
        self
    }

    /// Whether a dead-lettered submission holds back later submissions with
    /// its ordering key (default `true`) or lets them pass.
    pub fn dead_letter_holds_ordering(mut self, holds: bool) -> Self {
        self.dead_letter_blocks_ordering = holds;
        self
    }

    /// How this partner's callbacks are verified and read. Without a
    /// matcher, callbacks for this partner are refused (401, as for a bad
    /// signature).
    pub fn callbacks(mut self, matcher: impl CallbackMatcher + 'static) -> Self {
        self.callbacks = Some(Arc::new(matcher));
        self
    }

    /// Largest callback body accepted (default 1 MiB); above it the callback's
    /// metadata is stored and the partner is answered 413.
    pub fn max_callback_bytes(mut self, bytes: usize) -> Self {
        self.max_callback_bytes = bytes;
        self
    }

    /// Deliver this partner's results to `handler` (instead of the one given
    /// to [`crate::engine::LiaisonBuilder::results`]): see
    /// [`super::ResultHandler`].
    pub fn results(mut self, handler: impl super::ResultHandler) -> Self {
        self.results = Some(super::results::Results::Handler(Arc::new(handler)));
        self
    }

    /// Write this partner's results into the host's tables on `store`'s
    /// SQLite file, in the transaction that acknowledges each delivery:
    /// exactly once into the host's database. See
    /// [`crate::store::SqliteResultHandler`]. `store` must be the store the
    /// hub runs on.
    #[cfg(feature = "sqlite")]
    pub fn results_in_sqlite(
        mut self,
        store: &crate::store::SqliteStore,
        handler: impl crate::store::SqliteResultHandler,
    ) -> Self {
        self.results = Some(super::results::Results::Sqlite(
            store.clone(),
            Arc::new(handler),
        ));
        self
    }

    /// Write this partner's results into the host's tables on `store`'s
    /// PostgreSQL database, in the transaction that acknowledges each
    /// delivery: exactly once into the host's database. See
    /// [`crate::store::PostgresResultHandler`]. `store` must be the store
    /// the hub runs on.
    #[cfg(feature = "postgres")]
    pub fn results_in_postgres(
        mut self,
        store: &crate::store::PostgresStore,
        handler: impl crate::store::PostgresResultHandler,
    ) -> Self {
        self.results = Some(super::results::Results::Postgres(
            store.clone(),
            Arc::new(handler),
        ));
        self
    }

    /// Largest partner result document kept with a submission, in bytes of
    /// compact JSON (default 64 KiB). A larger one is kept as
    /// [`crate::ResultDocument::TooLarge`] with a line on the timeline —
    /// never cut.
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes;
        self
    }

    /// How long a callback that matches no submission yet is kept for a late
    /// match (default 1 h) before it is quarantined as expired.
    pub fn unmatched_ttl(mut self, ttl: Duration) -> Self {
        self.unmatched_ttl = ttl;
        self
    }

    /// When a result is overdue and the adapter can poll: ask every `every`
    /// (default 5 min), at most `max_polls` times (default 3), before the
    /// submission is marked `Stuck`. Without polling support it is marked
    /// `Stuck` at the deadline.
    pub fn polling(mut self, every: Duration, max_polls: u32) -> Self {
        self.poll_every = every;
        self.max_polls = max_polls;
        self
    }

    /// How long a submission may stay unfinished before the business must
    /// know; health reports work past it as at risk.
    pub fn delay_budget(mut self, budget: Duration) -> Self {
        self.delay_budget = Some(budget);
        self
    }

    /// How much traffic this partner should see, and when: less inside the
    /// windows makes it at least `Degraded` and opens a "silent partner"
    /// alert. The engine records it in the store when it starts, so health
    /// computed anywhere (the CLI, other instances) checks it too.
    ///
    /// ```
    /// use chrono::Weekday::{Fri, Mon};
    /// use liaison::engine::{ExpectedTraffic, Partner};
    /// # use liaison::{AttemptContext, PartnerAdapter, PartnerError, Submission, SubmitOutcome};
    /// use std::time::Duration;
    /// # #[derive(Debug)] struct Clearinghouse;
    /// # #[async_trait::async_trait]
    /// # impl PartnerAdapter for Clearinghouse {
    /// #     async fn submit(&self, _: &AttemptContext, _: &Submission) -> Result<SubmitOutcome, PartnerError> {
    /// #         Ok(SubmitOutcome::AwaitResult { external_ref: None })
    /// #     }
    /// # }
    ///
    /// let partner = Partner::new("clearinghouse", Clearinghouse).expect_traffic(
    ///     ExpectedTraffic::finished(1)
    ///         .per(Duration::from_secs(3600))
    ///         .weekdays(Mon..=Fri)
    ///         .hours(8, 18)
    ///         .time_zone("Europe/Berlin"),
    /// );
    /// # let _ = partner;
    /// ```
    pub fn expect_traffic(mut self, expected: super::ExpectedTraffic) -> Self {
        self.expected_traffic = Some(expected);
        self
    }

    /// How long before a submission's business deadline
    /// ([`crate::NewSubmission::business_deadline`]) open work counts as at
    /// risk of missing it: health reports it and "business deadline at
    /// risk" opens. Default 24 h.
    pub fn deadline_lead_time(mut self, lead: Duration) -> Self {
        self.deadline_lead_time = lead;
        self
    }

    /// When alerts open for this partner.
    pub fn alert_thresholds(mut self, thresholds: super::AlertThresholds) -> Self {
        self.alert_thresholds = thresholds;
        self
    }

    /// The partner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the reaper applies to this partner's expired leases.
    pub(crate) fn reap_limits(&self) -> Result<ReapLimits> {
        Ok(ReapLimits::new(self.max_lease_expiries)?.retry(self.limits))
    }

    pub(crate) fn check(&self) -> Result<PartnerLimits> {
        validate_partner(&self.name)?;
        self.reap_limits()?;
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        let Ok(concurrency) = u32::try_from(self.concurrency) else {
            return Err(Error::invalid(
                "concurrency",
                format!("must be at most {}", u32::MAX),
            ));
        };
        if self.attempt_timeout.is_zero() {
            return Err(Error::invalid("attempt_timeout", "must be above zero"));
        }
        if self.max_callback_bytes == 0 {
            return Err(Error::invalid("max_callback_bytes", "must be above zero"));
        }
        if self.max_result_bytes == 0 {
            return Err(Error::invalid("max_result_bytes", "must be above zero"));
        }
        if self.poll_every.is_zero() || self.unmatched_ttl.is_zero() {
            return Err(Error::invalid(
                "polling",
                "the poll interval and the unmatched window must be above zero",
            ));
        }
        if self.result_timeout.is_zero() {
            return Err(Error::invalid("result_timeout", "must be above zero"));
        }
        if let Some(expected) = &self.expected_traffic {
            expected.check()?;
        }
        let mut limits = PartnerLimits::none().concurrency(concurrency);
        match self.rate_limit {
            Some(RateSetting::Per(count, per)) => limits = limits.rate(Rate::new(count, per)?),
            Some(RateSetting::Checked(rate)) => limits = limits.rate(rate),
            None => {}
        }
        Ok(limits)
    }
}

/// A partner's rate limit as configured.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RateSetting {
    /// Attempts per period, checked when the hub is built.
    Per(u32, Duration),
    /// Checked already.
    Checked(Rate),
}
