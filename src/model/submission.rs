//! Submissions: what the host asks liaison to deliver, and the states they go through.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::result::ResultDocument;

use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;

/// Longest accepted idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Longest accepted partner name, in bytes.
pub const MAX_PARTNER_BYTES: usize = 64;
/// Longest accepted submission kind, in bytes.
pub const MAX_KIND_BYTES: usize = 128;
/// Most correlation fields one submission may carry.
pub const MAX_CORRELATION_FIELDS: usize = 16;
/// Longest accepted correlation field name or value, in bytes.
pub const MAX_CORRELATION_BYTES: usize = 255;
/// Largest accepted business value, in minor units: 2^53, the largest
/// integer every JSON reader keeps exactly. Sums of many such values still
/// fit the stores' 64-bit counters.
pub const MAX_BUSINESS_VALUE: i64 = 1 << 53;
/// Deepest nesting of arrays and objects accepted in a payload or in event
/// data: what `serde_json` reads back (its recursion limit is 128 levels,
/// the outermost one included). Deeper JSON would be stored but unreadable.
pub(crate) const MAX_JSON_DEPTH: usize = 127;

/// A submission's identifier: a UUIDv7, so ids sort by creation time.
///
/// ```
/// use liaison::SubmissionId;
///
/// let id = SubmissionId::new();
/// let parsed: SubmissionId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubmissionId(Uuid);

crate::id::uuid_id!(SubmissionId, "submission id");

impl SubmissionId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        SubmissionId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for SubmissionId {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a submission is in its life.
///
/// ```text
/// Queued --claim--> InFlight --accepted--> AwaitingResult --result--> Succeeded | Failed
///                   InFlight --completed synchronously--> Succeeded | Failed
///                   InFlight --transient error / lease expired--> Queued
///                   InFlight --permanent error / retries exhausted--> DeadLettered
///                   AwaitingResult --deadline passed--> Stuck --late result--> Succeeded | Failed
/// Failed | DeadLettered | Stuck --replay--> Queued;  --resolve--> ResolvedManually
/// any state that is not terminal --cancel--> Cancelled
/// ```
///
/// [`SubmissionState::can_become`] is the table; every store refuses a change
/// that is not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmissionState {
    /// Waiting to be sent (first time, or for a retry once `due_at` passes).
    Queued,
    /// Claimed by a worker holding a lease; an attempt is under way.
    InFlight,
    /// The partner accepted it and will report the result later.
    AwaitingResult,
    /// The partner reported success.
    Succeeded,
    /// The partner reported that it could not process it.
    Failed,
    /// liaison gave up sending it (permanent error or retries exhausted).
    DeadLettered,
    /// The result did not arrive before its deadline.
    Stuck,
    /// Cancelled by an actor.
    Cancelled,
    /// Settled by a person outside the partner flow.
    ResolvedManually,
}

impl SubmissionState {
    /// Every state, in the order of the table above.
    pub const ALL: [SubmissionState; 9] = [
        SubmissionState::Queued,
        SubmissionState::InFlight,
        SubmissionState::AwaitingResult,
        SubmissionState::Succeeded,
        SubmissionState::Failed,
        SubmissionState::DeadLettered,
        SubmissionState::Stuck,
        SubmissionState::Cancelled,
        SubmissionState::ResolvedManually,
    ];

    /// The transition table: may a submission in `self` move to `to`?
    ///
    /// ```
    /// use liaison::SubmissionState::*;
    ///
    /// assert!(Queued.can_become(InFlight));
    /// assert!(Stuck.can_become(Succeeded)); // a late but real result still counts
    /// assert!(!Succeeded.can_become(Queued)); // success is final
    /// ```
    pub fn can_become(self, to: SubmissionState) -> bool {
        use SubmissionState::*;
        match (self, to) {
            (Queued, InFlight) => true,
            (InFlight, AwaitingResult | Succeeded | Failed | Queued | DeadLettered) => true,
            (AwaitingResult, Succeeded | Failed | Stuck) => true,
            (Stuck, Succeeded | Failed) => true,
            (Failed | DeadLettered | Stuck, Queued | ResolvedManually) => true,
            (from, Cancelled) => !from.is_terminal(),
            _ => false,
        }
    }

