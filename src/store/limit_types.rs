//! A partner's limits as a claim enforces them for every claimer at once:
//! [`PartnerLimits`], [`Rate`], and what a claim got, [`Claimed`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Lease;
use crate::error::{Error, Result};

/// A rate: at most `count` attempts started per `per`, as a steady pace
/// (one every `per / count`) that may run ahead by at most `burst`
/// attempts after a quiet spell. So any window of one period sees at most
/// `count + burst - 1` starts (a partner counting "20 per second" sees at
/// most 20 in any second with a burst of 1). The default burst is a
/// twentieth of the count (at least 1): strict pacing for small rates, and
/// for large ones claims that take several submissions at once.
///
/// The budget is shared by every claimer of the partner (every instance,
/// every process): it lives on the partner's row in the store and is spent
/// in the claim's transaction.
///
/// ```
/// use liaison::store::Rate;
/// use std::time::Duration;
///
/// let rate = Rate::new(20, Duration::from_secs(1))?;
/// assert_eq!(rate.interval(), Duration::from_millis(50));
/// assert_eq!(rate.burst(), 1);
/// assert_eq!(Rate::per_second(20)?, rate);
/// assert_eq!(Rate::per_second(1000)?.burst(), 50);
/// assert_eq!(rate.with_burst(5)?.burst(), 5);
///
/// // A rate of zero, or one faster than a microsecond apart, is refused.
/// assert!(Rate::per_second(0).unwrap_err().is_invalid_input());
/// assert!(Rate::new(2, Duration::from_micros(1)).is_err());
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    per: Duration,
    /// One attempt's share of the period, in microseconds (rounded up, so
    /// the pace is never faster than asked).
    interval_us: i64,
    burst: u32,
}

impl Rate {
    /// Most time a rate's period may span: a day.
    pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

    /// At most `count` attempts per `per`.
    ///
    /// Errors ([`Error::InvalidInput`], field `rate_limit`): a count of 0, a
    /// period of zero or above [`Rate::MAX_PERIOD`], or a pace the store
    /// cannot represent (attempts less than a microsecond apart).
    pub fn new(count: u32, per: Duration) -> Result<Rate> {
        if count == 0 {
            return Err(Error::invalid(
                "rate_limit",
                "must allow at least 1 attempt per period",
            ));
        }
        if per.is_zero() || per > Self::MAX_PERIOD {
            return Err(Error::invalid(
                "rate_limit",
                "the period must be above zero and at most a day",
            ));
        }
        // At most a day: fits an i64 of microseconds.
        let per_us = i64::try_from(per.as_micros()).unwrap_or(i64::MAX);
        let count_us = i64::from(count);
        if per_us < count_us {
            return Err(Error::invalid(
                "rate_limit",
                format!(
                    "{count} per {per:?} cannot be represented: attempts would be less than a microsecond apart"
                ),
            ));
        }
        let interval_us = (per_us + count_us - 1) / count_us;
        Ok(Rate {
            count,
            per,
            interval_us,
            burst: (count / 20).max(1),
        })
    }

    /// Let the pace run ahead by up to `burst` attempts after a quiet
    /// spell (1: strict pacing).
    ///
    /// Errors ([`Error::InvalidInput`], field `rate_limit`): a burst of 0
    /// or above the count.
    pub fn with_burst(mut self, burst: u32) -> Result<Rate> {
        if burst == 0 || burst > self.count {
            return Err(Error::invalid(
                "rate_limit",
                format!("the burst must be between 1 and the count ({})", self.count),
            ));
        }
        self.burst = burst;
        Ok(self)
    }

    /// At most `count` attempts per second.
    pub fn per_second(count: u32) -> Result<Rate> {
        Rate::new(count, Duration::from_secs(1))
    }

    /// Attempts per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.per
    }

    /// The steady pace: the time between two attempts.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us.unsigned_abs())
    }

    /// The steady pace in microseconds (at least 1).
    pub(crate) fn interval_us(&self) -> i64 {
        self.interval_us
    }

    /// How many attempts may start at once after a quiet spell.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

/// The limits a claim enforces for one partner across every claimer of the
/// store: no more than `concurrency` of its submissions in flight at once
/// (live leases, counted in the claim's transaction), no faster than
/// `rate`. The engine sets them from [`crate::engine::Partner`]'s
/// settings; a claim without them ([`PartnerLimits::none`], the default of
/// [`super::ClaimRequest::new`]) takes what is due.
///
/// Every claimer applies the limits its own request carries: give the
/// partner the same settings on every instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartnerLimits {
    /// Most submissions of the partner in flight at once.
    pub concurrency: Option<u32>,
    /// Most attempts started per period.
    pub rate: Option<Rate>,
}

impl PartnerLimits {
    /// No limit.
    pub fn none() -> Self {
        PartnerLimits::default()
    }

    /// At most `limit` in flight at once (0 is refused by the engine's
    /// configuration; a claim with 0 gets nothing).
    pub fn concurrency(mut self, limit: u32) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// No faster than `rate`.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Whether a claim has anything to check.
    pub(crate) fn is_none(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

/// What a claim took, and why it took less than asked, if a limit was the
/// reason.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Claimed {
    /// The submissions now in flight under the claimer's leases.
    pub leases: Vec<Lease>,
    /// Set when the partner's limits granted fewer than asked.
    pub limited: Option<Limited>,
}

/// Which of a partner's limits held a claim back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limited {
    /// The partner has `in_flight` submissions in flight, against a limit
    /// of `limit`: try again when one of them finishes.
    Concurrency {
        /// Live leases of the partner when the claim was decided.
        in_flight: u32,
        /// The concurrency limit applied.
        limit: u32,
    },
    /// Slots are free, but other claimers wait for the partner's slots
    /// and this claimer already holds its fair share of the limit (only
    /// for a claimer that names itself,
    /// [`super::ClaimRequest::claimer`]): try again shortly, its place
    /// among the waiters is kept.
    FairShare {
        /// The partner's slots this claimer holds, as it said.
        holding: u32,
        /// Its share of the limit while the others wait.
        share: u32,
        /// How many other claimers wait.
        waiting: u32,
    },
    /// The rate's budget is spent: the next attempt may start at
    /// `retry_at` (the store's clock, [`super::OutboxStore::now`]).
    Rate {
        /// When the budget allows the next attempt.
        retry_at: DateTime<Utc>,
    },
}
