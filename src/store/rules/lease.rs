//! Leases: what a claim journals, whether a result still counts, and what
//! happens to work whose lease ended.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::NewEvent;
use super::transition::check_table;
use crate::error::Result;
use crate::model::event::{Actor, AttemptOutcome, EventKind};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::retry::{MAX_AGE_REACHED, MAX_ATTEMPTS_REACHED, dead_letter_reason};
use crate::store::{AttemptReport, Lease, LeaseToken, ReapLimits, StateChange};

/// Expired leases returned to the queue per pass.
pub(crate) const REAP_BATCH: usize = 1000;

/// Submissions one claim takes at most, whatever its limit: what a call
/// holds in memory and writes in one transaction stays bounded.
pub(crate) const MAX_CLAIM: usize = 1024;

/// A fresh lease token for each submission a claim of `limit` may take.
pub(crate) fn claim_tokens(limit: usize) -> Vec<LeaseToken> {
    (0..limit.min(MAX_CLAIM))
        .map(|_| LeaseToken::fresh())
        .collect()
}

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

/// The error of an attempt whose lease ended.
const LEASE_EXPIRED: &str = "the worker did not report before its lease expired";

/// How the attempt of a lease that ended is closed, and what becomes of its
/// submission: back to the queue, due now, or — when `limits` are reached —
/// dead-lettered with the reason.
///
/// The expired lease is an attempt (the claim counted it). `lease_expiries`
/// is the count of consecutive leases that ended without a report before
/// this one; the change carries the count with this one. The crash limit is
/// checked first: it names the cause.
pub(crate) fn expired(
    current: &Submission,
    token: Option<LeaseToken>,
    lease_expiries: u32,
    limits: &ReapLimits,
    now: DateTime<Utc>,
) -> (AttemptReport, StateChange) {
    let report = AttemptReport {
        outcome: AttemptOutcome::LeaseExpired,
        http_status: None,
        error: Some(LEASE_EXPIRED.into()),
        finished_at: now,
    };
    let expiries = lease_expiries.saturating_add(1);
    let data = json!({
        "attempt": current.attempts,
        "lease_token": token.map(|t| t.to_string()),
        "lease_expiries": expiries,
    });
    let change = match give_up(current, expiries, limits, now) {
        None => StateChange::to(SubmissionState::Queued)
            .event(EventKind::LeaseExpired)
            .reason("lease expired before the worker reported; returned to the queue")
            .due_at(now),
        Some(reason) => StateChange::to(SubmissionState::DeadLettered)
            .reason(reason)
            .error(LEASE_EXPIRED),
    };
    let change = StateChange {
        lease_expiries: Some(expiries),
        ..change.actor(Actor::system("reaper")).data(data).at(now)
    };
    (report, change)
}

/// The words for a submission the worker crashed or hung on `n` times in a
/// row: a dead letter's reason.
pub(crate) fn crashed_reason(n: u32) -> String {
    let times = if n == 1 { "time" } else { "times" };
    format!("the worker crashed or hung on it {n} {times}")
}

