//! What the mock partner saw and did: [`MockStats`], [`ReceivedRequest`],
//! [`SideEffect`].

use chrono::{DateTime, Utc};

/// Counters of a [`MockPartner`](super::MockPartner), as of
/// [`MockPartner::stats`](super::MockPartner::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Callback POSTs made to the host (each attempt counts, failed or not).
    pub callbacks_sent: u64,
    /// Of `callbacks_sent`, those answered with a non-2xx status or that did
    /// not get an answer.
    pub callbacks_failed: u64,
}

/// One request that reached `POST /submit` and was answered.
#[derive(Debug, Clone, PartialEq)]
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