    /// Terminal states see no further automatic progress. `Failed` and
    /// `DeadLettered` can still be replayed by an actor; `Succeeded`,
    /// `Cancelled` and `ResolvedManually` are final.
    pub fn is_terminal(self) -> bool {
        use SubmissionState::*;
        matches!(
            self,
            Succeeded | Failed | DeadLettered | Cancelled | ResolvedManually
        )
    }

    /// The stable lower-case name used in the database, logs and JSON.
    pub fn as_str(self) -> &'static str {
        use SubmissionState::*;
        match self {
            Queued => "queued",
            InFlight => "in_flight",
            AwaitingResult => "awaiting_result",
            Succeeded => "succeeded",
            Failed => "failed",
            DeadLettered => "dead_lettered",
            Stuck => "stuck",
            Cancelled => "cancelled",
            ResolvedManually => "resolved_manually",
        }
    }
}

impl fmt::Display for SubmissionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SubmissionState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SubmissionState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown state {s:?}")))
    }
}

/// A request to deliver one payload to one partner.
///
/// Build it with [`NewSubmission::new`] and the chained setters; validation
/// happens when it is enqueued, so a bad value is an error there, never a panic.
///
/// ```
/// use liaison::NewSubmission;
/// use serde_json::json;
///
/// let claim = NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-1042"}))
///     .idempotency_key("C-1042") // the host's own business key
///     .ordering_key("patient-77")
///     .correlation("claim_id", "C-1042")
///     .business_value(12_500) // minor units: 125.00
///     .priority(5);
/// assert_eq!(claim.key(), Some("C-1042"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewSubmission {
    pub(crate) partner: String,
    pub(crate) kind: String,
    pub(crate) payload: Value,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) ordering_key: Option<String>,
    pub(crate) correlation: BTreeMap<String, String>,
    pub(crate) business_value: Option<i64>,
    pub(crate) currency: Option<String>,
    pub(crate) business_deadline: Option<DateTime<Utc>>,
    pub(crate) priority: i32,
    pub(crate) not_before: Option<DateTime<Utc>>,
}

impl NewSubmission {
    /// A submission of `kind` to `partner` carrying `payload`.
    pub fn new(partner: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        NewSubmission {
            partner: partner.into(),
            kind: kind.into(),
            payload,
            idempotency_key: None,
            ordering_key: None,
            correlation: BTreeMap::new(),
            business_value: None,
            currency: None,
            business_deadline: None,
            priority: 0,
            not_before: None,
        }
    }

    /// Like [`NewSubmission::new`], serializing any `Serialize` payload.
    pub fn from_serialize<T: Serialize + ?Sized>(
        partner: impl Into<String>,
        kind: impl Into<String>,
        payload: &T,
    ) -> Result<Self> {
        let value =
            serde_json::to_value(payload).map_err(|e| Error::invalid("payload", e.to_string()))?;
        Ok(Self::new(partner, kind, value))
    }

    /// The idempotency key: the host's own business key (a claim id, an order
    /// number). Without one, a fresh key is generated at enqueue, which makes
    /// every enqueue a new submission. Keys are per partner, non-empty, at most
    /// 255 bytes, without control characters.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Submissions of one partner with the same ordering key are sent one at a
    /// time, in enqueue order.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// A field the host wants to find this submission by (and that a partner's
    /// callback may name), e.g. `("claim_id", "C-1042")`: list the
    /// submissions holding it with [`crate::store::ListFilter::correlation`],
    /// an exact match on one field, served by an index. Names are ASCII
    /// letters, digits, `_`, `-`, `.`, `:` or `/`, values any text without
    /// control characters, both non-empty and at most
    /// [`MAX_CORRELATION_BYTES`]; at most [`MAX_CORRELATION_FIELDS`] fields.
    pub fn correlation(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.correlation.insert(name.into(), value.into());
        self
    }

