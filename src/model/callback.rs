//! What happened to one inbound callback, and what to answer the partner.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::event::Actor;
use crate::model::result::ResultDocument;
use crate::model::submission::SubmissionId;

/// A stored callback's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallbackId(Uuid);

crate::id::uuid_id!(CallbackId, "callback id");

impl CallbackId {
    pub(crate) fn new() -> Self {
        CallbackId(Uuid::now_v7())
    }
}

/// What liaison did with a callback.
///
/// | disposition | HTTP answer | meaning |
/// |---|---|---|
/// | `Applied` | 200 | the submission's state changed once (or progress was noted) |
/// | `Duplicate` | 200 | seen before (event id, body, or the submission already has this outcome); not applied again |
/// | `Conflicting` | 200 | same event or a settled submission, different outcome; stored and flagged, not applied |
/// | `Late` | 200 | the submission was cancelled or resolved manually; noted on its timeline |
/// | `Unmatched` | 202 | no submission matches yet; kept and matched when the reference appears |
/// | `Expired` | — | was `Unmatched` past the configured time; quarantined |
/// | `Malformed` | 400 | could not be parsed; quarantined, reprocessable |
/// | `Rejected` | 401 | signature invalid, or unknown partner (answered alike); stored, never parsed |
/// | `TooLarge` | 413 | body above the cap; its metadata is stored, not the body |
/// | `Incomplete` | 400 | the client stopped sending before the body ended (it disconnected); its metadata is stored |
/// | `Received` | — | stored, not processed yet (a crash in between leaves this) |
/// | `Dismissed` | — | was quarantined; an operator dismissed it with a reason ([`Dismissal`]); reprocessable on purpose |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Disposition {
    /// Stored, not processed yet.
    Received,
    /// Applied to its submission.
    Applied,
    /// A repeat; not applied again.
    Duplicate,
    /// Contradicts what is known; flagged, not applied.
    Conflicting,
    /// About a submission that was cancelled or resolved manually.
    Late,
    /// No submission matches yet.
    Unmatched,
    /// Unmatched for too long; quarantined.
    Expired,
    /// Could not be parsed; quarantined.
    Malformed,
    /// Signature invalid or partner unknown.
    Rejected,
    /// Body above the size cap.
    TooLarge,
    /// The client stopped sending before the body ended (it disconnected
    /// or the connection broke); nothing of the body is kept.
    Incomplete,
    /// Was quarantined; an operator dismissed it with a reason (who, when,
    /// why and what it was are in [`StoredCallback::dismissal`]). It left
    /// the quarantine; it can still be reprocessed on purpose.
    Dismissed,
}

impl Disposition {
    const ALL: [Disposition; 12] = [
        Disposition::Received,
        Disposition::Applied,
        Disposition::Duplicate,
        Disposition::Conflicting,
        Disposition::Late,
        Disposition::Unmatched,
        Disposition::Expired,
        Disposition::Malformed,
        Disposition::Rejected,
        Disposition::TooLarge,
        Disposition::Incomplete,
        Disposition::Dismissed,
    ];

    /// The quarantine: what waits for an operator to reprocess or dismiss it.
    pub const QUARANTINED: [Disposition; 4] = [
        Disposition::Malformed,
        Disposition::Rejected,
        Disposition::Expired,
        Disposition::Conflicting,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Received => "received",
            Disposition::Applied => "applied",
            Disposition::Duplicate => "duplicate",
            Disposition::Conflicting => "conflicting",
            Disposition::Late => "late",
            Disposition::Unmatched => "unmatched",
            Disposition::Expired => "expired",
            Disposition::Malformed => "malformed",
            Disposition::Rejected => "rejected",
            Disposition::TooLarge => "too_large",
            Disposition::Incomplete => "incomplete",
            Disposition::Dismissed => "dismissed",
        }
    }

    /// The HTTP status to answer the partner with.
    pub fn http_status(self) -> u16 {
        match self {
            Disposition::Applied
            | Disposition::Duplicate
            | Disposition::Conflicting
            | Disposition::Late
            | Disposition::Dismissed => 200,
            Disposition::Unmatched | Disposition::Received | Disposition::Expired => 202,
            Disposition::Malformed | Disposition::Incomplete => 400,
            Disposition::Rejected => 401,
            Disposition::TooLarge => 413,
        }
    }

    /// Waiting for an operator (reprocess, or dismiss with a reason): one of
    /// [`Disposition::QUARANTINED`].
    pub fn is_quarantined(self) -> bool {
        Disposition::QUARANTINED.contains(&self)
    }

    /// May be processed (again): not yet settled, unmatched, quarantined
    /// for a reason a fix can remove (a conflict is a fact, not a fault), or
    /// dismissed (reprocessed on purpose).
    pub fn is_reprocessable(self) -> bool {
        matches!(
            self,
            Disposition::Received
                | Disposition::Unmatched
                | Disposition::Expired
                | Disposition::Malformed
                | Disposition::Rejected
                | Disposition::Dismissed
        )
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Disposition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Disposition::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| Error::invalid("disposition", format!("unknown disposition {s:?}")))
    }
}

