//! State changes: whether one is allowed, and the row update and timeline
//! line it produces.

use chrono::{DateTime, Utc};

use super::NewEvent;
use crate::error::{Error, Result};
use crate::model::event::{AttemptOutcome, EventKind};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::common::{bounded, stored_time};
use crate::store::{AttemptReport, StateChange};

/// What a state change writes: the row as it is after the change, decided
/// here from the row as read under its lock, so that both stores write the
/// same values and answer with the row without reading it back. A store
/// writes the columns a change owns (state, due time, result deadline,
/// terminal time, partner reference, last error, `updated_at`, the
/// replay-cycle columns, the result document), clears the lease, and
/// leaves the rest of the row as it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateWrite {
    /// The row after the change; its times are as a store keeps them
    /// (whole milliseconds).
    pub(crate) after: Submission,
    /// The state the change starts from, as read under the row's lock.
    pub(crate) from: SubmissionState,
    /// The partner accepted it (and, for a synchronous answer, finished
    /// it) at this time: a store keeps the first acceptance, so
    /// `accepted_at` becomes this only where it is not set yet.
    pub(crate) accepted_at: Option<DateTime<Utc>>,
    /// The row's count of consecutive leases that ended without a report
    /// (`lease_expiries`) after the change; `None` keeps it.
    pub(crate) lease_expiries: Option<u32>,
}

/// Refuse a change that is not in the transition table.
pub(crate) fn check_table(current: &Submission, to: SubmissionState) -> Result<()> {
    if current.state.can_become(to) {
        Ok(())
    } else {
        Err(Error::InvalidTransition {
            id: current.id,
            from: current.state,
            to,
            reason: "not in the transition table",
        })
    }
}

/// Refuse what a change that no lease governs may not do: anything not in
/// the table, putting work in flight (only a claim does), settling an
/// attempt in flight (only its lease holder does; cancelling is allowed),
/// and sending again a submission whose payload retention purged.
pub(crate) fn check_unleased(current: &Submission, change: &StateChange) -> Result<()> {
    check_table(current, change.target)?;
    let refuse = |reason| {
        Err(Error::InvalidTransition {
            id: current.id,
            from: current.state,
            to: change.target,
            reason,
        })
    };
    if change.target == SubmissionState::InFlight {
        return refuse("only a claim puts work in flight");
    }
    if current.state == SubmissionState::InFlight && change.target != SubmissionState::Cancelled {
        return refuse("an attempt in flight is settled only under its lease");
    }
    if change.target == SubmissionState::Queued && current.payload.is_none() {
        return refuse("the payload was purged by retention; it cannot be sent again");
    }
    Ok(())
}

/// How the attempt in flight ends when the submission is cancelled under
/// it: the worker's late result then finds its lease gone.
pub(crate) fn cancelled_attempt(change: &StateChange, now: DateTime<Utc>) -> AttemptReport {
    AttemptReport {
        outcome: AttemptOutcome::Cancelled,
        http_status: None,
        error: change.reason.clone(),
        finished_at: change.at.unwrap_or(now),
    }
}

/// The error for a partner reference that belongs to another submission.
pub(crate) fn reference_taken(
    partner: &str,
    reference: &str,
    holder: Option<SubmissionId>,
) -> Error {
    Error::ReferenceTaken {
        partner: partner.to_owned(),
        reference: reference.to_owned(),
        holder,
    }
}

/// Refuse moving the result deadline of a submission not awaiting one.
pub(crate) fn check_deferrable(current: &Submission) -> Result<()> {
    if current.state == SubmissionState::AwaitingResult {
        Ok(())
    } else {
        Err(Error::InvalidTransition {
            id: current.id,
            from: current.state,
            to: current.state,
            reason: "only a submission awaiting its result has a deadline to move",
        })
    }
}