    /// What this submission is worth to the business, in minor units (cents),
    /// used to report value at risk. From 0 to [`MAX_BUSINESS_VALUE`].
    /// Without [`NewSubmission::currency`] it is reported as "currency
    /// unspecified", in sums of its own.
    pub fn business_value(mut self, minor_units: i64) -> Self {
        self.business_value = Some(minor_units);
        self
    }

    /// The ISO 4217 currency of [`NewSubmission::business_value`], by its
    /// upper-case code (`"EUR"`, `"JPY"`). Values are summed per currency,
    /// never across. A code that is not ISO 4217 is refused at enqueue
    /// ([`Error::InvalidInput`] naming `currency`).
    pub fn currency(mut self, code: impl Into<String>) -> Self {
        self.currency = Some(code.into());
        self
    }

    /// [`NewSubmission::business_value`] and [`NewSubmission::currency`] at
    /// once: `business_value_in(12_500, "EUR")` is EUR 125.00.
    ///
    /// ```
    /// use liaison::NewSubmission;
    /// use serde_json::json;
    ///
    /// let claim = NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-7"}))
    ///     .business_value_in(12_500, "EUR");
    /// # let _ = claim;
    /// ```
    pub fn business_value_in(self, minor_units: i64, currency: impl Into<String>) -> Self {
        self.business_value(minor_units).currency(currency)
    }

    /// When the business needs this work done (e.g. a claim's timely-filing
    /// limit, an order's promised date). Health reports open work that will
    /// miss it within the partner's lead time
    /// ([`crate::Partner::deadline_lead_time`], default 24 h) and work that
    /// missed it; a deadline before the enqueue time is refused
    /// ([`Error::InvalidInput`] naming `business_deadline`). Replay keeps it.
    pub fn business_deadline(mut self, at: DateTime<Utc>) -> Self {
        self.business_deadline = Some(at);
        self
    }

    /// Higher is claimed first among due work. Default 0.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Do not send before this time.
    pub fn not_before(mut self, at: DateTime<Utc>) -> Self {
        self.not_before = Some(at);
        self
    }

    /// The partner name.
    pub fn partner(&self) -> &str {
        &self.partner
    }

    /// The idempotency key, if the host gave one.
    pub fn key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// Check every field and compute what the store needs. Nothing here
    /// touches storage, so a refused submission writes nothing.
    pub(crate) fn validate(self, max_payload_bytes: usize) -> Result<ValidSubmission> {
        validate_name("partner", &self.partner, MAX_PARTNER_BYTES)?;
        validate_name("kind", &self.kind, MAX_KIND_BYTES)?;
        let key = match self.idempotency_key {
            Some(key) => {
                validate_key("idempotency_key", &key)?;
                key
            }
            None => Uuid::now_v7().to_string(),
        };
        if let Some(ordering) = &self.ordering_key {
            validate_key("ordering_key", ordering)?;
        }
        if self.correlation.len() > MAX_CORRELATION_FIELDS {
            return Err(Error::invalid(
                "correlation",
                format!(
                    "{} fields; at most {MAX_CORRELATION_FIELDS} are allowed",
                    self.correlation.len()
                ),
            ));
        }
        for (name, value) in &self.correlation {
            validate_correlation(name, value)?;
        }
        if let Some(value) = self.business_value {
            if value < 0 {
                return Err(Error::invalid(
                    "business_value",
                    "must not be negative (minor units)",
                ));
            }
            if value > MAX_BUSINESS_VALUE {
                return Err(Error::invalid(
                    "business_value",
                    format!(
                        "{value} is above the largest accepted value, {MAX_BUSINESS_VALUE} (2^53 minor units)"
                    ),
                ));
            }
        }
        let currency = self
            .currency
            .as_deref()
            .map(crate::model::money::Currency::from_code)
            .transpose()?;
        if let Some(deadline) = self.business_deadline
            && deadline < Utc::now()
        {
            return Err(Error::invalid(
                "business_deadline",
                format!(
                    "{} is before the enqueue time",
                    deadline.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ));
        }
        check_depth("payload", &self.payload)?;
        let (fingerprint, canonical_len) = Fingerprint::of_json(&self.payload);
        if canonical_len > max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: canonical_len,
                limit: max_payload_bytes,
            });
        }
        let payload_json = serde_json::to_string(&self.payload)
            .map_err(|e| Error::invalid("payload", e.to_string()))?;
        Ok(ValidSubmission {
            partner: self.partner,
            kind: self.kind,
            payload: self.payload,
            payload_json,
            fingerprint,
            plain_fingerprint: fingerprint,
            idempotency_key: key,
            ordering_key: self.ordering_key,
            correlation: self.correlation,
            business_value: self.business_value,
            currency,
            business_deadline: self.business_deadline,
            priority: self.priority,
            not_before: self.not_before,
        })
    }
}

