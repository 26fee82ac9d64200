//! Leases: what a claim journals, whether a result still counts, and what
//! happens to work whose lease ended.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::NewEvent;
use super::transition::check_table;
use crate::error::Result;
use crate::model::event::{Actor, AttemptOutcome, EventKind};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::{AttemptReport, Lease, LeaseToken, StateChange};

/// Expired leases returned to the queue per pass.
pub(crate) const REAP_BATCH: usize = 1000;

/// The states of an earlier submission with the same ordering key that
/// hold a later one back.
pub(crate) fn blocking_states(dead_letter_blocks: bool) -> &'static [SubmissionState] {
    use SubmissionState::*;
    if dead_letter_blocks {
        &[Queued, InFlight, DeadLettered]
    } else {
        &[Queued, InFlight]
    }
}

/// The timeline line of a claim.
pub(crate) fn claimed(
    id: SubmissionId,
    attempt: u32,
    token: LeaseToken,
    at: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        from: Some(SubmissionState::Queued),
        to: Some(SubmissionState::InFlight),
        ..NewEvent::note(
            id,
            at,
            EventKind::Claimed,
            Actor::system("dispatcher"),
            None,
            Some(json!({ "attempt": attempt, "lease_token": token.to_string() })),
        )
    }
}

/// What a worker's result does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Completion {
    /// The lease is no longer the submission's current one: journal this
    /// line and change nothing else.
    Stale(NewEvent),
    /// Finish the attempt and apply this change (the caller's, with the
    /// attempt's details merged into its data and its error kept).
    Apply(StateChange),
}

