//! A per-partner circuit breaker shared by every engine instance on the
//! store: after repeated unavailability, stop sending for a while, then let
//! one probe through — one for all instances.
//!
//! The circuit lives in the store (the partner's row); its transitions are
//! `store::rules::circuit`. This is the engine's side: ask the store before
//! claiming, tell it how attempts went, and remember what it last said
//! (for [`crate::Liaison::circuit_state`] and to skip writes that would
//! change nothing).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::dispatcher::PartnerRuntime;
use crate::model::circuit::SharedCircuit;
pub use crate::model::circuit::{CircuitSettings, CircuitState};
use crate::store::{Admission, CircuitOutcome, CircuitSignal, CircuitStep};

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Send as much as the limits allow.
    Normal,
    /// Send exactly one probe.
    Probe,
    /// Send nothing until this instant (or until woken).
    WaitUntil(Instant),
}

/// What this instance last learnt of a partner's shared circuit.
#[derive(Debug)]
pub(crate) struct CircuitView {
    known: Mutex<SharedCircuit>,
}

impl CircuitView {
    pub(crate) fn new(partner: &str) -> Self {
        CircuitView {
            known: Mutex::new(SharedCircuit::closed(partner)),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, SharedCircuit> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state as last read or written by this instance.
    pub(crate) fn state(&self) -> CircuitState {
        self.known().state
    }

    fn learn(&self, circuit: SharedCircuit) {
        *self.known() = circuit;
    }
}

/// Ask the shared circuit whether this instance may send. A closed circuit
/// costs one read; only when a step would change something (taking the
/// probe) is a write transaction run, which decides again on the row it
/// locked. Waits are capped at the poll interval, so an instance notices a
/// circuit that another one closed (or a wake-up tells it sooner).
pub(crate) async fn admit(shared: &Shared, rt: &PartnerRuntime, instance: &str) -> Admit {
    if rt.config.circuit.is_none() {
        return Admit::Normal;
    }
    let partner = &rt.config.name;
    let step = CircuitStep::Admit {
        instance: instance.to_owned(),
        probe_lease: rt.lease_for(shared.settings.lease_margin),
    };
    let now = shared.now();
    let read = match shared.store.circuit(partner).await {
        Ok(circuit) => circuit,
        Err(error) => {
            // The claim that follows will fail the same way and wait.
            tracing::warn!(%partner, %error, "reading the shared circuit failed");
            return Admit::Normal;
        }
    };
    let preview = crate::store::rules::circuit::step(&read, &step, now);
    let admission = if preview.write.is_none() {
        rt.circuit.learn(read);
        preview.admission
    } else {
        match shared.store.circuit_step(partner, step, now).await {
            Ok(outcome) => {
                changed(partner, &outcome);
                let admission = outcome.admission;
                rt.circuit.learn(outcome.circuit);
                admission
            }
            Err(error) => {
                tracing::warn!(%partner, %error, "taking the circuit's probe failed");
                Some(Admission::Wait {
                    until: now + chrono::Duration::milliseconds(RETRY_MS),
                })
            }
        }
    };
    match admission {
        Some(Admission::Send) | None => Admit::Normal,
        Some(Admission::Probe) => Admit::Probe,
        Some(Admission::Wait { until }) => {
            let wait = (until - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(shared.settings.poll_interval);
            Admit::WaitUntil(Instant::now() + wait)
        }
    }
}

/// How long to wait after a failed attempt to take the probe.
const RETRY_MS: i64 = 250;

/// Tell the shared circuit how an attempt went. Unavailability is always
/// written (it counts toward opening, for every instance); a reachable
/// answer only when it changes something as far as this instance knows
/// (a failure count to clear, a circuit to close), so healthy traffic costs
/// no write.
pub(crate) async fn report(shared: &Shared, rt: &PartnerRuntime, signal: Signal) {
    let partner = &rt.config.name;
    let signal = match signal {
        Signal::Reachable => {
            let known = rt.circuit.known().clone();
            if known.state == CircuitState::Closed && known.consecutive_failures == 0 {
                return;
            }
            CircuitSignal::Reachable
        }
        Signal::Unavailable => CircuitSignal::Unavailable,
    };
    let step = CircuitStep::Report {
        signal,
        settings: rt.config.circuit,
    };
    match shared.store.circuit_step(partner, step, shared.now()).await {
        Ok(outcome) => {
            changed(partner, &outcome);
            rt.circuit.learn(outcome.circuit);
        }
        Err(error) => {
            tracing::warn!(%partner, %error, "recording the attempt in the shared circuit failed")
        }
    }
}

/// Give back a probe this instance took but did not use (nothing was due,
/// or the engine shut down first), so another instance may probe at once.
pub(crate) async fn release_probe(shared: &Shared, rt: &PartnerRuntime, instance: &str) {
    let partner = &rt.config.name;
    let step = CircuitStep::ReleaseProbe {
        instance: instance.to_owned(),
    };
    match shared.store.circuit_step(partner, step, shared.now()).await {
        Ok(outcome) => rt.circuit.learn(outcome.circuit),
        // Its lease runs out instead.
        Err(error) => tracing::warn!(%partner, %error, "giving the circuit's probe back failed"),
    }
}

fn changed(partner: &str, outcome: &CircuitOutcome) {
    if outcome.changed {
        tracing::warn!(
            %partner,
            circuit = outcome.circuit.state.as_str(),
            failures = outcome.circuit.consecutive_failures,
            "partner circuit changed state"
        );
    }
}

/// How an attempt went, as far as availability is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The partner answered (success, or a refusal that shows it is up).
    Reachable,
    /// The partner was unavailable (transient error, timeout).
    Unavailable,
}
