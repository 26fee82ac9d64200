//! Alert notifications, decided once: when a reminder is due, what a try's
//! outcome writes (delivered; pending again after a backoff; failed for
//! good), and what counts as "notified".
//!
//! The engine calls these around each sink call; the stores write what they
//! return (`OutboxStore::record_notifications`, `claim_notifications`,
//! `finish_notification`) without deciding anything.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::alert::{Alert, AlertEvent};
use crate::model::notification::{AlertNotification, NotificationId, NotificationState};
use crate::partner::PartnerError;
use crate::retry::{Exponential, RetryDecision, RetryPolicy};
use crate::store::common::saturating_after;
use crate::store::{NotificationWrite, SinkRoute};

/// Longest error kept with a notification, in characters: enough to say
/// what failed, short enough for a status line.
pub(crate) const MAX_ERROR_CHARS: usize = 300;

/// How notifications are tried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TryPolicy {
    /// Delays between tries.
    pub(crate) backoff: Exponential,
    /// Tries before a notification is failed for good (at least 1).
    pub(crate) max_attempts: u32,
    /// How long a try holds its notification: the sink timeout plus a
    /// margin, so a crashed instance's claim comes free again.
    pub(crate) lease: Duration,
}

/// How one try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tried {
    /// The sink took it.
    Delivered,
    /// The sink failed or timed out, for this reason.
    Failed(String),
}

/// An open alert needs a reminder: unacknowledged, nothing of it still
/// being tried, and last delivered (to any sink) at least `every` ago — or
/// never: an alert counts as notified only once a sink delivered it, so a
/// round that failed everywhere is followed by another.
pub(crate) fn reminder_due(
    alert: &Alert,
    pending: bool,
    now: DateTime<Utc>,
    every: Duration,
) -> bool {
    alert.is_open()
        && alert.acknowledged_by.is_none()
        && !pending
        && alert
            .last_notified_at
            .is_none_or(|at| (now - at).to_std().unwrap_or_default() >= every)
}

/// The row of a notification about to get its first try (claimed already:
/// its next try is at the end of the lease).
pub(crate) fn first_try(
    alert: &Alert,
    event: AlertEvent,
    sink: &str,
    now: DateTime<Utc>,
    policy: &TryPolicy,
) -> AlertNotification {
    AlertNotification {
        id: NotificationId::new(),
        alert_id: alert.id,
        partner: alert.partner.clone(),
        event,
        sink: sink.to_owned(),
        owner: alert.owner.name.clone(),
        state: NotificationState::Pending,
        attempts: 1,
        last_error: None,
        next_try_at: Some(saturating_after(now, policy.lease)),
        created_at: now,
        updated_at: now,
        delivered_at: None,
    }
}

/// The end of a claim: until then the notification is held.
pub(crate) fn claim_until(now: DateTime<Utc>, policy: &TryPolicy) -> DateTime<Utc> {
    saturating_after(now, policy.lease)
}

/// What the end of try number `n.attempts` of `n` writes.
pub(crate) fn after_try(
    n: &AlertNotification,
    tried: Tried,
    policy: &TryPolicy,
    now: DateTime<Utc>,
) -> NotificationWrite {
    let route = SinkRoute {
        partner: n.partner.clone(),
        owner: n.owner.clone(),
        sink: n.sink.clone(),
    };
    let base = NotificationWrite {
        id: n.id,
        alert_id: n.alert_id,
        attempt: n.attempts,
        state: NotificationState::Delivered,
        next_try_at: None,
        last_error: n.last_error.clone(),
        at: now,
        notified_round: None,
        route,
        failing: None,
        keep_status: false,
    };
    match tried {
        Tried::Delivered => NotificationWrite {
            notified_round: (n.event != AlertEvent::Resolved).then_some(n.created_at),
            ..base
        },
        Tried::Failed(reason) => {
            let reason = bounded_error(&reason);
            let next = (n.attempts < policy.max_attempts.max(1))
                .then(|| {
                    match policy
                        .backoff
                        .decide(n.attempts, &PartnerError::transient(reason.clone()))
                    {
                        RetryDecision::RetryAfter(d) => Some(saturating_after(now, d)),
                        _ => None,
                    }
                })
                .flatten();
            NotificationWrite {
                state: if next.is_some() {
                    NotificationState::Pending
                } else {
                    NotificationState::Failed
                },
                next_try_at: next,
                last_error: Some(reason.clone()),
                failing: Some(reason),
                ..base
            }
        }
    }
}

/// Why a claimed notification is not tried again, if it is not: its alert
/// is gone, or resolved before an opening or a reminder was delivered (the
/// resolution is notified on its own).
pub(crate) fn superseded(n: &AlertNotification, alert: Option<&Alert>) -> Option<&'static str> {
    match alert {
        None => Some("the alert no longer exists"),
        Some(a) if !a.is_open() && n.event != AlertEvent::Resolved => {
            Some("the alert resolved before this was delivered")
        }
        Some(_) => None,
    }
}

/// A notification that is not tried again: failed for good with `why`.
/// The sink's failing status is left as it is — unless `sink_gone` (the
/// sink is no longer configured), which clears it: nothing will be sent
/// through that sink again.
pub(crate) fn given_up(
    n: &AlertNotification,
    why: &str,
    sink_gone: bool,
    now: DateTime<Utc>,
) -> NotificationWrite {
    let mut write = after_try(
        n,
        Tried::Failed(why.to_owned()),
        &TryPolicy {
            backoff: Exponential::default(),
            max_attempts: 1,
            lease: Duration::ZERO,
        },
        now,
    );
    write.failing = None;
    write.keep_status = !sink_gone;
    write
}

