//! The timeline: one event per transition or notable fact, with who and why.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::submission::{SubmissionId, SubmissionState};

/// Who caused an event: liaison itself (a named component) or a person or
/// system acting through the API.
///
/// ```
/// use liaison::Actor;
///
/// assert_eq!(Actor::system("reaper").to_string(), "system:reaper");
/// assert_eq!(Actor::person("alice@example.com").to_string(), "alice@example.com");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// A component of liaison or of the host (`system:<name>`).
    pub fn system(component: &str) -> Self {
        Actor(format!("system:{component}"))
    }

    /// A person or an external tool, by the name the host gives it.
    pub fn person(name: impl Into<String>) -> Self {
        Actor(name.into())
    }

    /// The actor's name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(s: String) -> Self {
        Actor(s)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// What an event records. Stored by its snake_case name; names that a later
/// version adds read back as [`EventKind::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The submission was written to the outbox.
    Enqueued,
    /// A worker claimed it under a fresh lease.
    Claimed,
    /// The partner accepted it and will report later.
    Accepted,
    /// It succeeded.
    Succeeded,
    /// The partner reported failure.
    Failed,
    /// An attempt failed and another is scheduled.
    RetryScheduled,
    /// liaison gave up sending.
    DeadLettered,
    /// A worker's lease expired; the submission went back to the queue.
    LeaseExpired,
    /// A result arrived under a stale lease and was not applied.
    StaleResultIgnored,
    /// The result deadline passed.
    Stuck,
    /// An actor cancelled it.
    Cancelled,
    /// An actor sent it again.
    Replayed,
    /// An actor settled it manually.
    ResolvedManually,
    /// An enqueue with the same key and payload returned this submission.
    Deduplicated,
    /// A shutdown released the lease before the attempt finished.
    Released,
    /// Held back behind an earlier submission with the same ordering key
    /// that was dead-lettered.
    Held,
    /// The partner reported progress (no state change).
    Progress,
    /// A callback arrived after the submission was cancelled or resolved manually.
    LateCallback,
    /// A callback contradicted what was already known; it was not applied.
    ConflictingCallback,
    /// The partner was asked for the status of an overdue result.
    Polled,
    /// The partner's result document was not kept (over the cap, or not
    /// readable as JSON); the marker says why.
    ResultNotKept,
    /// The host's result handler took the result.
    ResultDelivered,
    /// The host's result handler failed; delivery is retried.
    ResultDeliveryFailed,
    /// The host's result handler kept failing; the delivery is parked until
    /// someone re-runs it.
    ResultDeliveryParked,
    /// Someone re-ran a parked result delivery.
    ResultDeliveryRerun,
    /// Someone dismissed a quarantined callback about this submission.
    CallbackDismissed,
    /// Someone had a stored callback about this submission processed again
    /// (after a fix), saying why.
    CallbackReprocessed,
    /// Someone erased the submission's personal data (`forget`): its
    /// payload, result, correlation, errors and callbacks' bodies and
    /// headers, and every reason and data on its timeline before this line.
    Forgotten,
    /// Any other event name (from a newer version or a host extension).
    #[serde(untagged)]
    Other(String),
}

