//! Retry policies: when to try a failed submission again.
//!
//! A policy is a pure function of (attempt number, error), so a schedule
//! survives restarts: nothing but the stored attempt count is needed to
//! continue it. Whatever the policy says, the engine also enforces each
//! partner's [`RetryLimits`] (a maximum attempt count and a maximum age), so
//! retries always end, and a permanent error dead-letters at once.

use std::fmt;
#[cfg(feature = "backoff")]
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};
use crate::partner::PartnerError;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryDecision {
    /// Try again after this long.
    RetryAfter(Duration),
    /// Stop: the submission is dead-lettered.
    GiveUp,
}

/// Decides whether and when to retry. `attempt` is the number of the attempt
/// that just failed (1 for the first).
///
/// ```
/// use liaison::retry::{Exponential, RetryDecision, RetryPolicy};
/// use liaison::PartnerError;
/// use std::time::Duration;
///
/// let policy = Exponential::new(Duration::from_millis(100), Duration::from_secs(10))?;
/// match policy.decide(3, &PartnerError::transient("503")) {
///     RetryDecision::RetryAfter(d) => assert!(d <= Duration::from_millis(400)),
///     other => unreachable!("exponential never gives up by itself: {other:?}"),
/// }
/// # Ok::<(), liaison::Error>(())
/// ```
pub trait RetryPolicy: Send + Sync + fmt::Debug {
    /// The decision after attempt number `attempt` failed with `error`.
    fn decide(&self, attempt: u32, error: &PartnerError) -> RetryDecision;
}

/// Exponential backoff with full jitter: a uniformly random delay between
/// zero and `min(cap, base * 2^(attempt-1))`. The recommended default
/// (base 1 s, cap 5 min): jitter spreads a burst of retries after an outage
/// instead of sending them all back at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exponential {
    base: Duration,
    cap: Duration,
}

impl Exponential {
    /// Checked: `base` must be above zero and `cap` at least `base`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self> {
        if base.is_zero() {
            return Err(Error::invalid("retry base", "must be above zero"));
        }
        if cap < base {
            return Err(Error::invalid(
                "retry cap",
                format!("{cap:?} is below the base delay {base:?}"),
            ));
        }
        Ok(Exponential { base, cap })
    }

    /// The upper bound of the delay after attempt `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let ceiling = self
            .base
            .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
            .unwrap_or(self.cap);
        ceiling.min(self.cap)
    }
}

impl Default for Exponential {
    fn default() -> Self {
        Exponential {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy for Exponential {
    fn decide(&self, attempt: u32, _error: &PartnerError) -> RetryDecision {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = rand::rng().random_range(0..=nanos);
        RetryDecision::RetryAfter(Duration::from_nanos(jittered))
    }
}

/// The same delay after every failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    delay: Duration,
}

impl Fixed {
    /// Checked: the delay must be above zero (a zero delay would hammer a
    /// partner that is down).
    pub fn new(delay: Duration) -> Result<Self> {
        if delay.is_zero() {
            return Err(Error::invalid("retry delay", "must be above zero"));
        }
        Ok(Fixed { delay })
    }
}

impl RetryPolicy for Fixed {
    fn decide(&self, _attempt: u32, _error: &PartnerError) -> RetryDecision {
        RetryDecision::RetryAfter(self.delay)
    }
}

/// Never retry: the first failure dead-letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoRetry;

impl RetryPolicy for NoRetry {
    fn decide(&self, _attempt: u32, _error: &PartnerError) -> RetryDecision {
        RetryDecision::GiveUp
    }
}

/// Any [`backoff::backoff::Backoff`] as a policy (feature `backoff`, off by
/// default: the `backoff` crate is unmaintained, RUSTSEC-2025-0012). A `Backoff` is stateful, so
/// the adapter builds a fresh one for each decision and steps it `attempt`
/// times; the schedule therefore depends only on the attempt number, as a
/// policy must. `None` from the backoff means give up.
///
/// ```
/// use liaison::retry::{FromBackoff, RetryDecision, RetryPolicy};
/// use liaison::PartnerError;
/// use backoff::ExponentialBackoffBuilder;
/// use std::time::Duration;
///
/// let policy = FromBackoff::new(|| {
///     ExponentialBackoffBuilder::new()
///         .with_initial_interval(Duration::from_millis(50))
///         .with_randomization_factor(0.0)
///         .with_max_elapsed_time(None)
///         .build()
/// });
/// assert_eq!(
///     policy.decide(2, &PartnerError::transient("reset")),
///     RetryDecision::RetryAfter(Duration::from_millis(75)),
/// );
/// ```
#[cfg(feature = "backoff")]
#[cfg_attr(docsrs, doc(cfg(feature = "backoff")))]
pub struct FromBackoff<B> {
    make: Arc<dyn Fn() -> B + Send + Sync>,
}

#[cfg(feature = "backoff")]
impl<B> FromBackoff<B>
where
    B: backoff::backoff::Backoff,
{
    /// Wrap a factory of fresh backoffs.
    pub fn new(make: impl Fn() -> B + Send + Sync + 'static) -> Self {
        FromBackoff {
            make: Arc::new(make),
        }
    }
}

#[cfg(feature = "backoff")]
impl<B> fmt::Debug for FromBackoff<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromBackoff")
            .field("backoff", &std::any::type_name::<B>())
            .finish()
    }
}