/// Why work whose lease just ended for the `expiries`-th time in a row is
/// given up, if it is.
fn give_up(
    current: &Submission,
    expiries: u32,
    limits: &ReapLimits,
    now: DateTime<Utc>,
) -> Option<String> {
    if expiries >= limits.max_lease_expiries() {
        return Some(crashed_reason(expiries));
    }
    let retry = limits.retry_limits()?;
    // Limits count from the start of the current cycle (enqueue or replay),
    // as the dispatcher's do.
    let attempt_in_cycle = current
        .attempts
        .saturating_sub(current.attempts_before_cycle);
    if attempt_in_cycle >= retry.max_attempts() {
        return Some(dead_letter_reason(MAX_ATTEMPTS_REACHED, LEASE_EXPIRED));
    }
    // Requeued due now: past the max age is past it.
    let age = (now - current.cycle_started_at)
        .to_std()
        .unwrap_or_default();
    if age > retry.max_age() {
        return Some(dead_letter_reason(MAX_AGE_REACHED, LEASE_EXPIRED));
    }
    None
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
        let (report, change) = expired(&current, Some(token), 0, &ReapLimits::default(), t(7_000));
        assert_eq!(report.outcome, AttemptOutcome::LeaseExpired);
        assert_eq!(change.target, SubmissionState::Queued);
        assert_eq!(change.event, Some(EventKind::LeaseExpired));
        assert_eq!(change.due_at, Some(t(7_000)));
        assert_eq!(change.lease_expiries, Some(1));
        let data = change.data.unwrap();
        assert_eq!(data["attempt"], 3);
        assert_eq!(data["lease_token"], token.to_string());
        assert_eq!(data["lease_expiries"], 1);
        assert!(blocking_states(true).contains(&SubmissionState::DeadLettered));
        assert!(!blocking_states(false).contains(&SubmissionState::DeadLettered));
    }

    /// (state, reason) of the change after an expired lease.
    fn verdict(
        current: &Submission,
        before: u32,
        limits: &ReapLimits,
        now: DateTime<Utc>,
    ) -> (SubmissionState, Option<String>, Option<u32>) {
        let (report, change) = expired(current, Some(LeaseToken::fresh()), before, limits, now);
        assert_eq!(report.outcome, AttemptOutcome::LeaseExpired);
        assert_eq!(change.actor, Actor::system("reaper"));
        (change.target, change.reason, change.lease_expiries)
    }

    #[test]
    fn each_limit_dead_letters_and_below_them_the_work_returns() {
        use SubmissionState::*;
        let retry = crate::retry::RetryLimits::new(5, std::time::Duration::from_secs(60)).unwrap();
        let limits = ReapLimits::new(3).unwrap().retry(retry);
        // Enqueued at t(1_000), attempt 2 of 5, 1 expiry before: requeued.
        let mut current = submission(InFlight);
        current.attempts = 2;
        let (state, _, count) = verdict(&current, 1, &limits, t(2_000));
        assert_eq!((state, count), (Queued, Some(2)));

        // The third expiry in a row: the crash limit, in words.
        let (state, reason, count) = verdict(&current, 2, &limits, t(2_000));
        assert_eq!((state, count), (DeadLettered, Some(3)));
        assert_eq!(
            reason.as_deref(),
            Some("the worker crashed or hung on it 3 times")
        );

        // The fifth attempt of the cycle: max attempts, the dispatcher's words.
        current.attempts = 5;
        let (state, reason, _) = verdict(&current, 0, &limits, t(2_000));
        assert_eq!(state, DeadLettered);
        assert_eq!(
            reason.as_deref(),
            Some(
                "retries exhausted: max attempts reached: the worker did not report before its lease expired"
            )
        );
        // Attempts count from the start of the cycle: after a replay at
        // attempt 4, attempt 5 is the first of the new cycle.
        current.attempts_before_cycle = 4;
        assert_eq!(verdict(&current, 0, &limits, t(2_000)).0, Queued);

        // Past the max age (60 s from the cycle's start at t(1_000)).
        current.attempts = 2;
        current.attempts_before_cycle = 0;
        assert_eq!(verdict(&current, 0, &limits, t(61_000)).0, Queued);
        let (state, reason, _) = verdict(&current, 0, &limits, t(61_001));
        assert_eq!(state, DeadLettered);
        assert_eq!(
            reason.as_deref(),
            Some(
                "retries exhausted: max age reached: the worker did not report before its lease expired"
            )
        );
        // The age counts from the cycle's start: a replay at t(30_000).
        current.cycle_started_at = t(30_000);
        assert_eq!(verdict(&current, 0, &limits, t(61_001)).0, Queued);

        // Without retry limits (a partner this process does not run): the
        // crash limit alone.
        current.attempts = 1_000;
        let crash_only = ReapLimits::default();
        assert_eq!(verdict(&current, 1, &crash_only, t(1_000_000)).0, Queued);
        assert_eq!(
            verdict(&current, 2, &crash_only, t(1_000_000)).0,
            DeadLettered
        );
        // A limit of 1: the first crash dead-letters.
        let once = ReapLimits::new(1).unwrap();
        let (state, reason, _) = verdict(&current, 0, &once, t(2_000));
        assert_eq!(state, DeadLettered);
        assert_eq!(
            reason.as_deref(),
            Some("the worker crashed or hung on it 1 time")
        );
        // The count saturates instead of overflowing.
        assert_eq!(
            verdict(&current, u32::MAX, &crash_only, t(2_000)).2,
            Some(u32::MAX)
        );
    }

    #[test]
    fn a_report_or_a_replay_resets_the_count_and_the_reaper_sets_it() {
        use crate::store::rules::transition::apply;
        use SubmissionState::*;
        let in_flight = submission(InFlight);
        // The worker reported (any result), or the work was cancelled: 0.
        for target in [
            Queued,
            AwaitingResult,
            Succeeded,
            Failed,
            DeadLettered,
            Cancelled,
        ] {
            let (write, _) = apply(in_flight.clone(), &StateChange::to(target), t(2_000));
            assert_eq!(write.lease_expiries, Some(0), "{target}");
        }
        // A replay starts again from 0.
        for from in [Failed, DeadLettered, Stuck] {
            let (write, _) = apply(submission(from), &StateChange::to(Queued), t(2_000));
            assert_eq!(write.lease_expiries, Some(0), "replay from {from}");
        }
        // Other changes keep it: a dead letter of the reaper stays one when
        // it is resolved or cancelled (then it is no longer dead-lettered).
        for (from, to) in [
            (DeadLettered, ResolvedManually),
            (DeadLettered, Cancelled),
            (Queued, Cancelled),
            (AwaitingResult, Succeeded),
        ] {
            let (write, _) = apply(submission(from), &StateChange::to(to), t(2_000));
            assert_eq!(write.lease_expiries, None, "{from} -> {to}");
        }
        // The reaper's change carries its count.
        let (_, change) = expired(&in_flight, None, 1, &ReapLimits::default(), t(2_000));
        let (write, event) = apply(in_flight.clone(), &change, t(2_000));
        assert_eq!(write.lease_expiries, Some(2));
        assert_eq!(event.kind, EventKind::LeaseExpired);
        let (_, change) = expired(&in_flight, None, 2, &ReapLimits::default(), t(2_000));
        let (write, event) = apply(in_flight.clone(), &change, t(2_000));
        assert_eq!(
            (write.after.state, write.lease_expiries),
            (DeadLettered, Some(3))
        );
        assert_eq!(
            event.reason.as_deref(),
            Some("the worker crashed or hung on it 3 times")
        );
        assert_eq!(
            write.after.last_error.as_deref(),
            Some("the worker did not report before its lease expired")
        );
    }
}
