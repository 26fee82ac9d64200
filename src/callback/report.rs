//! What a partner's callback says, once parsed: which submission, which
//! event, which outcome.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::InboundCallback;
use super::signature::SignatureError;
use crate::submission::SubmissionId;

/// How a callback names the submission it is about — in the partner's own
/// terms. The partner is never required to echo a token of ours.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Correlation {
    /// The reference the partner returned when it accepted the submission.
    ExternalRef(String),
    /// Our submission id (when the partner echoes it).
    SubmissionId(SubmissionId),
    /// The idempotency key we sent (often the host's own business key).
    IdempotencyKey(String),
}

impl Correlation {
    /// The stored form, `ref:…`, `id:…` or `key:…`.
    pub(crate) fn to_stored(&self) -> String {
        match self {
            Correlation::ExternalRef(r) => format!("ref:{r}"),
            Correlation::SubmissionId(id) => format!("id:{id}"),
            Correlation::IdempotencyKey(k) => format!("key:{k}"),
        }
    }

    /// Parse the stored form.
    pub(crate) fn from_stored(s: &str) -> Option<Self> {
        let (kind, value) = s.split_once(':')?;
        match kind {
            "ref" => Some(Correlation::ExternalRef(value.to_owned())),
            "id" => value.parse().ok().map(Correlation::SubmissionId),
            "key" => Some(Correlation::IdempotencyKey(value.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Correlation::ExternalRef(r) => write!(f, "partner reference {r:?}"),
            Correlation::SubmissionId(id) => write!(f, "submission id {id}"),
            Correlation::IdempotencyKey(k) => write!(f, "idempotency key {k:?}"),
        }
    }
}

/// The outcome a callback reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReportedOutcome {
    /// The partner processed the submission.
    Succeeded,
    /// The partner could not process it.
    Failed {
        /// The partner's reason.
        reason: String,
    },
    /// Still in progress; noted on the timeline, no state change.
    Progress {
        /// The partner's words, if any.
        note: Option<String>,
    },
}

/// A parsed callback.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallbackReport {
    /// Which submission it is about.
    pub correlation: Correlation,
    /// The partner's id for this event, used to recognise repeats.
    pub event_id: Option<String>,
    /// What it reports.
    pub outcome: ReportedOutcome,
}

impl CallbackReport {
    /// A report that `outcome` happened to the submission `correlation`
    /// names, without an event id.
    ///
    /// ```
    /// use liaison::callback::{CallbackReport, Correlation, ReportedOutcome};
    ///
    /// let report = CallbackReport::new(Correlation::ExternalRef("LAB-1".into()), ReportedOutcome::Succeeded)
    ///     .event_id("evt_1");
    /// assert_eq!(report.event_id.as_deref(), Some("evt_1"));
    /// ```
    pub fn new(correlation: Correlation, outcome: ReportedOutcome) -> Self {
        CallbackReport {
            correlation,
            event_id: None,
            outcome,
        }
    }

    /// The partner's id for this event, used to recognise repeats.
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }
}

/// A callback that could not be understood; it is quarantined with this
/// reason and answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed callback: {reason}")]
#[non_exhaustive]
pub struct MalformedCallback {
    /// What was wrong, for the quarantine list.
    pub reason: String,
}

impl MalformedCallback {
    /// A malformed-callback error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        MalformedCallback {
            reason: reason.into(),
        }
    }
}

/// Turns a partner's callback into a [`CallbackReport`]: first checks it
/// came from the partner, then reads it in the partner's own format.
///
/// Verification fails closed: a matcher always has a verifier, and not
/// verifying is the explicit [`super::Unverified`].
pub trait CallbackMatcher: Send + Sync + fmt::Debug {
    /// Check the callback's signature (or other proof of origin).
    fn verify(
        &self,
        callback: &InboundCallback,
        now: std::time::SystemTime,
    ) -> Result<(), SignatureError>;

    /// Read the callback. Called only after `verify` succeeded.
    fn parse(&self, callback: &InboundCallback) -> Result<CallbackReport, MalformedCallback>;

    /// The verification scheme, for health and logs ("unverified" is a risk).
    fn scheme(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn _object_safe(_: Box<dyn CallbackMatcher>) {}

    #[test]
    fn correlations_round_trip_through_their_stored_form() {
        let id = SubmissionId::new();
        for c in [
            Correlation::ExternalRef("MP-1:x".into()),
            Correlation::SubmissionId(id),
            Correlation::IdempotencyKey("C-1".into()),
        ] {
            assert_eq!(Correlation::from_stored(&c.to_stored()), Some(c));
        }
        assert_eq!(Correlation::from_stored("id:not-a-uuid"), None);
        assert_eq!(Correlation::from_stored("nothing"), None);
    }
}
