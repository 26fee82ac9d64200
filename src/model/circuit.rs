//! A partner's circuit breaker: its settings, and its state as every
//! instance shares it (health, metrics and operators see the same).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A circuit's state, as health and operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CircuitState {
    /// Sending normally.
    Closed,
    /// Sending nothing; waiting out `open_for`. Work stays queued.
    Open,
    /// One probe attempt is allowed; its result closes or re-opens the circuit.
    HalfOpen,
}

impl CircuitState {
    /// The stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl std::str::FromStr for CircuitState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "closed" => Ok(CircuitState::Closed),
            "open" => Ok(CircuitState::Open),
            "half_open" => Ok(CircuitState::HalfOpen),
            _ => Err(Error::corrupt("circuit_state", None)),
        }
    }
}

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
    /// `Duration::MAX` keeps it open for ever once it opened.
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

/// A partner's circuit as the store keeps it for every engine instance
/// (the `circuit_*` columns of `liaison_partners`): opened by whichever
/// instance saw the failures, honoured by all, probed by one at a time.
///
/// Read it with [`crate::store::OutboxStore::circuits`]; the engine changes
/// it with [`crate::store::OutboxStore::circuit_step`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SharedCircuit {
    /// The partner.
    pub partner: String,
    /// Its state.
    pub state: CircuitState,
    /// Unavailability failures (transient errors, timeouts) reported by any
    /// instance since the last reachable answer.
    pub consecutive_failures: u32,
    /// When it entered its state (`None` for a circuit never opened).
    pub since: Option<DateTime<Utc>>,
    /// `Open`: the end of the open period. `HalfOpen`: the end of the
    /// probe's lease (after it another instance may probe). Otherwise `None`.
    pub until: Option<DateTime<Utc>>,
    /// `HalfOpen`: the engine instance ([`crate::store::Instance::id`])
    /// holding the probe, if one does.
    pub probe_holder: Option<String>,
}

impl SharedCircuit {
    /// A closed circuit with no failures: what a partner without a stored
    /// circuit has.
    pub fn closed(partner: impl Into<String>) -> Self {
        SharedCircuit {
            partner: partner.into(),
            state: CircuitState::Closed,
            consecutive_failures: 0,
            since: None,
            until: None,
            probe_holder: None,
        }
    }
}
