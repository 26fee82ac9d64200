//! The shared circuit breaker's transitions, one rule for every store and
//! instance: which failures count, when the circuit opens, who may probe
//! and for how long, what a probe's answer does.
//!
//! ```text
//!   Closed --failures reach the threshold--> Open (until now + open_for)
//!   Open --period over, an instance asks--> HalfOpen (probe held by it until now + probe lease)
//!   HalfOpen --probe lease ran out, another asks--> HalfOpen (probe held by that one)
//!   HalfOpen --unavailable--> Open (a new period)
//!   any --reachable answer--> Closed (failures cleared)
//! ```
//!
//! Failures are counted in the shared row, so an instance that saw one
//! failure and another that saw four open the circuit together at five.
//! A reachable answer from any instance clears the count.

use chrono::{DateTime, Utc};

use crate::model::circuit::{CircuitState, SharedCircuit};
use crate::store::common::saturating_after;
use crate::store::{Admission, CircuitSignal, CircuitStep};

/// What a step decided: the row to write (nothing when it stays as it is)
/// and, for an admission, what the instance may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) write: Option<SharedCircuit>,
    pub(crate) admission: Option<Admission>,
}

impl Decision {
    fn keep(admission: Option<Admission>) -> Self {
        Decision {
            write: None,
            admission,
        }
    }
}

/// Decide `step` on `row` (the circuit as read, locked where the store
/// locks) at `now`.
pub(crate) fn step(row: &SharedCircuit, step: &CircuitStep, now: DateTime<Utc>) -> Decision {
    match step {
        CircuitStep::Admit {
            instance,
            probe_lease,
        } => admit(row, instance, *probe_lease, now),
        CircuitStep::Report { signal, settings } => {
            let write = match signal {
                CircuitSignal::Reachable => reachable(row, now),
                CircuitSignal::Unavailable => unavailable(row, settings.as_ref(), now),
            };
            Decision {
                write,
                admission: None,
            }
        }
        CircuitStep::ReleaseProbe { instance } => Decision {
            write: release(row, instance, now),
            admission: None,
        },
    }
}

/// Whether an instance may send; past the open period (or a probe lease
/// that ran out), the asking instance takes the probe.
fn admit(
    row: &SharedCircuit,
    instance: &str,
    probe_lease: std::time::Duration,
    now: DateTime<Utc>,
) -> Decision {
    let live_until = row.until.filter(|until| *until > now);
    match row.state {
        CircuitState::Closed => Decision::keep(Some(Admission::Send)),
        // Still within its period: nobody sends.
        CircuitState::Open if live_until.is_some() => {
            Decision::keep(live_until.map(|until| Admission::Wait { until }))
        }
        // A probe is out (this instance's own included): wait for its
        // answer or for its lease to run out.
        CircuitState::HalfOpen if row.probe_holder.is_some() && live_until.is_some() => {
            Decision::keep(live_until.map(|until| Admission::Wait { until }))
        }
        // The period is over, or the probe was given back or abandoned.
        CircuitState::Open | CircuitState::HalfOpen => Decision {
            write: Some(SharedCircuit {
                state: CircuitState::HalfOpen,
                since: if row.state == CircuitState::HalfOpen {
                    row.since
                } else {
                    Some(now)
                },
                until: Some(saturating_after(now, probe_lease)),
                probe_holder: Some(instance.to_owned()),
                ..row.clone()
            }),
            admission: Some(Admission::Probe),
        },
    }
}

/// The partner answered: closed, count cleared. Nothing to write when it
/// is closed with no failures already (the common case costs no write).
fn reachable(row: &SharedCircuit, now: DateTime<Utc>) -> Option<SharedCircuit> {
    if row.state == CircuitState::Closed && row.consecutive_failures == 0 {
        return None;
    }
    Some(SharedCircuit {
        state: CircuitState::Closed,
        consecutive_failures: 0,
        since: if row.state == CircuitState::Closed {
            row.since
        } else {
            Some(now)
        },
        until: None,
        probe_holder: None,
        ..row.clone()
    })
}

/// The partner was unavailable: one more failure; open at the threshold;
/// a half-open circuit (its probe failed) opens for a new period. An open
/// circuit keeps its period (a late failure of an attempt sent before it
/// opened does not extend it).
fn unavailable(
    row: &SharedCircuit,
    settings: Option<&crate::model::circuit::CircuitSettings>,
    now: DateTime<Utc>,
) -> Option<SharedCircuit> {
    let failures = row.consecutive_failures.saturating_add(1);
    let counted = SharedCircuit {
        consecutive_failures: failures,
        ..row.clone()
    };
    let Some(settings) = settings else {
        return Some(counted);
    };
    let opens = match row.state {
        CircuitState::Closed => failures >= settings.failure_threshold(),
        CircuitState::HalfOpen => true,
        CircuitState::Open => false,
    };
    if !opens {
        return Some(counted);
    }
    Some(SharedCircuit {
        state: CircuitState::Open,
        since: Some(now),
        until: Some(saturating_after(now, settings.open_for())),
        probe_holder: None,
        ..counted
    })
}