/// The answer to [`crate::Liaison::ingest_callback`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CallbackReceipt {
    /// The stored callback.
    pub callback_id: CallbackId,
    /// What was done with it.
    pub disposition: Disposition,
    /// The HTTP status to answer the partner with.
    pub http_status: u16,
    /// The submission it was matched to, if any.
    pub submission_id: Option<SubmissionId>,
    /// Why, for the non-applied dispositions (parse error, signature failure...).
    pub detail: Option<String>,
}

/// A callback as stored (the raw body is `None` above the cap or once purged).
///
/// `Debug` shows the header names and the body's length only: header values
/// carry credentials and the body personal data.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoredCallback {
    /// Its id.
    pub id: CallbackId,
    /// The partner it came from (as named in the URL).
    pub partner: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The headers kept with it.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Option<Vec<u8>>,
    /// SHA-256 of the raw body, hex.
    pub body_hash: String,
    /// Size of the body in bytes.
    pub size: u64,
    /// The partner's event id, once parsed.
    pub event_id: Option<String>,
    /// What it correlates by, once parsed.
    pub correlation: Option<Correlation>,
    /// What was done with it.
    pub disposition: Disposition,
    /// Why (parse error, signature failure, conflict...).
    pub error: Option<String>,
    /// The submission it was matched to.
    pub submission_id: Option<SubmissionId>,
    /// When it was last processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// Its dismissal from the quarantine, if an operator dismissed it. Kept
    /// when it is reprocessed afterwards, as its history.
    pub dismissal: Option<Dismissal>,
}

/// An operator's dismissal of a quarantined callback: who, when, why, and
/// what it was before ([`crate::Liaison::dismiss_callback`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Dismissal {
    /// Who dismissed it.
    pub actor: Actor,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, in their words.
    pub reason: String,
    /// Its disposition before: one of [`Disposition::QUARANTINED`].
    pub from: Disposition,
}

impl fmt::Debug for StoredCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("StoredCallback")
            .field("id", &self.id)
            .field("partner", &self.partner)
            .field("received_at", &self.received_at)
            .field("header_names", &header_names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .field("body_hash", &self.body_hash)
            .field("size", &self.size)
            .field("event_id", &self.event_id)
            .field("correlation", &self.correlation)
            .field("disposition", &self.disposition)
            .field("error", &self.error)
            .field("submission_id", &self.submission_id)
            .field("processed_at", &self.processed_at)
            .field("dismissal", &self.dismissal)
            .finish()
    }
}

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
    /// The partner's result document, when the callback carries one (kept
    /// with the submission it settles, up to the partner's cap).
    pub result: Option<ResultDocument>,
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
            result: None,
        }
    }

    /// The partner's id for this event, used to recognise repeats.
    pub fn event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// The partner's result document this callback carries.
    pub fn result(mut self, document: serde_json::Value) -> Self {
        self.result = Some(ResultDocument::Json { document });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_header_names_and_the_body_length_only() {
        let stored = StoredCallback {
            id: CallbackId::new(),
            partner: "lab".into(),
            received_at: Utc::now(),
            headers: vec![
                ("authorization".into(), "Bearer TOKEN".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Some(b"{\"patient\":\"PATIENT\"}".to_vec()),
            body_hash: "abc".into(),
            size: 21,
            event_id: Some("evt-1".into()),
            correlation: None,
            disposition: Disposition::Applied,
            error: None,
            submission_id: None,
            processed_at: None,
            dismissal: None,
        };
        for shown in [format!("{stored:?}"), format!("{stored:#?}")] {
            for secret in ["TOKEN", "PATIENT", "Bearer", "application/json"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("authorization"), "{shown}");
            assert!(shown.contains("content-type"), "{shown}");
            assert!(shown.contains("evt-1"), "{shown}");
            assert!(shown.contains("21"), "{shown}");
        }
    }

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

    #[test]
    fn dispositions_round_trip_and_answer_as_documented() {
        for d in Disposition::ALL {
            assert_eq!(d.as_str().parse::<Disposition>().unwrap(), d);
        }
        assert_eq!(Disposition::Applied.http_status(), 200);
        assert_eq!(Disposition::Duplicate.http_status(), 200);
        assert_eq!(Disposition::Unmatched.http_status(), 202);
        assert_eq!(Disposition::Malformed.http_status(), 400);
        assert_eq!(Disposition::Rejected.http_status(), 401);
        assert_eq!(Disposition::TooLarge.http_status(), 413);
        assert!(Disposition::Malformed.is_quarantined());
        assert!(!Disposition::Applied.is_reprocessable());
        // Dismissed: out of the quarantine, reprocessable on purpose.
        assert!(!Disposition::Dismissed.is_quarantined());
        assert!(Disposition::Dismissed.is_reprocessable());
        assert!(!Disposition::Conflicting.is_reprocessable());
    }
}