/// A [`NewSubmission`] that passed validation.
#[derive(Debug, Clone)]
pub(crate) struct ValidSubmission {
    pub(crate) partner: String,
    pub(crate) kind: String,
    /// The payload, and [`ValidSubmission::payload_json`] its stored text.
    pub(crate) payload: Value,
    pub(crate) payload_json: String,
    /// The fingerprint the store records: keyed with the store's secret
    /// by `store::common::validate` (plain until then).
    pub(crate) fingerprint: Fingerprint,
    /// The plain SHA-256 fingerprint, compared with ledger rows written
    /// before fingerprints were keyed.
    pub(crate) plain_fingerprint: Fingerprint,
    pub(crate) idempotency_key: String,
    pub(crate) ordering_key: Option<String>,
    pub(crate) correlation: BTreeMap<String, String>,
    pub(crate) business_value: Option<i64>,
    pub(crate) currency: Option<crate::model::money::Currency>,
    pub(crate) business_deadline: Option<DateTime<Utc>>,
    pub(crate) priority: i32,
    pub(crate) not_before: Option<DateTime<Utc>>,
}

/// A name: non-empty, bounded, printable ASCII without spaces.
fn validate_name(field: &'static str, value: &str, max: usize) -> Result<()> {
    validate_text(field, value, max)?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
    {
        return Err(Error::invalid(
            field,
            format!(
                "character {c:?} is not allowed; use letters, digits, '_', '-', '.', ':' or '/'"
            ),
        ));
    }
    Ok(())
}

/// An idempotency or ordering key: non-empty, at most 255 bytes, no control characters.
fn validate_key(field: &'static str, value: &str) -> Result<()> {
    validate_text(field, value, MAX_KEY_BYTES)
}

fn validate_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("{} bytes; at most {max} are allowed", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "control characters are not allowed"));
    }
    Ok(())
}