#[cfg(feature = "backoff")]
impl<B> RetryPolicy for FromBackoff<B>
where
    B: backoff::backoff::Backoff,
{
    fn decide(&self, attempt: u32, _error: &PartnerError) -> RetryDecision {
        let mut backoff = (self.make)();
        let mut delay = None;
        // Cap the stepping: a policy asked about attempt 10,000 should not spin.
        for _ in 0..attempt.clamp(1, 10_000) {
            delay = backoff.next_backoff();
            if delay.is_none() {
                break;
            }
        }
        delay.map_or(RetryDecision::GiveUp, RetryDecision::RetryAfter)
    }
}

/// Bounds every partner has, whatever its policy: retries always end.
///
/// ```
/// use liaison::retry::RetryLimits;
/// use std::time::Duration;
///
/// let limits = RetryLimits::new(8, Duration::from_secs(6 * 3600))?;
/// assert_eq!(limits.max_attempts(), 8);
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryLimits {
    max_attempts: u32,
    max_age: Duration,
}

impl RetryLimits {
    /// Checked: at least one attempt, and a max age above zero.
    pub fn new(max_attempts: u32, max_age: Duration) -> Result<Self> {
        if max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        if max_age.is_zero() {
            return Err(Error::invalid("max_age", "must be above zero"));
        }
        Ok(RetryLimits {
            max_attempts,
            max_age,
        })
    }

    /// Most attempts one submission gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Past this age (since enqueue) no retry is scheduled.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }
}

