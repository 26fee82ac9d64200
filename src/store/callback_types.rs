//! Values the store exchanges about inbound callbacks.

use chrono::{DateTime, Utc};

use crate::callback::{CallbackReport, Disposition};

/// A callback to store raw, before anything else is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    /// The partner named by the request (stored even when unknown).
    pub partner: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// Headers to keep (signature headers are needed to reprocess it).
    pub headers: Vec<(String, String)>,
    /// The raw body; `None` when it was above the cap.
    pub body: Option<Vec<u8>>,
    /// SHA-256 of the body as received, hex (of the part read, when capped).
    pub body_hash: String,
    /// The body's size in bytes (as declared or read).
    pub size: u64,
    /// `Received`, or `TooLarge` / `Rejected` when that is known at once.
    pub disposition: Disposition,
    /// Why, for a disposition decided at once.
    pub error: Option<String>,
}

/// How a stored callback was settled after verification and parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The signature did not verify (stored with the reason, never parsed).
    Rejected {
        /// Why.
        reason: String,
    },
    /// It could not be parsed.
    Malformed {
        /// The parse error.
        reason: String,
    },
    /// It parsed: match it and apply it, exactly once.
    Report {
        /// What it says.
        report: CallbackReport,
        /// If nothing matches yet, keep it this long for a late match.
        unmatched_until: DateTime<Utc>,
    },
}

/// Which stored callbacks to list; newest first, at most `limit` (default 100).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackFilter {
    /// Only this partner.
    pub partner: Option<String>,
    /// Only these dispositions (any of them).
    pub dispositions: Vec<Disposition>,
    /// Only callbacks matched to this submission.
    pub submission_id: Option<crate::SubmissionId>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<usize>,
}

impl CallbackFilter {
    /// The quarantine: malformed, rejected, expired and conflicting callbacks.
    pub fn quarantined() -> Self {
        CallbackFilter {
            dispositions: vec![
                Disposition::Malformed,
                Disposition::Rejected,
                Disposition::Expired,
                Disposition::Conflicting,
            ],
            ..CallbackFilter::default()
        }
    }

    /// Only this partner.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    pub(crate) fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}
