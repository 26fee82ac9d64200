//! What the store reports for health: counts kept by the store, outcomes in
//! a time window, latency samples.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::money::{Currency, Money};
use crate::model::submission::SubmissionState;
use crate::model::traffic::ExpectedTraffic;

/// Most latency samples returned per partner and measure.
pub const MAX_LATENCY_SAMPLES: usize = 10_000;

/// Which statistics to gather.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsQuery {
    /// The end of the window.
    pub now: DateTime<Utc>,
    /// The window: outcomes and latencies in `[now - window, now)`, compared
    /// with the window before it.
    pub window: Duration,
    /// Only these partners; empty means every partner the store knows.
    pub partners: Vec<String>,
    /// Per partner, how long a submission may stay unfinished before the
    /// business must know.
    pub delay_budgets: BTreeMap<String, Duration>,
    /// Per partner, the traffic to count ([`PartnerStats::traffic`]).
    pub expected_traffic: BTreeMap<String, ExpectedTraffic>,
    /// Per partner, how long before its business deadline open work counts
    /// as at risk of missing it; others use
    /// [`DEFAULT_DEADLINE_LEAD_TIME`].
    pub deadline_lead_times: BTreeMap<String, Duration>,
}

/// How long before a business deadline open work counts as at risk of
/// missing it, unless the partner says otherwise: 24 h.
pub const DEFAULT_DEADLINE_LEAD_TIME: Duration = Duration::from_secs(24 * 3600);

impl StatsQuery {
    /// Statistics over the `window` ending now by this host's clock, for
    /// every partner the store knows, without delay budgets. A store shared
    /// by several hosts decides by its own clock ([`OutboxStore::now`]:
    /// the database server's on PostgreSQL): end the window there with
    /// [`StatsQuery::at`]`(store.now())`, as the engine does.
    ///
    /// [`OutboxStore::now`]: crate::store::OutboxStore::now
    ///
    /// ```
    /// use liaison::store::StatsQuery;
    /// use std::time::Duration;
    ///
    /// let query = StatsQuery::new(Duration::from_secs(3600))
    ///     .partner("bank")
    ///     .delay_budget("bank", Duration::from_secs(4 * 3600));
    /// assert_eq!(query.partners, vec!["bank".to_owned()]);
    /// ```
    pub fn new(window: Duration) -> Self {
        StatsQuery {
            now: crate::clock::now(),
            window,
            partners: Vec::new(),
            delay_budgets: BTreeMap::new(),
            expected_traffic: BTreeMap::new(),
            deadline_lead_times: BTreeMap::new(),
        }
    }

    /// `partner`'s business-deadline lead time (default
    /// [`DEFAULT_DEADLINE_LEAD_TIME`]).
    pub fn deadline_lead_time(mut self, partner: impl Into<String>, lead: Duration) -> Self {
        self.deadline_lead_times.insert(partner.into(), lead);
        self
    }

    /// The lead time in force for `partner`.
    pub(crate) fn lead_time_for(&self, partner: &str) -> Duration {
        self.deadline_lead_times
            .get(partner)
            .copied()
            .unwrap_or(DEFAULT_DEADLINE_LEAD_TIME)
    }

    /// End the window at `now` instead of the current time.
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// Also this partner (without any, every partner the store knows).
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partners.push(partner.into());
        self
    }

    /// Also these partners.
    pub fn partners<I, P>(mut self, partners: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.partners.extend(partners.into_iter().map(Into::into));
        self
    }

    /// `partner`'s delay budget.
    pub fn delay_budget(mut self, partner: impl Into<String>, budget: Duration) -> Self {
        self.delay_budgets.insert(partner.into(), budget);
        self
    }

    /// Count `partner`'s traffic as `expected` says.
    pub fn expected_traffic(
        mut self,
        partner: impl Into<String>,
        expected: ExpectedTraffic,
    ) -> Self {
        self.expected_traffic.insert(partner.into(), expected);
        self
    }
}

/// A count and its summed business value, per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// How many.
    pub count: u64,
    /// Their summed `business_value`, per currency (never added across).
    pub value: Money,
}

