//! Result deliveries: which changes record one, how one ends, and when a
//! parked one may run again.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::NewEvent;
use crate::error::{Error, Result};
use crate::model::delivery::{Delivery, DeliveryId, DeliveryState};
use crate::model::event::{Actor, EventKind};
use crate::model::submission::SubmissionState;
use crate::store::common::bounded;
use crate::store::{DeliveryEnd, DeliveryLease, LeaseToken, Note};

/// A change from `from` to `to` finishes the submission for the host: it
/// enters a terminal state (Succeeded, Failed, DeadLettered, Cancelled,
/// ResolvedManually) it was not in. A Failed submission resolved by hand
/// finishes again; a replayed one finishes again when its new cycle ends.
pub(crate) fn finishes(from: SubmissionState, to: SubmissionState) -> bool {
    to.is_terminal() && from != to
}

/// The columns the end of a delivery writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DeliveryWrite {
    pub(crate) id: DeliveryId,
    pub(crate) state: DeliveryState,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) delivered_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) at: DateTime<Utc>,
    /// A re-run starts a fresh retry budget.
    pub(crate) reset_attempts: bool,
}

/// The end of a claimed delivery, if its lease is still the current one;
/// the row update and the submission's timeline line.
pub(crate) fn end(
    current: &Delivery,
    current_lease: Option<LeaseToken>,
    lease: &DeliveryLease,
    end: &DeliveryEnd,
    now: DateTime<Utc>,
) -> Result<(DeliveryWrite, NewEvent)> {
    if current.state != DeliveryState::Pending || current_lease != Some(lease.token) {
        return Err(Error::StaleLease {
            id: current.submission_id,
        });
    }
    let actor = Actor::system("results");
    let data = json!({
        "delivery_id": current.id.to_string(),
        "attempt": current.attempts,
        "final_state": current.final_state.as_str(),
    });
    let (state, due_at, delivered_at, error, kind, reason) = match end {
        DeliveryEnd::Delivered => (
            DeliveryState::Delivered,
            current.due_at,
            Some(now),
            None,
            EventKind::ResultDelivered,
            format!("the host's handler took the {} result", current.final_state),
        ),
        DeliveryEnd::Retry { due_at, error } => (
            DeliveryState::Pending,
            *due_at,
            None,
            Some(error.clone()),
            EventKind::ResultDeliveryFailed,
            format!(
                "the host's handler failed (attempt {}); tried again at {due_at}: {error}",
                current.attempts
            ),
        ),
        DeliveryEnd::Parked { error } => (
            DeliveryState::Parked,
            current.due_at,
            None,
            Some(error.clone()),
            EventKind::ResultDeliveryParked,
            format!(
                "the host's handler failed {} time{}; the result waits for a re-run: {error}",
                current.attempts,
                if current.attempts == 1 { "" } else { "s" }
            ),
        ),
    };
    let write = DeliveryWrite {
        id: current.id,
        state,
        due_at,
        delivered_at,
        last_error: bounded(error.as_deref()),
        at: now,
        reset_attempts: false,
    };
    let event = NewEvent::note(
        current.submission_id,
        now,
        kind,
        actor,
        bounded(Some(&reason)),
        Some(data),
    );
    Ok((write, event))
}

