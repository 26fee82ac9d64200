//! A partner's circuit breaker, as health, metrics and operators see it.

use serde::{Deserialize, Serialize};

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