/// Decide on a result reported under `lease` for `current`, whose current
/// lease token is `current_token` (both as read, locked).
///
/// Errors: [`crate::Error::InvalidTransition`] for a change not in the table.
pub(crate) fn complete(
    current: &Submission,
    current_token: Option<LeaseToken>,
    lease: &Lease,
    report: &AttemptReport,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Completion> {
    if current.state != SubmissionState::InFlight || current_token != Some(lease.token) {
        return Ok(Completion::Stale(NewEvent::note(
            current.id,
            change.at.unwrap_or(now),
            EventKind::StaleResultIgnored,
            change.actor.clone(),
            Some("result reported under a lease that is no longer current".into()),
            Some(json!({
                "attempt": lease.attempt,
                "lease_token": lease.token.to_string(),
                "outcome": report.outcome.as_str(),
                "http_status": report.http_status,
                "wanted_state": change.target.as_str(),
                "state": current.state.as_str(),
            })),
        )));
    }
    check_table(current, change.target)?;
    let attempt = json!({
        "attempt": lease.attempt,
        "outcome": report.outcome.as_str(),
        "http_status": report.http_status,
    });
    Ok(Completion::Apply(StateChange {
        data: Some(merge_data(change.data.as_ref(), attempt)),
        error: change.error.clone().or_else(|| report.error.clone()),
        ..change.clone()
    }))
}

/// The event data of a completion: the caller's fields win over the
/// attempt's.
fn merge_data(given: Option<&Value>, extra: Value) -> Value {
    match (given, extra) {
        (Some(Value::Object(given)), Value::Object(mut extra)) => {
            extra.extend(given.clone());
            Value::Object(extra)
        }
        (Some(other), _) => other.clone(),
        (None, extra) => extra,
    }
}

/// How the attempt of a lease that ended is closed, and the change that
/// returns its submission to the queue.
pub(crate) fn expired(
    current: &Submission,
    token: Option<LeaseToken>,
    now: DateTime<Utc>,
) -> (AttemptReport, StateChange) {
    let report = AttemptReport {
        outcome: AttemptOutcome::LeaseExpired,
        http_status: None,
        error: Some("the worker did not report before its lease expired".into()),
        finished_at: now,
    };
    let change = StateChange::to(SubmissionState::Queued)
        .actor(Actor::system("reaper"))
        .event(EventKind::LeaseExpired)
        .reason("lease expired before the worker reported; returned to the queue")
        .data(json!({
            "attempt": current.attempts,
            "lease_token": token.map(|t| t.to_string()),
        }))
        .due_at(now)
        .at(now);
    (report, change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rules::fixtures::{submission, t};

    fn lease_of(current: &Submission) -> Lease {
        Lease {
            submission: current.clone(),
            token: LeaseToken::fresh(),
            attempt: 1,
            expires_at: t(60_000),
        }
    }

    #[test]
    fn a_result_counts_only_under_the_current_lease() {
        use SubmissionState::*;
        let current = submission(InFlight);
        let lease = lease_of(&current);
        let report = AttemptReport::new(AttemptOutcome::Accepted).http_status(202);
        let change = StateChange::to(AwaitingResult).data(json!({"attempt": 99, "note": "x"}));
        // (name, state, token, expected to apply)
        let cases = [
            ("current lease", InFlight, Some(lease.token), true),
            ("another lease", InFlight, Some(LeaseToken::fresh()), false),
            ("lease cleared", InFlight, None, false),
            ("cancelled meanwhile", Cancelled, None, false),
            ("returned to the queue", Queued, None, false),
        ];
        for (name, state, token, applies) in cases {
            let mut row = current.clone();
            row.state = state;
            match complete(&row, token, &lease, &report, &change, t(2_000)).unwrap() {
                Completion::Apply(change) => {
                    assert!(applies, "{name}");
                    let data = change.data.unwrap();
                    assert_eq!(data["attempt"], 99, "{name}: the caller's fields win");
                    assert_eq!(data["http_status"], 202, "{name}");
                    assert_eq!(data["note"], "x", "{name}");
                }
                Completion::Stale(event) => {
                    assert!(!applies, "{name}");
                    assert_eq!(event.kind, EventKind::StaleResultIgnored, "{name}");
                    assert_eq!(event.data.unwrap()["state"], state.as_str(), "{name}");
                }
            }
        }
        // Under the current lease, a change outside the table is refused.
        let err = complete(
            &current,
            Some(lease.token),
            &lease,
            &report,
            &StateChange::to(ResolvedManually),
            t(2_000),
        )
        .unwrap_err();
        assert!(err.is_invalid_transition(), "{err:?}");
    }

    #[test]
    fn the_attempts_error_is_kept_unless_the_change_has_its_own() {
        let current = submission(SubmissionState::InFlight);
        let lease = lease_of(&current);
        let report = AttemptReport::new(AttemptOutcome::Transient).error("502 from partner");
        let plain = StateChange::to(SubmissionState::Queued);
        let Completion::Apply(change) =
            complete(&current, Some(lease.token), &lease, &report, &plain, t(1)).unwrap()
        else {
            panic!("applies");
        };
        assert_eq!(change.error.as_deref(), Some("502 from partner"));
        let own = plain.error("circuit open");
        let Completion::Apply(change) =
            complete(&current, Some(lease.token), &lease, &report, &own, t(1)).unwrap()
        else {
            panic!("applies");
        };
        assert_eq!(change.error.as_deref(), Some("circuit open"));
    }

    #[test]
    fn an_expired_lease_closes_its_attempt_and_requeues_due_now() {
        let mut current = submission(SubmissionState::InFlight);
        current.attempts = 3;
        let token = LeaseToken::fresh();
        let (report, change) = expired(&current, Some(token), t(7_000));
        assert_eq!(report.outcome, AttemptOutcome::LeaseExpired);
        assert_eq!(change.target, SubmissionState::Queued);
        assert_eq!(change.due_at, Some(t(7_000)));
        let data = change.data.unwrap();
        assert_eq!(data["attempt"], 3);
        assert_eq!(data["lease_token"], token.to_string());
        assert!(blocking_states(true).contains(&SubmissionState::DeadLettered));
        assert!(!blocking_states(false).contains(&SubmissionState::DeadLettered));
    }
}