/// The row update and timeline line of an allowed change (the caller has
/// checked it). The row after is built from `current`, which it takes: a
/// row's payload and fields are moved into the answer, not copied.
pub(crate) fn apply(
    current: Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> (StateWrite, NewEvent) {
    use SubmissionState::*;
    let at = stored_time(change.at.unwrap_or(now));
    let to = change.target;
    let from = current.state;
    // A move to Queued from anything but InFlight is a replay: a new cycle
    // with a fresh retry budget.
    let new_cycle = to == Queued && from != InFlight;
    let event = NewEvent {
        id: current.id,
        at,
        kind: change
            .event
            .clone()
            .unwrap_or_else(|| EventKind::for_transition(from, to)),
        from: Some(from),
        to: Some(to),
        actor: change.actor.clone(),
        reason: change.reason.clone().or_else(|| change.error.clone()),
        data: change.data.clone(),
    };
    let lease_expiries = lease_expiries(&current, change);
    let after = Submission {
        state: to,
        due_at: match to {
            Queued => change.due_at.map_or(at, stored_time),
            _ => current.due_at,
        },
        result_deadline: match to {
            AwaitingResult => change.result_deadline.map(stored_time),
            Stuck => current.result_deadline,
            _ => None,
        },
        terminal_at: to.is_terminal().then_some(at),
        external_ref: change.external_ref.clone().or(current.external_ref),
        last_error: bounded(change.error.as_deref()).or(current.last_error),
        updated_at: at,
        lease_expires_at: None,
        replays: current.replays.saturating_add(u32::from(new_cycle)),
        attempts_before_cycle: if new_cycle {
            current.attempts
        } else {
            current.attempts_before_cycle
        },
        cycle_started_at: if new_cycle {
            at
        } else {
            current.cycle_started_at
        },
        // A new cycle starts without a result; otherwise a change that
        // brings none keeps the one the submission has.
        result: match to {
            Queued => None,
            _ => change.result.clone().or(current.result),
        },
        ..current
    };
    let write = StateWrite {
        after,
        from,
        accepted_at: (from == InFlight && matches!(to, AwaitingResult | Succeeded | Failed))
            .then_some(at),
        lease_expiries,
    };
    (write, event)
}

/// The count of consecutive leases that ended without a report, after a
/// change: the reaper's own count (it is the only one to set one); else 0
/// when an attempt in flight ends otherwise (its worker reported, or it was
/// cancelled) or a replay starts a new cycle; else unchanged. So a
/// dead-lettered row with a count above 0 was dead-lettered by the reaper
/// (`DeadLettered` is reached from `InFlight` only): that is how a store
/// counts the dead letters of crashed or hung workers.
fn lease_expiries(current: &Submission, change: &StateChange) -> Option<u32> {
    use SubmissionState::*;
    change.lease_expiries.or_else(|| {
        // From InFlight: a report or a cancel; to Queued otherwise: a replay.
        (current.state == InFlight || change.target == Queued).then_some(0)
    })
}

/// The timeline line saying a result document was not kept (too large,
/// unreadable), for a change that brings such a marker.
pub(crate) fn result_not_kept(
    current: &Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Option<NewEvent> {
    let result = change.result.as_ref()?;
    let reason = result.marker_reason()?;
    Some(NewEvent::note(
        current.id,
        change.at.unwrap_or(now),
        EventKind::ResultNotKept,
        change.actor.clone(),
        Some(reason),
        serde_json::to_value(result).ok(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Actor;
    use crate::store::rules::fixtures::{submission, t};

    #[test]
    fn unleased_changes_are_refused_where_only_a_lease_or_claim_may_act() {
        use SubmissionState::*;
        let cases: &[(SubmissionState, SubmissionState, bool, Option<&str>)] = &[
            (
                Queued,
                InFlight,
                true,
                Some("only a claim puts work in flight"),
            ),
            (InFlight, Succeeded, true, Some("only under its lease")),
            (InFlight, Cancelled, true, None),
            (Failed, Queued, false, Some("purged by retention")),
            (Failed, Queued, true, None),
            (Succeeded, Queued, true, Some("not in the transition table")),
            (AwaitingResult, Stuck, true, None),
        ];
        for (from, to, payload, refused) in cases {
            let mut current = submission(*from);
            if !payload {
                current.payload = None;
            }
            let result = check_unleased(&current, &StateChange::to(*to));
            match refused {
                None => assert!(result.is_ok(), "{from} -> {to}: {result:?}"),
                Some(words) => {
                    let err = result.expect_err(&format!("{from} -> {to} must be refused"));
                    assert!(err.is_invalid_transition(), "{from} -> {to}: {err:?}");
                    assert!(err.to_string().contains(words), "{from} -> {to}: {err}");
                }
            }
        }
    }

    #[test]
    fn a_change_writes_the_columns_its_target_state_owns() {
        use SubmissionState::*;
        let mut current = submission(InFlight);
        current.result_deadline = Some(t(5));
        current.last_error = Some("earlier".into());
        let change = StateChange::to(AwaitingResult)
            .external_ref("R-1")
            .result_deadline(t(9_000))
            .at(t(2_000));
        let (write, event) = apply(current.clone(), &change, t(3_000));
        assert_eq!(write.after.state, AwaitingResult);
        assert_eq!(
            write.after.updated_at,
            t(2_000),
            "the change's own time wins over now"
        );
        assert_eq!(write.after.result_deadline, Some(t(9_000)));
        assert_eq!(write.after.external_ref.as_deref(), Some("R-1"));
        assert_eq!(write.after.last_error.as_deref(), Some("earlier"));
        assert_eq!(write.accepted_at, Some(t(2_000)));
        assert_eq!(write.after.replays, current.replays, "not a new cycle");
        assert_eq!(write.after.terminal_at, None);
        assert_eq!(
            event.kind,
            EventKind::for_transition(InFlight, AwaitingResult)
        );
        assert_eq!(
            (event.from, event.to),
            (Some(InFlight), Some(AwaitingResult))
        );

        // Queued from a terminal state: a replay, due when asked.
        let failed = submission(Failed);
        let replay = StateChange::to(Queued).due_at(t(7_000));
        let (write, _) = apply(failed.clone(), &replay, t(3_000));
        assert_eq!(write.accepted_at, None);
        assert_eq!(
            write.after.replays,
            failed.replays + 1,
            "a replay starts a cycle"
        );
        assert_eq!(write.after.attempts_before_cycle, failed.attempts);
        assert_eq!(write.after.cycle_started_at, t(3_000));
        assert_eq!(write.after.attempts_in_cycle(), 0);
        assert_eq!(write.after.due_at, t(7_000));
        assert_eq!(write.after.result_deadline, None);

        // Back to the queue after an attempt: not a new cycle.
        let in_flight = submission(InFlight);
        let (write, _) = apply(in_flight.clone(), &StateChange::to(Queued), t(3_000));
        assert_eq!(
            (write.after.replays, write.after.attempts_before_cycle),
            (in_flight.replays, in_flight.attempts_before_cycle)
        );
        assert_eq!(write.after.cycle_started_at, in_flight.cycle_started_at);
        assert_eq!(write.after.due_at, t(3_000));

        // Stuck keeps the deadline it missed; a terminal state dates its end.
        let mut awaiting = submission(AwaitingResult);
        awaiting.result_deadline = Some(t(4_000));
        let (write, _) = apply(awaiting.clone(), &StateChange::to(Stuck), t(5_000));
        assert_eq!(write.after.result_deadline, Some(t(4_000)));
        let (write, event) = apply(
            awaiting.clone(),
            &StateChange::to(Failed)
                .error("denied")
                .actor(Actor::person("ana")),
            t(5_000),
        );
        assert_eq!(write.after.terminal_at, Some(t(5_000)));
        assert_eq!(write.after.last_error.as_deref(), Some("denied"));
        assert_eq!(
            event.reason.as_deref(),
            Some("denied"),
            "the error is the reason when none is given"
        );
        assert_eq!(event.actor, Actor::person("ana"));
    }

    #[test]
    fn the_row_after_a_change_is_the_row_a_store_reads_back() {
        use SubmissionState::*;
        let nanos = chrono::Duration::nanoseconds(456_789);
        let mut current = submission(InFlight);
        current.lease_expires_at = Some(t(9_000));
        current.correlation.insert("order".into(), "7".into());
        let change = StateChange::to(AwaitingResult)
            .result_deadline(t(9_000) + nanos)
            .at(t(2_000) + nanos);
        let (write, _) = apply(current.clone(), &change, t(3_000));
        // Stored times are whole milliseconds: so are the answer's.
        assert_eq!(write.after.updated_at, t(2_000));
        assert_eq!(write.after.result_deadline, Some(t(9_000)));
        assert_eq!(write.accepted_at, Some(t(2_000)));
        // The lease is cleared; what the change does not own is kept.
        assert_eq!(write.after.lease_expires_at, None);
        let untouched = |s: &Submission| {
            (
                s.id,
                s.payload.clone(),
                s.fingerprint,
                s.correlation.clone(),
                s.attempts,
                s.created_at,
                s.priority,
            )
        };
        assert_eq!(untouched(&write.after), untouched(&current));

        let replay = StateChange::to(Queued).due_at(t(7_000) + nanos);
        let (write, _) = apply(submission(Failed), &replay, t(3_000) + nanos);
        assert_eq!(write.after.due_at, t(7_000));
        assert_eq!(write.after.cycle_started_at, t(3_000));
        let (write, _) = apply(
            submission(Queued),
            &StateChange::to(Cancelled),
            t(3_000) + nanos,
        );
        assert_eq!(write.after.terminal_at, Some(t(3_000)));
    }

    #[test]
    fn only_a_submission_awaiting_its_result_has_a_deadline_to_move() {
        for state in SubmissionState::ALL {
            let result = check_deferrable(&submission(state));
            assert_eq!(
                result.is_ok(),
                state == SubmissionState::AwaitingResult,
                "{state}"
            );
        }
    }
}