impl Totals {
    /// `count` submissions worth `minor` in `currency`.
    ///
    /// ```
    /// use liaison::Currency;
    /// use liaison::store::Totals;
    ///
    /// let eur = Currency::from_code("EUR").ok();
    /// let mut t = Totals::of(2, eur, 25_000);
    /// t.add(&Totals::of(1, None, 500));
    /// assert_eq!((t.count, t.value.get(eur), t.value.get(None)), (3, 25_000, 500));
    /// ```
    pub fn of(count: u64, currency: Option<Currency>, minor: i64) -> Self {
        Totals {
            count,
            value: Money::default().plus(currency, minor),
        }
    }

    /// Add `other`'s count and value.
    pub fn add(&mut self, other: &Totals) {
        self.count = self.count.saturating_add(other.count);
        self.value.add_all(&other.value);
    }
}

/// How long ago at-risk work was enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgeBand {
    /// Less than an hour.
    UnderHour,
    /// An hour to a day.
    UnderDay,
    /// A day to a week.
    UnderWeek,
    /// A week or more.
    Older,
}

impl AgeBand {
    /// Every band, youngest first.
    pub const ALL: [AgeBand; 4] = [
        AgeBand::UnderHour,
        AgeBand::UnderDay,
        AgeBand::UnderWeek,
        AgeBand::Older,
    ];

    /// In words: `< 1 h`, `< 1 d`, `< 7 d`, `older`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgeBand::UnderHour => "< 1 h",
            AgeBand::UnderDay => "< 1 d",
            AgeBand::UnderWeek => "< 7 d",
            AgeBand::Older => "older",
        }
    }

    /// The band's number in the stores' queries (0 youngest).
    pub(crate) fn from_index(i: i64) -> AgeBand {
        match i {
            0 => AgeBand::UnderHour,
            1 => AgeBand::UnderDay,
            2 => AgeBand::UnderWeek,
            _ => AgeBand::Older,
        }
    }
}

/// Value at risk: failed, dead-lettered and stuck submissions, and
/// unfinished ones past the partner's delay budget, with their value per
/// currency, split by kind and by age (since enqueue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Impact {
    /// All of them.
    pub total: Totals,
    /// By the submissions' `kind`.
    pub by_kind: BTreeMap<String, Totals>,
    /// By how long ago they were enqueued.
    pub by_age: BTreeMap<AgeBand, Totals>,
}

impl Impact {
    /// Count one group of at-risk rows (one store query row).
    pub(crate) fn add(&mut self, kind: String, age: AgeBand, totals: Totals) {
        self.total.add(&totals);
        self.by_kind.entry(kind).or_default().add(&totals);
        self.by_age.entry(age).or_default().add(&totals);
    }
}

/// Open work (not succeeded, cancelled or resolved by hand) with a
/// business deadline that is near or past.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadlineRisk {
    /// The lead time: work whose deadline is within it counts as at risk.
    pub lead_time_secs: u64,
    /// Deadline after now and within the lead time.
    pub at_risk: Totals,
    /// Deadline passed, work still open.
    pub missed: Totals,
    /// The nearest deadline of the open work counted here.
    pub nearest: Option<DateTime<Utc>>,
}

/// Submissions that reached a terminal state in a window, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Outcomes {
    /// Reached each terminal state.
    pub by_state: BTreeMap<SubmissionState, u64>,
}

impl Outcomes {
    /// How many reached `state`.
    pub fn get(&self, state: SubmissionState) -> u64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    /// All that ended in the window.
    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }
}

/// One partner's raw statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartnerStats {
    /// The partner.
    pub partner: String,
    /// Submissions in each state now, with their value.
    pub by_state: BTreeMap<SubmissionState, Totals>,
    /// Outcomes in the window.
    pub window: Outcomes,
    /// Outcomes in the window before.
    pub previous: Outcomes,
    /// Milliseconds from enqueue to acceptance, accepted in the window.
    pub enqueue_to_accepted_ms: Vec<i64>,
    /// Milliseconds from acceptance to the result, settled in the window.
    pub accepted_to_result_ms: Vec<i64>,
    /// When the oldest queued submission was enqueued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Unfinished submissions older than the partner's delay budget.
    pub past_delay_budget: Totals,
    /// Value at risk, per currency, by kind and by age.
    pub at_risk: Impact,
    /// Open work near or past its business deadline.
    pub deadlines: DeadlineRisk,
    /// Callbacks that arrived in the window, by disposition.
    pub callbacks: BTreeMap<crate::model::callback::Disposition, u64>,
    /// Dead-lettered submissions (not replayed, resolved or cancelled) that
    /// the reaper gave up because the worker crashed or hung on them
    /// ([`crate::store::ReapLimits`]).
    pub worker_crashed: u64,
    /// When its earliest unsent work became due: the earliest due time of
    /// its queued work, or the earliest end of a lease of work in flight
    /// (whatever its priority, and whether or not that time has come).
    pub oldest_due_at: Option<DateTime<Utc>>,
    /// The last beat of its engine instances pruned from the store (see
    /// [`super::OutboxStore::prune_instances`]).
    pub last_served_at: Option<DateTime<Utc>>,
    /// With [`StatsQuery::expected_traffic`] for it: what counted in
    /// `[now - period, now)` — submissions that ended `Succeeded` or
    /// `Failed`, or callbacks that did not fail verification — counted up
    /// to the expected least (a count below it is exact).
    pub traffic: Option<u64>,
    /// Callbacks in the quarantine now (whenever they arrived), by
    /// disposition: not reprocessed, not dismissed.
    pub quarantined: BTreeMap<crate::model::callback::Disposition, u64>,
}