/// Refuse JSON nested deeper than [`MAX_JSON_DEPTH`] arrays and objects
/// (counted without recursion, so any depth is safe to check).
pub(crate) fn check_depth(field: &'static str, value: &Value) -> Result<()> {
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth + 1 > MAX_JSON_DEPTH {
            return Err(Error::invalid(
                field,
                format!("nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"),
            ));
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    Ok(())
}

/// Validate every submission of a batch; an error names the item (after
/// the first) it is about.
pub(crate) fn validate_batch(
    batch: Vec<NewSubmission>,
    max_payload_bytes: usize,
) -> Result<Vec<ValidSubmission>> {
    batch
        .into_iter()
        .enumerate()
        .map(|(i, new)| {
            new.validate(max_payload_bytes).map_err(|e| match e {
                Error::InvalidInput { field, reason } if i > 0 => Error::InvalidInput {
                    field,
                    reason: format!("batch item {i}: {reason}"),
                },
                other => other,
            })
        })
        .collect()
}

/// Validate a partner name the way enqueue does (for APIs that take one).
pub(crate) fn validate_partner(partner: &str) -> Result<()> {
    validate_name("partner", partner, MAX_PARTNER_BYTES)
}

/// Validate one correlation field, name and value: what enqueue accepts,
/// and so all a lookup by correlation can ever find.
pub(crate) fn validate_correlation(name: &str, value: &str) -> Result<()> {
    validate_name("correlation field name", name, MAX_CORRELATION_BYTES)?;
    validate_text("correlation field value", value, MAX_CORRELATION_BYTES)
}

/// Validate a (partner, idempotency key) to look a submission up by, the
/// way enqueue validates them: a key enqueue would refuse is no one's.
pub(crate) fn validate_lookup(partner: &str, key: &str) -> Result<()> {
    validate_partner(partner)?;
    validate_key("idempotency_key", key)
}

/// One submission as stored.
///
/// Built by the stores only (`#[non_exhaustive]`): read its fields, get one
/// from [`crate::store::OutboxStore`]. The retry-cycle bookkeeping is read
/// through [`Submission::attempts_in_cycle`] and
/// [`Submission::cycle_started_at`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Submission {
    /// Its id.
    pub id: SubmissionId,
    /// The partner it goes to.
    pub partner: String,
    /// What kind of request it is (the host's name, e.g. `claim.submit`).
    pub kind: String,
    /// The payload; `None` once retention purged it.
    pub payload: Option<Value>,
    /// SHA-256 of the canonical payload, kept after a purge.
    pub fingerprint: Fingerprint,
    /// The idempotency key sent on every attempt.
    pub idempotency_key: String,
    /// The ordering key, if any.
    pub ordering_key: Option<String>,
    /// Correlation fields given at enqueue.
    pub correlation: BTreeMap<String, String>,
    /// The partner's reference, once it accepted the submission.
    pub external_ref: Option<String>,
    /// Value to the business in minor units of [`Submission::currency`].
    pub business_value: Option<i64>,
    /// The currency of the business value; `None`: unspecified.
    pub currency: Option<crate::model::money::Currency>,
    /// When the business needs the work done, if the host said.
    pub business_deadline: Option<DateTime<Utc>>,
    /// Claim priority (higher first).
    pub priority: i32,
    /// Current state.
    pub state: SubmissionState,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it is next due to be sent (meaningful while `Queued`).
    pub due_at: DateTime<Utc>,
    /// Not to be sent before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// When the current lease ends (while `InFlight`).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the partner's result is due (while `AwaitingResult`).
    pub result_deadline: Option<DateTime<Utc>>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it entered its current terminal state, if it is in one.
    pub terminal_at: Option<DateTime<Utc>>,
    /// The last error recorded (attempt failure or partner reason).
    pub last_error: Option<String>,
    /// How many times an actor replayed it.
    pub replays: u32,
    /// The partner's result document, once one arrived (synchronously, by
    /// callback or poll) or an operator attached one when resolving it by
    /// hand; `None` before, and once retention purged it with the payload.
    pub result: Option<ResultDocument>,
    /// Attempts made before the current cycle (the last replay); retry
    /// limits count only the attempts after it.
    pub(crate) attempts_before_cycle: u32,
    /// When the current cycle started: enqueue, or the last replay. Retry
    /// limits measure age from here.
    pub(crate) cycle_started_at: DateTime<Utc>,
}

impl Submission {
    /// Attempts made in the current cycle (since enqueue or the last replay):
    /// the count a partner's [`crate::retry::RetryLimits::max_attempts`] is
    /// compared with. [`Submission::attempts`] counts every attempt ever
    /// started; a replay starts a new cycle, so right after one this is 0.
    pub fn attempts_in_cycle(&self) -> u32 {
        self.attempts.saturating_sub(self.attempts_before_cycle)
    }