/// The prober had nothing to send: the probe is free at once. Only its
/// holder can give it back.
fn release(row: &SharedCircuit, instance: &str, now: DateTime<Utc>) -> Option<SharedCircuit> {
    let holds =
        row.state == CircuitState::HalfOpen && row.probe_holder.as_deref() == Some(instance);
    holds.then(|| SharedCircuit {
        probe_holder: None,
        until: Some(now),
        ..row.clone()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::circuit::CircuitSettings;
    use crate::store::rules::fixtures::t;

    const LEASE: Duration = Duration::from_secs(10);

    fn settings(threshold: u32, open_for: Duration) -> Option<CircuitSettings> {
        Some(CircuitSettings::new(threshold, open_for).unwrap())
    }

    fn admit_step(instance: &str) -> CircuitStep {
        CircuitStep::Admit {
            instance: instance.into(),
            probe_lease: LEASE,
        }
    }

    fn report(signal: CircuitSignal, settings: Option<CircuitSettings>) -> CircuitStep {
        CircuitStep::Report { signal, settings }
    }

    /// Apply a step as a store would: write what was decided.
    fn apply(row: &mut SharedCircuit, s: &CircuitStep, now: DateTime<Utc>) -> Option<Admission> {
        let decision = step(row, s, now);
        if let Some(write) = decision.write {
            *row = write;
        }
        decision.admission
    }

    #[test]
    fn failures_of_all_instances_count_together_and_open_at_the_threshold() {
        let s = settings(5, Duration::from_secs(30));
        let mut row = SharedCircuit::closed("lab");
        // Two instances report in turn: the count is one count.
        for n in 1..5 {
            apply(&mut row, &report(CircuitSignal::Unavailable, s), t(n));
            assert_eq!(row.state, CircuitState::Closed);
            assert_eq!(row.consecutive_failures, n as u32);
        }
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(5));
        assert_eq!(row.state, CircuitState::Open);
        assert_eq!(row.since, Some(t(5)));
        assert_eq!(row.until, Some(t(30_005)));
        // Every instance is told to wait out the period.
        for who in ["a", "b", "c"] {
            assert_eq!(
                apply(&mut row, &admit_step(who), t(10_000)),
                Some(Admission::Wait { until: t(30_005) })
            );
        }
        // A late failure (sent before it opened) counts but keeps the period.
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(20_000));
        assert_eq!(row.consecutive_failures, 6);
        assert_eq!(row.until, Some(t(30_005)));
    }

    #[test]
    fn a_reachable_answer_clears_the_count_and_costs_nothing_when_all_is_well() {
        let s = settings(3, Duration::from_secs(1));
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(1));
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(2));
        apply(&mut row, &report(CircuitSignal::Reachable, s), t(3));
        assert_eq!(row.consecutive_failures, 0);
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(4));
        assert_eq!(row.state, CircuitState::Closed, "not consecutive");
        // Closed with no failures: a success writes nothing.
        let clean = SharedCircuit::closed("lab");
        assert_eq!(
            step(&clean, &report(CircuitSignal::Reachable, s), t(5)),
            Decision::keep(None)
        );
        // A closed circuit admits without a write.
        assert_eq!(
            step(&clean, &admit_step("a"), t(5)),
            Decision::keep(Some(Admission::Send))
        );
    }

    #[test]
    fn without_settings_failures_are_only_counted() {
        let mut row = SharedCircuit::closed("lab");
        for n in 0..100 {
            apply(&mut row, &report(CircuitSignal::Unavailable, None), t(n));
        }
        assert_eq!(row.state, CircuitState::Closed);
        assert_eq!(row.consecutive_failures, 100);
        assert_eq!(
            apply(&mut row, &admit_step("a"), t(100)),
            Some(Admission::Send)
        );
    }

    #[test]
    fn one_probe_at_a_time_and_its_answer_decides_for_all() {
        let s = settings(1, Duration::from_secs(10));
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(0));
        assert_eq!(row.state, CircuitState::Open);
        // The period ends: the first to ask probes, the others wait for
        // the probe (at most its lease).
        assert_eq!(
            apply(&mut row, &admit_step("a"), t(10_000)),
            Some(Admission::Probe)
        );
        assert_eq!(row.state, CircuitState::HalfOpen);
        assert_eq!(row.probe_holder.as_deref(), Some("a"));
        assert_eq!(row.since, Some(t(10_000)));
        for who in ["b", "c", "a"] {
            assert_eq!(
                apply(&mut row, &admit_step(who), t(10_001)),
                Some(Admission::Wait { until: t(20_000) }),
                "{who}"
            );
        }
        // The probe fails: open again, a full period from now.
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(12_000));
        assert_eq!(row.state, CircuitState::Open);
        assert_eq!(row.until, Some(t(22_000)));
        assert_eq!(row.probe_holder, None);
        // Next period: "b" probes, succeeds, and it is closed for everyone.
        assert_eq!(
            apply(&mut row, &admit_step("b"), t(22_000)),
            Some(Admission::Probe)
        );
        apply(&mut row, &report(CircuitSignal::Reachable, s), t(22_050));
        assert_eq!(row.state, CircuitState::Closed);
        assert_eq!(row.consecutive_failures, 0);
        assert_eq!((row.until, row.probe_holder.clone()), (None, None));
        for who in ["a", "b", "c"] {
            assert_eq!(
                apply(&mut row, &admit_step(who), t(22_051)),
                Some(Admission::Send)
            );
        }
    }

    #[test]
    fn a_dead_probers_lease_runs_out_and_another_probes() {
        let s = settings(1, Duration::from_secs(10));
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(0));
        assert_eq!(
            apply(&mut row, &admit_step("a"), t(10_000)),
            Some(Admission::Probe)
        );
        // "a" dies. Until its lease ends nobody else probes...
        assert!(matches!(
            apply(&mut row, &admit_step("b"), t(19_999)),
            Some(Admission::Wait { .. })
        ));
        // ...then the next to ask does.
        assert_eq!(
            apply(&mut row, &admit_step("b"), t(20_000)),
            Some(Admission::Probe)
        );
        assert_eq!(row.probe_holder.as_deref(), Some("b"));
        assert_eq!(row.until, Some(t(30_000)));
        assert_eq!(
            row.since,
            Some(t(10_000)),
            "half-open since the first probe"
        );
        // The late answer of the dead prober's attempt cannot take the
        // probe back; giving it back is for its holder only.
        assert_eq!(
            step(
                &row,
                &CircuitStep::ReleaseProbe {
                    instance: "a".into()
                },
                t(20_001)
            )
            .write,
            None
        );
    }

    #[test]
    fn a_probe_with_nothing_to_send_is_given_back_for_anyone() {
        let s = settings(1, Duration::from_secs(10));
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(0));
        apply(&mut row, &admit_step("a"), t(10_000));
        apply(
            &mut row,
            &CircuitStep::ReleaseProbe {
                instance: "a".into(),
            },
            t(10_005),
        );
        assert_eq!(row.state, CircuitState::HalfOpen);
        assert_eq!(row.probe_holder, None);
        assert_eq!(
            apply(&mut row, &admit_step("c"), t(10_006)),
            Some(Admission::Probe)
        );
    }

    #[test]
    fn racing_admissions_give_one_probe() {
        // Both read the same open row; the store serialises their steps, so
        // the second decides on the first one's write.
        let s = settings(1, Duration::from_secs(10));
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(0));
        let seen_by_both = row.clone();
        assert_eq!(
            step(&seen_by_both, &admit_step("a"), t(10_000)).admission,
            Some(Admission::Probe)
        );
        assert_eq!(
            step(&seen_by_both, &admit_step("b"), t(10_000)).admission,
            Some(Admission::Probe)
        );
        let probes = ["a", "b"]
            .iter()
            .filter(|who| apply(&mut row, &admit_step(who), t(10_000)) == Some(Admission::Probe))
            .count();
        assert_eq!(probes, 1);
        // A failure and a success racing on a half-open circuit: whichever
        // the store applies last wins, and both are a consistent state.
        let s = settings(2, Duration::from_secs(10));
        let half_open = row.clone();
        let mut failed_first = half_open.clone();
        apply(
            &mut failed_first,
            &report(CircuitSignal::Unavailable, s),
            t(10_001),
        );
        apply(
            &mut failed_first,
            &report(CircuitSignal::Reachable, s),
            t(10_002),
        );
        assert_eq!(failed_first.state, CircuitState::Closed);
        let mut succeeded_first = half_open;
        apply(
            &mut succeeded_first,
            &report(CircuitSignal::Reachable, s),
            t(10_001),
        );
        apply(
            &mut succeeded_first,
            &report(CircuitSignal::Unavailable, s),
            t(10_002),
        );
        assert_eq!(succeeded_first.state, CircuitState::Closed);
        assert_eq!(succeeded_first.consecutive_failures, 1);
    }

    #[test]
    fn a_circuit_open_for_ever_stays_open() {
        let s = settings(1, Duration::MAX);
        let mut row = SharedCircuit::closed("lab");
        apply(&mut row, &report(CircuitSignal::Unavailable, s), t(0));
        assert_eq!(row.until, Some(DateTime::<Utc>::MAX_UTC));
        assert_eq!(
            apply(&mut row, &admit_step("a"), t(3_600_000)),
            Some(Admission::Wait {
                until: DateTime::<Utc>::MAX_UTC
            })
        );
        // A probe lease "for ever" saturates the same way.
        let mut open = SharedCircuit {
            state: CircuitState::Open,
            until: Some(t(0)),
            ..SharedCircuit::closed("lab")
        };
        let long = CircuitStep::Admit {
            instance: "a".into(),
            probe_lease: Duration::MAX,
        };
        assert_eq!(apply(&mut open, &long, t(1)), Some(Admission::Probe));
        assert_eq!(open.until, Some(DateTime::<Utc>::MAX_UTC));
    }
}