/// A re-run of a parked delivery: due now, with a fresh retry budget.
pub(crate) fn rerun(
    current: &Delivery,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<(DeliveryWrite, NewEvent)> {
    if current.state != DeliveryState::Parked {
        return Err(Error::NotParked {
            id: current.id,
            state: current.state,
        });
    }
    let write = DeliveryWrite {
        id: current.id,
        state: DeliveryState::Pending,
        due_at: now,
        delivered_at: None,
        last_error: current.last_error.clone(),
        at: now,
        reset_attempts: true,
    };
    let event = NewEvent::note(
        current.submission_id,
        now,
        EventKind::ResultDeliveryRerun,
        note.actor.clone(),
        note.reason.clone(),
        Some(json!({ "delivery_id": current.id.to_string(), "rerun": true })),
    );
    Ok((write, event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::submission::SubmissionId;
    use crate::store::rules::fixtures::t;

    fn delivery(state: DeliveryState) -> Delivery {
        Delivery {
            id: DeliveryId::new(),
            submission_id: SubmissionId::new(),
            partner: "lab".into(),
            final_state: SubmissionState::Succeeded,
            state,
            attempts: 2,
            due_at: t(1_000),
            created_at: t(500),
            delivered_at: None,
            last_error: None,
        }
    }

    fn lease(d: &Delivery) -> DeliveryLease {
        DeliveryLease {
            delivery: d.clone(),
            token: LeaseToken::fresh(),
            expires_at: t(60_000),
        }
    }

    #[test]
    fn only_entering_a_terminal_state_finishes_a_submission() {
        use SubmissionState::*;
        for from in SubmissionState::ALL {
            for to in SubmissionState::ALL {
                let expected = matches!(
                    to,
                    Succeeded | Failed | DeadLettered | Cancelled | ResolvedManually
                ) && from != to;
                assert_eq!(finishes(from, to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn an_end_applies_only_under_the_current_lease_of_a_pending_delivery() {
        let d = delivery(DeliveryState::Pending);
        let l = lease(&d);
        let cases: &[(DeliveryEnd, DeliveryState, EventKind)] = &[
            (
                DeliveryEnd::Delivered,
                DeliveryState::Delivered,
                EventKind::ResultDelivered,
            ),
            (
                DeliveryEnd::Retry {
                    due_at: t(9_000),
                    error: "db locked".into(),
                },
                DeliveryState::Pending,
                EventKind::ResultDeliveryFailed,
            ),
            (
                DeliveryEnd::Parked {
                    error: "db locked".into(),
                },
                DeliveryState::Parked,
                EventKind::ResultDeliveryParked,
            ),
        ];
        for (how, state, kind) in cases {
            let (write, event) = end(&d, Some(l.token), &l, how, t(5_000)).unwrap();
            assert_eq!(write.state, *state);
            assert_eq!(event.kind, *kind);
            assert_eq!(event.id, d.submission_id);
            assert_eq!(
                write.delivered_at.is_some(),
                *state == DeliveryState::Delivered
            );
            if let DeliveryEnd::Retry { due_at, .. } = how {
                assert_eq!(write.due_at, *due_at);
            }
        }
        let stale = end(
            &d,
            Some(LeaseToken::fresh()),
            &l,
            &DeliveryEnd::Delivered,
            t(5_000),
        );
        assert!(matches!(stale, Err(Error::StaleLease { .. })));
        let released = end(&d, None, &l, &DeliveryEnd::Delivered, t(5_000));
        assert!(matches!(released, Err(Error::StaleLease { .. })));
        let parked = delivery(DeliveryState::Parked);
        let done = end(
            &parked,
            Some(l.token),
            &l,
            &DeliveryEnd::Delivered,
            t(5_000),
        );
        assert!(matches!(done, Err(Error::StaleLease { .. })));
    }

    #[test]
    fn only_a_parked_delivery_is_rerun_and_with_a_fresh_budget() {
        let note = Note::new(EventKind::ResultDeliveryRerun, Actor::person("ops"))
            .reason("fixed the host's schema");
        let (write, event) = rerun(&delivery(DeliveryState::Parked), &note, t(7_000)).unwrap();
        assert_eq!(write.state, DeliveryState::Pending);
        assert_eq!(write.due_at, t(7_000));
        assert!(write.reset_attempts);
        assert_eq!(event.actor, Actor::person("ops"));
        assert_eq!(event.kind, EventKind::ResultDeliveryRerun);
        for state in [DeliveryState::Pending, DeliveryState::Delivered] {
            let d = delivery(state);
            let err = rerun(&d, &note, t(7_000)).unwrap_err();
            assert!(err.is_not_parked(), "{err:?}");
            assert!(matches!(err, Error::NotParked { id, state: s } if id == d.id && s == state));
            assert!(err.to_string().contains("only a parked delivery"), "{err}");
        }
    }
}