/// An alert to open (or keep open) for a (partner, class).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewAlert {
    /// The partner.
    pub partner: String,
    /// The class of problem.
    pub class: crate::model::alert::ProblemClass,
    /// Its owner.
    pub owner: crate::model::alert::Owner,
    /// The condition, in words (updated while the alert stays open).
    pub details: String,
    /// Raised during an announced pause.
    pub expected: bool,
    /// Now.
    pub at: DateTime<Utc>,
}

impl NewAlert {
    /// An alert of `class` for `partner`, owned by `owner`, for the
    /// condition `details`, now by this host's clock, not expected. On a
    /// shared store, date it by the store's clock with
    /// [`NewAlert::at`]`(store.now())`, as the engine does.
    pub fn new(
        partner: impl Into<String>,
        class: crate::model::alert::ProblemClass,
        owner: crate::model::alert::Owner,
        details: impl Into<String>,
    ) -> Self {
        NewAlert {
            partner: partner.into(),
            class,
            owner,
            details: details.into(),
            expected: false,
            at: crate::clock::now(),
        }
    }

    /// Raised during an announced pause.
    pub fn expected(mut self, expected: bool) -> Self {
        self.expected = expected;
        self
    }

    /// Open it as of `at` instead of now.
    pub fn at(mut self, at: DateTime<Utc>) -> Self {
        self.at = at;
        self
    }
}

/// Which hours [`super::OutboxStore::hourly_counts`] counts one partner's
/// submissions in: the `hours` hours from `from` on, as of `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HourlyQuery {
    /// The partner.
    pub partner: String,
    /// The start of the first hour.
    pub from: DateTime<Utc>,
    /// How many hours (at most 10,000).
    pub hours: u32,
    /// The time of the count: a submission created at or after it is in
    /// hour `hours` (not yet there), and one ended at or after it is
    /// counted as not ended by now ([`HourlyCount::ended_by_now`]).
    pub now: DateTime<Utc>,
}

impl HourlyQuery {
    /// `partner`'s submissions over the `hours` hours from `from`, as of `now`.
    ///
    /// ```
    /// use liaison::store::HourlyQuery;
    ///
    /// let now = chrono::Utc::now();
    /// let day = HourlyQuery::new("bank", now - chrono::Duration::hours(24), 24, now);
    /// assert_eq!(day.hours, 24);
    /// ```
    pub fn new(
        partner: impl Into<String>,
        from: DateTime<Utc>,
        hours: u32,
        now: DateTime<Utc>,
    ) -> Self {
        HourlyQuery {
            partner: partner.into(),
            from,
            hours: hours.min(10_000),
            now,
        }
    }
}

/// How many of a partner's submissions share a state, the hour they were
/// created in and the hour they ended in: one group of
/// [`super::OutboxStore::hourly_counts`]. Hours count from
/// [`HourlyQuery::from`], the first being 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct HourlyCount {
    /// The hour it was created in: `-1` before `from`, `hours` at or after
    /// `now` and after the last hour.
    pub created: i64,
    /// The hour it ended in (`terminal_at`): `None` while unfinished, `-1`
    /// before `from`, at most `hours`.
    pub ended: Option<i64>,
    /// It ended before `now`.
    pub ended_by_now: bool,
    /// Its state now.
    pub state: SubmissionState,
    /// How many.
    pub count: u64,
}
