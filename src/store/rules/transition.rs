//! State changes: whether one is allowed, and the row update and timeline
//! line it produces.

use chrono::{DateTime, Utc};

use super::NewEvent;
use crate::error::{Error, Result};
use crate::model::event::{AttemptOutcome, EventKind};
use crate::model::result::ResultDocument;
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::common::bounded;
use crate::store::{AttemptReport, StateChange};

/// The columns a state change writes. A store writes exactly these (and
/// clears the lease); the rest of the row stays.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateWrite {
    pub(crate) id: SubmissionId,
    /// The submission's partner (a taken reference names it).
    pub(crate) partner: String,
    /// The state the change starts from, as read under the row's lock.
    pub(crate) from: SubmissionState,
    pub(crate) state: SubmissionState,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) result_deadline: Option<DateTime<Utc>>,
    pub(crate) terminal_at: Option<DateTime<Utc>>,
    pub(crate) external_ref: Option<String>,
    pub(crate) last_error: Option<String>,
    /// When the change happened: the row's `updated_at`.
    pub(crate) at: DateTime<Utc>,
    /// The partner accepted it (and, for a synchronous answer, finished
    /// it): `accepted_at` becomes `at` unless it is set already.
    pub(crate) accepted: bool,
    /// A replay: a new cycle with a fresh retry budget (`replays` + 1,
    /// `attempts_before_cycle` = `attempts`, `cycle_started_at` = `at`).
    pub(crate) new_cycle: bool,
    /// The result document the row holds after the change.
    pub(crate) result: Option<ResultDocument>,
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
/// checked it).
pub(crate) fn apply(
    current: &Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> (StateWrite, NewEvent) {
    use SubmissionState::*;
    let at = change.at.unwrap_or(now);
    let to = change.target;
    let write = StateWrite {
        id: current.id,
        partner: current.partner.clone(),
        from: current.state,
        state: to,
        due_at: match to {
            Queued => change.due_at.unwrap_or(at),
            _ => current.due_at,
        },
        result_deadline: match to {
            AwaitingResult => change.result_deadline,
            Stuck => current.result_deadline,
            _ => None,
        },
        terminal_at: to.is_terminal().then_some(at),
        external_ref: change
            .external_ref
            .clone()
            .or_else(|| current.external_ref.clone()),
        last_error: bounded(change.error.as_deref()).or_else(|| current.last_error.clone()),
        at,
        accepted: current.state == InFlight && matches!(to, AwaitingResult | Succeeded | Failed),
        // A move to Queued from anything but InFlight is a replay.
        new_cycle: to == Queued && current.state != InFlight,
        lease_expiries: lease_expiries(current, change),
        // A new cycle starts without a result; otherwise a change that
        // brings none keeps the one the submission has.
        result: match to {
            Queued => None,
            _ => change.result.clone().or_else(|| current.result.clone()),
        },
    };
    let event = NewEvent {
        id: current.id,
        at,
        kind: change
            .event
            .clone()
            .unwrap_or_else(|| EventKind::for_transition(current.state, to)),
        from: Some(current.state),
        to: Some(to),
        actor: change.actor.clone(),
        reason: change.reason.clone().or_else(|| change.error.clone()),
        data: change.data.clone(),
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
        let (write, event) = apply(&current, &change, t(3_000));
        assert_eq!(write.state, AwaitingResult);
        assert_eq!(write.at, t(2_000), "the change's own time wins over now");
        assert_eq!(write.result_deadline, Some(t(9_000)));
        assert_eq!(write.external_ref.as_deref(), Some("R-1"));
        assert_eq!(write.last_error.as_deref(), Some("earlier"));
        assert!(write.accepted && !write.new_cycle);
        assert_eq!(write.terminal_at, None);
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
        let (write, _) = apply(&failed, &replay, t(3_000));
        assert!(write.new_cycle && !write.accepted);
        assert_eq!(write.due_at, t(7_000));
        assert_eq!(write.result_deadline, None);

        // Back to the queue after an attempt: not a new cycle.
        let (write, _) = apply(&submission(InFlight), &StateChange::to(Queued), t(3_000));
        assert!(!write.new_cycle);
        assert_eq!(write.due_at, t(3_000));

        // Stuck keeps the deadline it missed; a terminal state dates its end.
        let mut awaiting = submission(AwaitingResult);
        awaiting.result_deadline = Some(t(4_000));
        let (write, _) = apply(&awaiting, &StateChange::to(Stuck), t(5_000));
        assert_eq!(write.result_deadline, Some(t(4_000)));
        let (write, event) = apply(
            &awaiting,
            &StateChange::to(Failed)
                .error("denied")
                .actor(Actor::person("ana")),
            t(5_000),
        );
        assert_eq!(write.terminal_at, Some(t(5_000)));
        assert_eq!(write.last_error.as_deref(), Some("denied"));
        assert_eq!(
            event.reason.as_deref(),
            Some("denied"),
            "the error is the reason when none is given"
        );
        assert_eq!(event.actor, Actor::person("ana"));
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
