//! Values the store exchanges about inbound callbacks.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::callback::{CallbackReport, Disposition};

/// A callback to store raw, before anything else is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

impl NewCallback {
    /// A callback from `partner` with `body`, received now, without headers:
    /// its hash and size are computed from the body, its disposition is
    /// [`Disposition::Received`].
    ///
    /// ```
    /// use liaison::store::NewCallback;
    ///
    /// let callback = NewCallback::new("lab", br#"{"ref":"LAB-1"}"#.to_vec())
    ///     .header("content-type", "application/json");
    /// assert_eq!(callback.size, 15);
    /// ```
    pub fn new(partner: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        NewCallback {
            partner: partner.into(),
            received_at: crate::clock::now(),
            headers: Vec::new(),
            body_hash: hex::encode(Sha256::digest(&body)),
            size: body.len() as u64,
            body: Some(body),
            disposition: Disposition::Received,
            error: None,
        }
    }

    /// When it arrived (default: now).
    pub fn received_at(mut self, at: DateTime<Utc>) -> Self {
        self.received_at = at;
        self
    }

    /// Keep this header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Keep no body (it was above the cap); the hash and size stay.
    pub fn without_body(mut self) -> Self {
        self.body = None;
        self
    }

    /// The hash to record, when it is not the body's (a capped body).
    pub fn body_hash(mut self, hash: impl Into<String>) -> Self {
        self.body_hash = hash.into();
        self
    }

    /// The size to record, when it is not the body's (a declared size).
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// A disposition decided at once (`TooLarge`, `Rejected`), and why.
    pub fn disposition(mut self, disposition: Disposition, error: Option<String>) -> Self {
        self.disposition = disposition;
        self.error = error;
        self
    }
}

/// How a stored callback was settled after verification and parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// The signature did not verify (stored with the reason, never parsed).
    Rejected {
        /// Why.
        reason: String,
        /// Keep it as metadata only: its body and all headers but the
        /// allowlist of callbacks to unknown names are cleared in the same
        /// transaction (the engine sets it past a partner's hourly cap of
        /// stored unverified bodies).
        metadata_only: bool,
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

/// Which stored callbacks to list; newest first (oldest first with
/// [`CallbackFilter::oldest_first`]), at most `limit` (default 100).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallbackFilter {
    /// Only this partner.
    pub partner: Option<String>,
    /// Only these dispositions (any of them).
    pub dispositions: Vec<Disposition>,
    /// Only callbacks matched to this submission.
    pub submission_id: Option<crate::SubmissionId>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// The oldest first (in order of arrival) instead of the newest.
    pub oldest_first: bool,
    /// Leave the raw bodies out: each comes back as `None` (`size` and
    /// `body_hash` still describe it), so a listing that shows no body
    /// reads none.
    pub without_body: bool,
    /// The page after this callback, in the listing's order (newest first,
    /// or oldest first with [`CallbackFilter::oldest_first`]): pass the last
    /// id of the previous page. Stable while callbacks arrive.
    pub after: Option<crate::model::callback::CallbackId>,
}

impl CallbackFilter {
    /// The quarantine: malformed, rejected, expired and conflicting callbacks
    /// ([`Disposition::QUARANTINED`]; dismissed ones have left it).
    pub fn quarantined() -> Self {
        CallbackFilter {
            dispositions: Disposition::QUARANTINED.to_vec(),
            ..CallbackFilter::default()
        }
    }

    /// Only this partner.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    /// Also match this disposition.
    pub fn disposition(mut self, disposition: Disposition) -> Self {
        self.dispositions.push(disposition);
        self
    }

    /// Only callbacks matched to this submission.
    pub fn submission_id(mut self, id: crate::SubmissionId) -> Self {
        self.submission_id = Some(id);
        self
    }

    /// At most `limit` (default 100, at most 10,000).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The oldest first (in order of arrival), e.g. to work through a
    /// backlog without the newest always taking the batch.
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    /// The page after this callback (see [`CallbackFilter::after`]).
    pub fn after(mut self, id: crate::model::callback::CallbackId) -> Self {
        self.after = Some(id);
        self
    }

    /// How `seq` compares with the cursor's to come after it in the
    /// listing's order, for both stores.
    pub(crate) fn after_op(&self) -> &'static str {
        if self.oldest_first { ">" } else { "<" }
    }

    /// The SQL direction of the listing by arrival (`seq`), for both stores.
    pub(crate) fn order(&self) -> &'static str {
        if self.oldest_first { "ASC" } else { "DESC" }
    }

    /// Leave the raw bodies out (see [`CallbackFilter::without_body`]).
    pub fn without_body(mut self) -> Self {
        self.without_body = true;
        self
    }

    pub(crate) fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }
}
