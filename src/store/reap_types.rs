//! What the reaper is told about each partner's limits, and what it did.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::submission::{SubmissionId, SubmissionState};
use crate::retry::RetryLimits;

/// When work whose lease ended is given up instead of returned to the
/// queue, for one partner.
///
/// An expired lease counts as an attempt. The submission is dead-lettered
/// when it has now had `max_lease_expiries` leases in a row end without a
/// report (the worker crashed or hung on it), or — with retry limits — when
/// it used its partner's max attempts or is past its max age.
///
/// ```
/// use liaison::retry::RetryLimits;
/// use liaison::store::ReapLimits;
/// use std::time::Duration;
///
/// let limits = ReapLimits::new(5)?.retry(RetryLimits::new(8, Duration::from_secs(3600))?);
/// assert_eq!(limits.max_lease_expiries(), 5);
/// assert!(ReapLimits::new(0).is_err());
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapLimits {
    max_lease_expiries: u32,
    retry: Option<RetryLimits>,
}

impl ReapLimits {
    /// Consecutive expired leases after which a submission is dead-lettered,
    /// unless configured otherwise.
    pub const DEFAULT_MAX_LEASE_EXPIRIES: u32 = 3;

    /// The highest crash limit accepted: beyond it a submission that kills
    /// its worker would still come back for days.
    pub const MAX_LEASE_EXPIRIES: u32 = 100;

    /// Dead-letter after `max_lease_expiries` consecutive expired leases,
    /// without retry limits. Checked: from 1 to
    /// [`ReapLimits::MAX_LEASE_EXPIRIES`], otherwise
    /// [`crate::Error::InvalidInput`] naming `max_lease_expiries`.
    pub fn new(max_lease_expiries: u32) -> Result<Self> {
        if max_lease_expiries == 0 {
            return Err(Error::invalid(
                "max_lease_expiries",
                "must be at least 1 (the first crash would dead-letter at 1)",
            ));
        }
        if max_lease_expiries > Self::MAX_LEASE_EXPIRIES {
            return Err(Error::invalid(
                "max_lease_expiries",
                format!(
                    "{max_lease_expiries} is above {}: a submission that crashes its worker would come back for ever",
                    Self::MAX_LEASE_EXPIRIES
                ),
            ));
        }
        Ok(ReapLimits {
            max_lease_expiries,
            retry: None,
        })
    }

    /// Also enforce the partner's max attempts and max age.
    pub fn retry(mut self, limits: RetryLimits) -> Self {
        self.retry = Some(limits);
        self
    }

    /// Consecutive expired leases after which a submission is dead-lettered.
    pub fn max_lease_expiries(&self) -> u32 {
        self.max_lease_expiries
    }

    /// The partner's retry limits, if given.
    pub fn retry_limits(&self) -> Option<RetryLimits> {
        self.retry
    }
}

impl Default for ReapLimits {
    /// [`ReapLimits::DEFAULT_MAX_LEASE_EXPIRIES`], no retry limits.
    fn default() -> Self {
        ReapLimits {
            max_lease_expiries: Self::DEFAULT_MAX_LEASE_EXPIRIES,
            retry: None,
        }
    }
}

/// The limits [`super::OutboxStore::reap_expired_leases`] applies, per
/// partner, with a fallback for partners it is not told about (by default
/// the crash limit alone, [`ReapLimits::default`]). The engine builds it
/// from its registered partners ([`crate::engine::Partner::limits`],
/// [`crate::engine::Partner::max_lease_expiries`]).
///
/// ```
/// use liaison::retry::RetryLimits;
/// use liaison::store::{ReapLimits, ReapPolicy};
///
/// let policy = ReapPolicy::default()
///     .partner("lab", ReapLimits::new(5)?.retry(RetryLimits::default()));
/// assert_eq!(policy.limits_for("lab").max_lease_expiries(), 5);
/// assert_eq!(policy.limits_for("elsewhere"), ReapLimits::default());
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapPolicy {
    partners: BTreeMap<String, ReapLimits>,
    fallback: ReapLimits,
}

impl ReapPolicy {
    /// `partner`'s limits.
    pub fn partner(mut self, partner: impl Into<String>, limits: ReapLimits) -> Self {
        self.partners.insert(partner.into(), limits);
        self
    }

    /// The limits of partners not named (default: [`ReapLimits::default`]).
    pub fn fallback(mut self, limits: ReapLimits) -> Self {
        self.fallback = limits;
        self
    }

    /// The limits that apply to `partner`.
    pub fn limits_for(&self, partner: &str) -> ReapLimits {
        self.partners.get(partner).copied().unwrap_or(self.fallback)
    }
}

/// One submission whose lease had ended, as the reaper left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Reaped {
    /// The submission.
    pub id: SubmissionId,
    /// Its partner.
    pub partner: String,
    /// [`SubmissionState::Queued`] (returned to the queue, due at once) or
    /// [`SubmissionState::DeadLettered`] (given up: see its reason).
    pub state: SubmissionState,
}