impl Default for RetryLimits {
    /// 10 attempts within 24 hours.
    fn default() -> Self {
        RetryLimits {
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a submission is given up when its attempts are used up: the words
/// both the dispatcher (after a failed attempt) and the reaper (after an
/// expired lease) put first in a dead letter's reason.
pub(crate) const MAX_ATTEMPTS_REACHED: &str = "retries exhausted: max attempts reached";

/// Why a submission is given up when it is too old to try again.
pub(crate) const MAX_AGE_REACHED: &str = "retries exhausted: max age reached";

/// A dead letter's reason: why it was given up, then the last error.
pub(crate) fn dead_letter_reason(why: &str, error: &str) -> String {
    format!("{why}: {error}")
}

/// The full decision the engine makes after a failed attempt: permanent
/// errors give up, the limits are enforced, the policy is asked, and a
/// partner's `Retry-After` wins over the computed delay.
///
/// `age` is the submission's age now; the retry is given up when it would
/// become due after `max_age`.
pub(crate) fn decide(
    policy: &dyn RetryPolicy,
    limits: &RetryLimits,
    attempt: u32,
    age: Duration,
    error: &PartnerError,
) -> (RetryDecision, &'static str) {
    if !error.is_retryable() {
        return (RetryDecision::GiveUp, "the partner refused it for good");
    }
    if attempt >= limits.max_attempts {
        return (RetryDecision::GiveUp, MAX_ATTEMPTS_REACHED);
    }
    let delay = match (error.retry_after(), policy.decide(attempt, error)) {
        (Some(after), _) => after,
        (None, RetryDecision::RetryAfter(d)) => d,
        (None, RetryDecision::GiveUp) => {
            return (RetryDecision::GiveUp, "the retry policy gave up");
        }
    };
    if age.saturating_add(delay) > limits.max_age {
        return (RetryDecision::GiveUp, MAX_AGE_REACHED);
    }
    (RetryDecision::RetryAfter(delay), "retry scheduled")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient() -> PartnerError {
        PartnerError::transient("503")
    }

    #[test]
    fn constructors_refuse_nonsense() {
        assert!(Exponential::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Exponential::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(Fixed::new(Duration::ZERO).is_err());
        assert!(RetryLimits::new(0, Duration::from_secs(1)).is_err());
        assert!(RetryLimits::new(1, Duration::ZERO).is_err());
    }

    #[test]
    fn exponential_doubles_up_to_the_cap_with_jitter_inside() {
        let p = Exponential::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..200 {
            match p.decide(3, &transient()) {
                RetryDecision::RetryAfter(d) => {
                    assert!(d <= Duration::from_millis(400));
                    distinct.insert(d);
                }
                RetryDecision::GiveUp => panic!("gave up"),
            }
        }
        assert!(distinct.len() > 100, "full jitter spreads delays");
    }

    #[test]
    fn decide_enforces_limits_and_honours_retry_after() {
        let fixed = Fixed::new(Duration::from_secs(1)).unwrap();
        let limits = RetryLimits::new(3, Duration::from_secs(60)).unwrap();
        let young = Duration::from_secs(1);
        assert_eq!(
            decide(&fixed, &limits, 1, young, &transient()).0,
            RetryDecision::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&fixed, &limits, 3, young, &transient()).0,
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(
                &fixed,
                &limits,
                1,
                Duration::from_secs(59) + Duration::from_millis(1),
                &transient()
            )
            .0,
            RetryDecision::GiveUp
        );
        let limited = PartnerError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            status: Some(429),
        };
        assert_eq!(
            decide(&fixed, &limits, 1, young, &limited).0,
            RetryDecision::RetryAfter(Duration::from_secs(30))
        );
        // Retry-After wins even over a policy that would give up.
        assert_eq!(
            decide(&NoRetry, &limits, 1, young, &limited).0,
            RetryDecision::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(
            decide(&fixed, &limits, 1, young, &PartnerError::permanent("422")).0,
            RetryDecision::GiveUp
        );
        assert_eq!(
            decide(&NoRetry, &limits, 1, young, &transient()).0,
            RetryDecision::GiveUp
        );
    }

    #[cfg(feature = "backoff")]
    #[test]
    fn backoff_adapter_follows_the_crate_and_ends_when_it_does() {
        let policy = FromBackoff::new(|| {
            backoff::ExponentialBackoffBuilder::new()
                .with_initial_interval(Duration::from_millis(100))
                .with_multiplier(2.0)
                .with_randomization_factor(0.0)
                .with_max_elapsed_time(None)
                .build()
        });
        assert_eq!(
            policy.decide(1, &transient()),
            RetryDecision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(
            policy.decide(3, &transient()),
            RetryDecision::RetryAfter(Duration::from_millis(400))
        );
        let stop = FromBackoff::new(|| backoff::backoff::Stop {});
        assert_eq!(stop.decide(1, &transient()), RetryDecision::GiveUp);
        let _obj: Box<dyn RetryPolicy> = Box::new(stop);
    }
}