    /// When the current cycle started: the enqueue, or the last replay. A
    /// partner's [`crate::retry::RetryLimits::max_age`] is measured from here.
    pub fn cycle_started_at(&self) -> DateTime<Utc> {
        self.cycle_started_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubmissionState::*;
    use serde_json::json;

    #[test]
    fn table_matches_design() {
        let allowed: Vec<(SubmissionState, SubmissionState)> = SubmissionState::ALL
            .into_iter()
            .flat_map(|from| SubmissionState::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        let expected = vec![
            (Queued, InFlight),
            (Queued, Cancelled),
            (InFlight, Queued),
            (InFlight, AwaitingResult),
            (InFlight, Succeeded),
            (InFlight, Failed),
            (InFlight, DeadLettered),
            (InFlight, Cancelled),
            (AwaitingResult, Succeeded),
            (AwaitingResult, Failed),
            (AwaitingResult, Stuck),
            (AwaitingResult, Cancelled),
            (Failed, Queued),
            (Failed, ResolvedManually),
            (DeadLettered, Queued),
            (DeadLettered, ResolvedManually),
            (Stuck, Queued),
            (Stuck, Succeeded),
            (Stuck, Failed),
            (Stuck, Cancelled),
            (Stuck, ResolvedManually),
        ];
        assert_eq!(allowed, expected);
    }

    #[test]
    fn state_names_round_trip() {
        for state in SubmissionState::ALL {
            assert_eq!(state.as_str().parse::<SubmissionState>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("nope".parse::<SubmissionState>().is_err());
    }

    #[test]
    fn keys_are_validated() {
        let base = || NewSubmission::new("p", "k", json!({}));
        let too_long = "x".repeat(256);
        for (bad, field) in [
            (base().idempotency_key(""), "idempotency_key"),
            (base().idempotency_key(too_long.clone()), "idempotency_key"),
            (base().idempotency_key("a\nb"), "idempotency_key"),
            (base().idempotency_key("nul\0"), "idempotency_key"),
            (base().ordering_key(""), "ordering_key"),
            (NewSubmission::new("", "k", json!({})), "partner"),
            (NewSubmission::new("a b", "k", json!({})), "partner"),
            (NewSubmission::new("p", "", json!({})), "kind"),
            (base().business_value(-1), "business_value"),
            (base().business_value_in(1, "eur"), "currency"),
            (base().business_value_in(1, "XYZ"), "currency"),
            (base().currency("EURO"), "currency"),
            (base().currency(""), "currency"),
            (
                base().business_deadline(Utc::now() - chrono::Duration::minutes(1)),
                "business_deadline",
            ),
        ] {
            match bad.validate(1024) {
                Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
        let max = "é".repeat(127); // 254 bytes, multi-byte characters are fine
        assert!(base().idempotency_key(max).validate(1024).is_ok());
        assert!(
            base()
                .idempotency_key("x".repeat(255))
                .validate(1024)
                .is_ok()
        );
    }

    #[test]
    fn payload_depth_is_what_serde_json_reads_back() {
        let nest = |depth: usize| {
            let mut v = json!(1);
            for i in 0..depth {
                v = if i % 2 == 0 {
                    json!([v])
                } else {
                    json!({ "k": v })
                };
            }
            v
        };
        let deepest = nest(MAX_JSON_DEPTH);
        let text = serde_json::to_string(&deepest).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        assert!(check_depth("payload", &deepest).is_ok());
        let deeper = nest(MAX_JSON_DEPTH + 1);
        let text = serde_json::to_string(&deeper).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err());
        match NewSubmission::new("p", "k", deeper).validate(1 << 20) {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "payload"),
            other => panic!("{other:?}"),
        }
        let wide = json!((0..1000).map(|i| json!({ "i": [i] })).collect::<Vec<_>>());
        assert!(check_depth("payload", &wide).is_ok());
    }

    #[test]
    fn payload_cap_counts_canonical_bytes() {
        let s = NewSubmission::new("p", "k", json!({"a": "x".repeat(100)}));
        match s.clone().validate(50) {
            Err(Error::PayloadTooLarge { size, limit }) => {
                assert_eq!(limit, 50);
                assert!(size > 100);
            }
            other => panic!("{other:?}"),
        }
        assert!(s.validate(200).is_ok());
    }
}