/// How a try ended, for the metrics: `delivered`, `retrying` (failed, to
/// be tried again) or `failed` (for good).
pub(crate) fn outcome(write: &NotificationWrite) -> &'static str {
    match write.state {
        NotificationState::Delivered => "delivered",
        NotificationState::Pending => "retrying",
        NotificationState::Failed => "failed",
    }
}

/// A sink's error cut to [`MAX_ERROR_CHARS`] on one line.
pub(crate) fn bounded_error(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut cut: String = one_line.chars().take(MAX_ERROR_CHARS).collect();
    if one_line.chars().count() > MAX_ERROR_CHARS {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alert::{AlertId, Owner, ProblemClass};
    use crate::model::event::Actor;
    use crate::store::rules::fixtures::t;

    fn alert() -> Alert {
        Alert {
            id: AlertId::new(),
            partner: "lab".into(),
            class: ProblemClass::PartnerUnavailable,
            owner: Owner::new("lab operations", "#lab"),
            opened_at: t(0),
            last_notified_at: None,
            notify_count: 0,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_at: None,
            expected: false,
            details: "its circuit is open".into(),
        }
    }

    fn policy() -> TryPolicy {
        TryPolicy {
            backoff: Exponential::new(Duration::from_secs(1), Duration::from_secs(8)).unwrap(),
            max_attempts: 3,
            lease: Duration::from_secs(20),
        }
    }

    #[test]
    fn a_reminder_waits_for_pending_tries_acknowledgement_and_the_period() {
        let hour = Duration::from_secs(3600);
        let mut a = alert();
        // Never delivered: due at once, unless a try is still pending.
        assert!(reminder_due(&a, false, t(1_000), hour));
        assert!(!reminder_due(&a, true, t(1_000), hour));
        a.last_notified_at = Some(t(0));
        assert!(!reminder_due(&a, false, t(3_599_999), hour));
        assert!(reminder_due(&a, false, t(3_600_000), hour));
        a.acknowledged_by = Some(Actor::person("dana"));
        assert!(!reminder_due(&a, false, t(9_000_000), hour));
        a.acknowledged_by = None;
        a.resolved_at = Some(t(1));
        assert!(!reminder_due(&a, false, t(9_000_000), hour));
    }

    #[test]
    fn failures_retry_with_backoff_then_fail_for_good() {
        let p = policy();
        let mut n = first_try(&alert(), AlertEvent::Opened, "chat", t(0), &p);
        assert_eq!(n.next_try_at, Some(t(20_000)), "held for the lease");
        let w = after_try(&n, Tried::Failed("HTTP 503".into()), &p, t(1_000));
        assert_eq!(w.state, NotificationState::Pending);
        let next = w.next_try_at.unwrap();
        assert!(next >= t(1_000) && next <= t(2_000), "{next}");
        assert_eq!(w.failing.as_deref(), Some("HTTP 503"));
        assert_eq!(w.notified_round, None);
        n.attempts = 3;
        let w = after_try(&n, Tried::Failed("HTTP 503".into()), &p, t(9_000));
        assert_eq!(w.state, NotificationState::Failed);
        assert_eq!(w.next_try_at, None);
        assert_eq!(w.last_error.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn a_delivery_counts_its_round_except_a_resolution() {
        let p = policy();
        let n = first_try(&alert(), AlertEvent::Renotified, "chat", t(5), &p);
        let w = after_try(&n, Tried::Delivered, &p, t(9));
        assert_eq!(w.state, NotificationState::Delivered);
        assert_eq!(w.notified_round, Some(t(5)));
        assert_eq!(w.failing, None);
        let n = first_try(&alert(), AlertEvent::Resolved, "chat", t(5), &p);
        assert_eq!(
            after_try(&n, Tried::Delivered, &p, t(9)).notified_round,
            None
        );
    }

    #[test]
    fn a_resolved_or_missing_alert_supersedes_its_pending_openings_and_reminders() {
        let p = policy();
        let mut a = alert();
        let opened = first_try(&a, AlertEvent::Opened, "chat", t(0), &p);
        let resolved = first_try(&a, AlertEvent::Resolved, "chat", t(0), &p);
        assert_eq!(superseded(&opened, Some(&a)), None);
        assert!(superseded(&opened, None).is_some());
        a.resolved_at = Some(t(5));
        assert!(superseded(&opened, Some(&a)).is_some());
        assert_eq!(superseded(&resolved, Some(&a)), None);
        let w = given_up(&opened, "the alert resolved", false, t(9));
        assert_eq!(w.state, NotificationState::Failed);
        assert!(w.keep_status && w.failing.is_none());
        let w = given_up(&opened, "this sink is no longer configured", true, t(9));
        assert!(
            !w.keep_status && w.failing.is_none(),
            "clears the sink's status"
        );
    }

    #[test]
    fn errors_are_cut_to_one_short_line() {
        let long = "x\n".repeat(400);
        let cut = bounded_error(&long);
        assert!(!cut.contains('\n'));
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
    }
}