impl EventKind {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Claimed => "claimed",
            EventKind::Accepted => "accepted",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::LeaseExpired => "lease_expired",
            EventKind::StaleResultIgnored => "stale_result_ignored",
            EventKind::Stuck => "stuck",
            EventKind::Cancelled => "cancelled",
            EventKind::Replayed => "replayed",
            EventKind::ResolvedManually => "resolved_manually",
            EventKind::Deduplicated => "deduplicated",
            EventKind::Released => "released",
            EventKind::Held => "held",
            EventKind::Progress => "progress",
            EventKind::LateCallback => "late_callback",
            EventKind::ConflictingCallback => "conflicting_callback",
            EventKind::Polled => "polled",
            EventKind::ResultNotKept => "result_not_kept",
            EventKind::ResultDelivered => "result_delivered",
            EventKind::ResultDeliveryFailed => "result_delivery_failed",
            EventKind::ResultDeliveryParked => "result_delivery_parked",
            EventKind::ResultDeliveryRerun => "result_delivery_rerun",
            EventKind::CallbackDismissed => "callback_dismissed",
            EventKind::CallbackReprocessed => "callback_reprocessed",
            EventKind::Forgotten => "forgotten",
            EventKind::Other(name) => name,
        }
    }

    /// Parse a stored name.
    pub fn from_name(name: &str) -> Self {
        const KNOWN: [EventKind; 28] = [
            EventKind::Enqueued,
            EventKind::Claimed,
            EventKind::Accepted,
            EventKind::Succeeded,
            EventKind::Failed,
            EventKind::RetryScheduled,
            EventKind::DeadLettered,
            EventKind::LeaseExpired,
            EventKind::StaleResultIgnored,
            EventKind::Stuck,
            EventKind::Cancelled,
            EventKind::Replayed,
            EventKind::ResolvedManually,
            EventKind::Deduplicated,
            EventKind::Released,
            EventKind::Held,
            EventKind::Progress,
            EventKind::LateCallback,
            EventKind::ConflictingCallback,
            EventKind::Polled,
            EventKind::ResultNotKept,
            EventKind::ResultDelivered,
            EventKind::ResultDeliveryFailed,
            EventKind::ResultDeliveryParked,
            EventKind::ResultDeliveryRerun,
            EventKind::CallbackDismissed,
            EventKind::CallbackReprocessed,
            EventKind::Forgotten,
        ];
        KNOWN
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or_else(|| EventKind::Other(name.to_owned()))
    }

    /// The event a plain move between two states is recorded as.
    pub(crate) fn for_transition(from: SubmissionState, to: SubmissionState) -> Self {
        use SubmissionState::*;
        match (from, to) {
            (_, InFlight) => EventKind::Claimed,
            (_, AwaitingResult) => EventKind::Accepted,
            (_, Succeeded) => EventKind::Succeeded,
            (_, Failed) => EventKind::Failed,
            (InFlight, Queued) => EventKind::RetryScheduled,
            (_, Queued) => EventKind::Replayed,
            (_, DeadLettered) => EventKind::DeadLettered,
            (_, Stuck) => EventKind::Stuck,
            (_, Cancelled) => EventKind::Cancelled,
            (_, ResolvedManually) => EventKind::ResolvedManually,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One line of a submission's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The line's place in its submission's timeline: store-assigned,
    /// increasing in the order lines were written, compared only within one
    /// timeline (a timeline is in this order). Two routine lines are not
    /// written but read from rows written anyway, and numbered into their
    /// places: a stored line whose row in the store has `seq` s is 2s, the
    /// first line, `enqueued` (read from the submission's row), is 0, and
    /// each `claimed` line (read from its attempt) is 2s + 1, s being the
    /// last line written before the claim. Where an earlier build of
    /// liaison stored those lines, they are read as stored (2s).
    pub seq: i64,
    /// The submission.
    pub submission_id: SubmissionId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// State before, for transitions.
    pub from_state: Option<SubmissionState>,
    /// State after, for transitions.
    pub to_state: Option<SubmissionState>,
    /// Who did it.
    pub actor: Actor,
    /// Why, in words (an error, a partner reason, an operator's note).
    pub reason: Option<String>,
    /// Structured details (attempt number, HTTP status, lease token...).
    pub data: Option<Value>,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// The partner accepted; its result comes later.
    Accepted,
    /// The partner processed it successfully within the request.
    Succeeded,
    /// The partner processed it and reported failure within the request.
    Failed,
    /// A temporary failure (5xx, connection error, ...).
    Transient,
    /// The partner asked us to slow down.
    RateLimited,
    /// The partner refused it for good (4xx).
    Permanent,
    /// The attempt ran past its timeout.
    Timeout,
    /// The worker's lease expired before it reported (crash or stall).
    LeaseExpired,
    /// The submission was cancelled while the attempt ran.
    Cancelled,
    /// The engine shut down before the attempt finished; its lease was released.
    Interrupted,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Transient => "transient",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::Permanent => "permanent",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::LeaseExpired => "lease_expired",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Interrupted => "interrupted",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        use AttemptOutcome::*;
        [
            Accepted,
            Succeeded,
            Failed,
            Transient,
            RateLimited,
            Permanent,
            Timeout,
            LeaseExpired,
            Cancelled,
            Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
    }
}

/// One try at sending a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// The submission.
    pub submission_id: SubmissionId,
    /// 1 for the first attempt.
    pub number: u32,
    /// When the claim started it.
    pub started_at: DateTime<Utc>,
    /// When its result was recorded; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended; `None` while running.
    pub outcome: Option<AttemptOutcome>,
    /// The HTTP status the partner answered, if any.
    pub http_status: Option<u16>,
    /// The error, if it failed.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_round_trip_and_tolerate_unknown_names() {
        for name in [
            "enqueued",
            "lease_expired",
            "stale_result_ignored",
            "replayed",
        ] {
            assert_eq!(EventKind::from_name(name).as_str(), name);
        }
        assert_eq!(
            EventKind::from_name("callback_received"),
            EventKind::Other("callback_received".into())
        );
        for o in ["accepted", "rate_limited", "lease_expired"] {
            assert_eq!(AttemptOutcome::from_name(o).unwrap().as_str(), o);
        }
    }
}
