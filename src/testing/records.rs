//! What the mock partner saw and did: [`MockStats`], [`ReceivedRequest`],
//! [`SideEffect`], [`SentCallback`].

use chrono::{DateTime, Utc};

/// Counters of a [`MockPartner`](super::MockPartner), as of
/// [`MockPartner::stats`](super::MockPartner::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MockStats {
    /// Requests that reached `POST /submit`, whatever they were answered,
    /// including ones abandoned by their client before the answer (which
    /// [`MockPartner::received`](super::MockPartner::received) does not list).
    pub requests: u64,
    /// Distinct `Idempotency-Key` values seen.
    pub distinct_keys: u64,
    /// Effects the partner performed: at most one per idempotency key.
    pub side_effects: u64,
    /// The most requests handled at the same time, counted from the moment a
    /// request reaches the handler until its answer is produced (including a
    /// [`Behavior::Slow`](super::Behavior::Slow) sleep).
    pub max_concurrent: u64,
    /// Callback POSTs made to the host (each attempt counts, failed or not):
    /// as many as [`MockPartner::callback_log`](super::MockPartner::callback_log)
    /// lists.
    pub callbacks_sent: u64,
    /// Of `callbacks_sent`, those answered with a non-2xx status or that did
    /// not get an answer.
    pub callbacks_failed: u64,
}

/// One request that reached `POST /submit` and was answered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReceivedRequest {
    /// The `Idempotency-Key` header, if there was one.
    pub idempotency_key: Option<String>,
    /// The body, or `Null` if it was not JSON (or was refused as too large).
    pub body: serde_json::Value,
    /// When the request reached the handler.
    pub at: DateTime<Utc>,
    /// The status the partner answered.
    pub status: u16,
}

/// An effect the partner performed: the first successful processing of an
/// idempotency key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SideEffect {
    /// The key it was performed for.
    pub idempotency_key: String,
    /// The partner's reference for it (`MP-1`, `MP-2`, ...).
    pub reference: String,
    /// The request body (`Null` if it was not JSON).
    pub body: serde_json::Value,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// One callback POST the partner made to the host, as listed by
/// [`MockPartner::callback_log`](super::MockPartner::callback_log).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentCallback {
    /// The exact body bytes sent.
    pub body: Vec<u8>,
    /// The headers the partner set (names in lower case): `content-type`,
    /// and `webhook-id`, `webhook-timestamp`, `webhook-signature` when
    /// signed. Those the HTTP client adds (`host`, `content-length`) are not
    /// listed.
    pub headers: Vec<(String, String)>,
    /// The status the host answered, or `None` if it did not answer (refused
    /// connection, timeout).
    pub status: Option<u16>,
    /// When the POST started.
    pub at: DateTime<Utc>,
}

impl SentCallback {
    /// The first value of header `name` (case-insensitive), if the partner
    /// set it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the host answered 2xx; a failed callback in
    /// [`MockStats::callbacks_failed`] otherwise.
    pub fn delivered(&self) -> bool {
        self.status
            .is_some_and(|status| (200..300).contains(&status))
    }
}
