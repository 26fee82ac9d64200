//! What engine instances share besides the work: each partner's circuit
//! ([`CircuitStep`] in, [`CircuitOutcome`] out) and roles only one instance
//! plays at a time ([`RoleLease`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::circuit::{CircuitSettings, SharedCircuit};

/// How an attempt went, as far as the partner's availability is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitSignal {
    /// The partner answered (success, or a refusal that shows it is up).
    Reachable,
    /// The partner was unavailable (transient error, timeout).
    Unavailable,
}

/// One change to a partner's shared circuit, decided in the store's
/// transaction on the circuit as it is (the rule is the same for every
/// store and instance).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircuitStep {
    /// May `instance` send now? A closed circuit says
    /// [`Admission::Send`]; an open one [`Admission::Wait`] until its
    /// period ends; past it, the first instance to ask takes the probe
    /// ([`Admission::Probe`], the circuit half-open) under a lease of
    /// `probe_lease`, and every other instance waits until that probe
    /// reports or its lease runs out.
    Admit {
        /// The asking engine instance ([`crate::store::Instance::id`]).
        instance: String,
        /// How long the probe is held for this instance: after it another
        /// instance may probe (a dead prober does not keep the circuit
        /// half-open for ever).
        probe_lease: Duration,
    },
    /// An attempt's signal: a reachable answer closes the circuit and
    /// clears the failure count; an unavailable one counts a failure and
    /// opens the circuit at the threshold of `settings`, or re-opens a
    /// half-open one. Without settings (a partner without a circuit) the
    /// failure is only counted (alerts use the count).
    Report {
        /// What the attempt showed.
        signal: CircuitSignal,
        /// The reporting instance's circuit settings for the partner.
        settings: Option<CircuitSettings>,
    },
    /// `instance` took the probe but had nothing to send: it gives the
    /// probe back, so any instance may probe at once.
    ReleaseProbe {
        /// The instance that holds the probe.
        instance: String,
    },
}

/// What a circuit lets an instance do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Send as much as the other limits allow.
    Send,
    /// Send exactly one probe (this instance holds the probe lease).
    Probe,
    /// Send nothing until `until` (the end of the open period, or of
    /// another instance's probe lease), or until the circuit changes.
    Wait {
        /// When to ask again at the latest.
        until: DateTime<Utc>,
    },
}

/// What a [`CircuitStep`] found and left.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitOutcome {
    /// The circuit as it is after the step.
    pub circuit: SharedCircuit,
    /// For [`CircuitStep::Admit`], what the asking instance may do.
    pub admission: Option<Admission>,
    /// `true` when the step changed the circuit's state.
    pub changed: bool,
}

/// A role that one engine instance at a time plays (such as evaluating
/// alerts), held under a lease: the holder renews it while it lives; once
/// the lease runs out (the holder died or hung) another instance takes it
/// over. A row of `liaison_roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RoleLease {
    /// The role, such as [`RoleLease::ALERT_EVALUATOR`].
    pub role: String,
    /// The instance holding it ([`crate::store::Instance::id`]).
    pub holder: String,
    /// When this holder took it (renewals keep the time).
    pub since: DateTime<Utc>,
    /// When the lease runs out unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl RoleLease {
    /// The role of evaluating alerts: one instance at a time, so that one
    /// problem opens one alert and sends one notification however many
    /// instances run.
    pub const ALERT_EVALUATOR: &'static str = "alert_evaluator";
}
