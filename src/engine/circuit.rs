//! A per-partner circuit breaker: after repeated unavailability, stop
//! sending for a while, then let one probe through.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
pub use crate::model::circuit::CircuitState;

/// When the circuit opens and how long it stays open.
///
/// ```
/// use liaison::engine::CircuitSettings;
/// use std::time::Duration;
///
/// let settings = CircuitSettings::new(5, Duration::from_secs(30))?;
/// assert_eq!(settings.failure_threshold(), 5);
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    failure_threshold: u32,
    open_for: Duration,
}

impl CircuitSettings {
    /// Open after `failure_threshold` consecutive unavailability failures
    /// (transient errors, timeouts); stay open `open_for`, then half-open.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Result<Self> {
        if failure_threshold == 0 {
            return Err(Error::invalid("failure_threshold", "must be at least 1"));
        }
        if open_for.is_zero() {
            return Err(Error::invalid("open_for", "must be above zero"));
        }
        Ok(CircuitSettings {
            failure_threshold,
            open_for,
        })
    }

    /// Consecutive failures that open the circuit.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// How long the circuit stays open before a probe.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }
}

impl Default for CircuitSettings {
    /// Open after 5 consecutive failures, for 30 seconds.
    fn default() -> Self {
        CircuitSettings {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send as much as the limits allow.
    Normal,
    /// Send exactly one probe.
    Probe,
    /// Send nothing until this instant (or until the probe reports).
    WaitUntil(Instant),
}

/// How an attempt went, as far as availability is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The partner answered (success, or a refusal that shows it is up).
    Reachable,
    /// The partner was unavailable (transient error, timeout).
    Unavailable,
}

#[derive(Debug)]
pub(crate) struct Circuit {
    settings: Option<CircuitSettings>,
    state: CircuitState,
    consecutive_failures: u32,
    open_until: Instant,
    probe_in_flight: bool,
}

impl Circuit {
    pub(crate) fn new(settings: Option<CircuitSettings>) -> Self {
        Circuit {
            settings,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            open_until: Instant::now(),
            probe_in_flight: false,
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        self.state
    }

    /// Unavailability failures since the last reachable answer.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            CircuitState::Closed => Admit::Normal,
            CircuitState::Open if now < self.open_until => Admit::WaitUntil(self.open_until),
            CircuitState::Open | CircuitState::HalfOpen => {
                self.state = CircuitState::HalfOpen;
                if self.probe_in_flight {
                    // Re-check shortly; the probe's report wakes us sooner.
                    Admit::WaitUntil(saturating_after(now, Duration::from_millis(250)))
                } else {
                    self.probe_in_flight = true;
                    Admit::Probe
                }
            }
        }
    }

    /// The probe slot was not used (nothing was due).
    pub(crate) fn probe_unused(&mut self) {
        self.probe_in_flight = false;
    }

    /// Record an attempt's signal; returns the new state when it changed.
    pub(crate) fn record(&mut self, signal: Signal, now: Instant) -> Option<CircuitState> {
        // Counted even without a circuit: alerts use the count.
        self.consecutive_failures = match signal {
            Signal::Reachable => 0,
            Signal::Unavailable => self.consecutive_failures.saturating_add(1),
        };
        let settings = self.settings?;
        let before = self.state;
        match signal {
            Signal::Reachable => {
                self.probe_in_flight = false;
                self.state = CircuitState::Closed;
            }
            Signal::Unavailable => {
                let reopen = before == CircuitState::HalfOpen;
                if reopen || self.consecutive_failures >= settings.failure_threshold {
                    self.probe_in_flight = false;
                    self.state = CircuitState::Open;
                    self.open_until = saturating_after(now, settings.open_for);
                }
            }
        }
        (self.state != before).then_some(self.state)
    }
}

/// `now` plus `d`, or a far future instant (about 30 years ahead, as
/// `tokio::time::sleep` uses for "for ever") when that overflows.
pub(crate) fn saturating_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// How far "for ever" is for an [`Instant`].
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_half_opens_and_closes_on_success() {
        let settings = CircuitSettings::new(3, Duration::from_secs(10)).unwrap();
        let mut c = Circuit::new(Some(settings));
        let t0 = Instant::now();
        assert_eq!(c.admit(t0), Admit::Normal);
        assert_eq!(c.record(Signal::Unavailable, t0), None);
        assert_eq!(c.record(Signal::Unavailable, t0), None);
        assert_eq!(c.record(Signal::Unavailable, t0), Some(CircuitState::Open));
        assert_eq!(
            c.admit(t0 + Duration::from_secs(5)),
            Admit::WaitUntil(t0 + Duration::from_secs(10))
        );
        // After open_for: one probe, and only one.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(c.admit(t1), Admit::Probe);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(matches!(c.admit(t1), Admit::WaitUntil(_)));
        // The probe fails: open again for a full period.
        assert_eq!(c.record(Signal::Unavailable, t1), Some(CircuitState::Open));
        assert_eq!(
            c.admit(t1 + Duration::from_secs(9)),
            Admit::WaitUntil(t1 + Duration::from_secs(10))
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(c.admit(t2), Admit::Probe);
        assert_eq!(c.record(Signal::Reachable, t2), Some(CircuitState::Closed));
        assert_eq!(c.admit(t2), Admit::Normal);
    }

    #[test]
    fn success_resets_the_count_and_no_settings_means_never_open() {
        let mut c = Circuit::new(Some(
            CircuitSettings::new(2, Duration::from_secs(1)).unwrap(),
        ));
        let t = Instant::now();
        c.record(Signal::Unavailable, t);
        c.record(Signal::Reachable, t);
        c.record(Signal::Unavailable, t);
        assert_eq!(c.state(), CircuitState::Closed);
        let mut off = Circuit::new(None);
        for _ in 0..100 {
            off.record(Signal::Unavailable, t);
        }
        assert_eq!(off.admit(t), Admit::Normal);
        assert!(CircuitSettings::new(0, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_circuit_open_for_ever_waits_far_ahead_instead_of_panicking() {
        let settings = CircuitSettings::new(1, Duration::MAX).unwrap();
        let mut c = Circuit::new(Some(settings));
        let t0 = Instant::now();
        assert_eq!(c.record(Signal::Unavailable, t0), Some(CircuitState::Open));
        match c.admit(t0 + Duration::from_secs(3600)) {
            Admit::WaitUntil(until) => assert!(until > t0 + FAR_FUTURE / 2),
            other => panic!("expected a wait, got {other:?}"),
        }
    }
}
