//! The partner side: the [`PartnerAdapter`] trait a host implements per
//! partner, what an attempt returns, and how failures are classified.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::StatusCode;
use http::header::{HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::BoxError;
use crate::model::event::AttemptOutcome;
use crate::model::submission::{Submission, SubmissionId};

/// Longest `Retry-After` honoured; a partner asking for more is treated as
/// asking for this much (the partner's max age still ends retries).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an adapter knows about the attempt it is making.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttemptContext {
    /// The submission.
    pub submission_id: SubmissionId,
    /// The partner's registered name.
    pub partner: String,
    /// The idempotency key; identical on every attempt of one submission.
    /// Send it to the partner (for HTTP, an `Idempotency-Key` header).
    pub idempotency_key: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the engine stops waiting for this attempt.
    pub deadline: DateTime<Utc>,
}

impl AttemptContext {
    /// The context of attempt number `attempt` (1 for the first) of
    /// `submission`, which the engine stops waiting for at `deadline`. The
    /// engine builds these; this is for calling an adapter directly, as its
    /// own tests do.
    pub fn new(submission: &Submission, attempt: u32, deadline: DateTime<Utc>) -> Self {
        AttemptContext {
            submission_id: submission.id,
            partner: submission.partner.clone(),
            idempotency_key: submission.idempotency_key.clone(),
            attempt,
            deadline,
        }
    }
}

/// The partner's final answer about a submission, with its result
/// document when it sent one.
///
/// Built with [`Outcome::succeeded`] / [`Outcome::failed`] and, to hand the
/// partner's document on to the host, [`Outcome::with_result`]:
///
/// ```
/// use liaison::Outcome;
/// use serde_json::json;
///
/// let approved = Outcome::succeeded().with_result(json!({"paid": 1250, "claim_no": "CH-77"}));
/// assert!(approved.is_success());
/// assert_eq!(approved.result().unwrap()["paid"], 1250);
///
/// let denied = Outcome::failed("CO-16: missing information").with_result(json!({"codes": ["CO-16"]}));
/// assert!(matches!(&denied, Outcome::Failed { reason, .. } if reason.starts_with("CO-16")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The partner processed it.
    #[non_exhaustive]
    Succeeded {
        /// The partner's result document, if it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
    },
    /// The partner processed it and reports failure (kept as the reason).
    #[non_exhaustive]
    Failed {
        /// The partner's reason, in its words.
        reason: String,
        /// The partner's result document, if it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
    },
}

impl Outcome {
    /// The partner processed it.
    pub fn succeeded() -> Self {
        Outcome::Succeeded { result: None }
    }

    /// The partner processed it and reports failure for `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            result: None,
        }
    }

    /// Attach the partner's result document (kept with the submission, up
    /// to the partner's cap, and handed to the host's result handler).
    pub fn with_result(mut self, document: Value) -> Self {
        match &mut self {
            Outcome::Succeeded { result } | Outcome::Failed { result, .. } => {
                *result = Some(document)
            }
        }
        self
    }

    /// The partner's result document, if any.
    pub fn result(&self) -> Option<&Value> {
        match self {
            Outcome::Succeeded { result } | Outcome::Failed { result, .. } => result.as_ref(),
        }
    }

    /// Whether the partner reports success.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. })
    }

    /// The outcome without its document (`succeeded` / `failed` and the
    /// reason), for timelines.
    pub(crate) fn summary(&self) -> Value {
        match self {
            Outcome::Succeeded { .. } => serde_json::json!({ "outcome": "succeeded" }),
            Outcome::Failed { reason, .. } => {
                serde_json::json!({ "outcome": "failed", "reason": reason })
            }
        }
    }
}

/// What a successful call to the partner led to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitOutcome {
    /// Accepted; the result comes later (callback or poll). `external_ref`
    /// is the partner's own reference for it, when it gives one.
    AwaitResult {
        /// The partner's reference.
        external_ref: Option<String>,
    },
    /// Processed within the request.
    Completed(Outcome),
}

/// The answer to a status poll.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PollStatus {
    /// Still being processed.
    Pending,
    /// Done.
    Done(Outcome),
}

/// Why an attempt failed, and therefore whether to retry.
///
/// The engine decides from the variant: `Transient`, `RateLimited` and
/// `Timeout` are retried under the partner's retry policy (a `retry_after`
/// wins over the computed delay); `Permanent` dead-letters at once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartnerError {
    /// Temporary: 5xx, 408, 409 on a key still in progress, connection
    /// refused or reset. Retried.
    #[error("transient partner error{}: {reason}", fmt_status(*.status))]
    Transient {
        /// What happened.
        reason: String,
        /// The HTTP status, if there was one.
        status: Option<u16>,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The partner asked us to slow down (429, or 503 with `Retry-After`).
    #[error("rate limited by partner{}{}", fmt_status(*.status), fmt_after(*.retry_after))]
    RateLimited {
        /// How long the partner asked us to wait, if it said.
        retry_after: Option<Duration>,
        /// The HTTP status.
        status: Option<u16>,
    },
    /// The partner refused the request for good (4xx other than 408/409/429).
    #[error("partner refused the request{}: {reason}", fmt_status(*.status))]
    Permanent {
        /// The partner's reason.
        reason: String,
        /// The HTTP status, if there was one.
        status: Option<u16>,
    },
    /// The attempt ran past its timeout (set by the engine).
    #[error("no answer from the partner within {after:?}")]
    Timeout {
        /// The timeout that passed.
        after: Duration,
    },
}

fn fmt_status(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

fn fmt_after(after: Option<Duration>) -> String {
    after
        .map(|d| format!("; retry after {}s", d.as_secs_f64()))
        .unwrap_or_default()
}

impl PartnerError {
    /// A temporary failure.
    pub fn transient(reason: impl Into<String>) -> Self {
        PartnerError::Transient {
            reason: reason.into(),
            status: None,
            source: None,
        }
    }

    /// A refusal for good.
    pub fn permanent(reason: impl Into<String>) -> Self {
        PartnerError::Permanent {
            reason: reason.into(),
            status: None,
        }
    }

    /// Retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, PartnerError::Permanent { .. })
    }

    /// The partner's requested wait, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PartnerError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if the failure came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PartnerError::Transient { status, .. }
            | PartnerError::RateLimited { status, .. }
            | PartnerError::Permanent { status, .. } => *status,
            PartnerError::Timeout { .. } => None,
        }
    }

    /// Whether this failure says the partner is unavailable (counts toward
    /// opening the circuit). A permanent refusal or a rate limit shows the
    /// partner is up and answering, so they do not count.
    pub fn is_unavailability(&self) -> bool {
        matches!(
            self,
            PartnerError::Transient { .. } | PartnerError::Timeout { .. }
        )
    }

    /// The attempt outcome this error is recorded as.
    pub fn attempt_outcome(&self) -> AttemptOutcome {
        match self {
            PartnerError::Transient { .. } => AttemptOutcome::Transient,
            PartnerError::RateLimited { .. } => AttemptOutcome::RateLimited,
            PartnerError::Permanent { .. } => AttemptOutcome::Permanent,
            PartnerError::Timeout { .. } => AttemptOutcome::Timeout,
        }
    }

    /// Classify an HTTP answer. `Ok(())` for 2xx; otherwise:
    ///
    /// | status | class |
    /// |---|---|
    /// | 5xx (503 without `Retry-After`), 408, 409 | `Transient` |
    /// | 429, 503 with `Retry-After` | `RateLimited` (delta-seconds or HTTP-date honoured) |
    /// | 1xx, 3xx, other 4xx | `Permanent` |
    ///
    /// 409 is transient because, under the idempotency-key convention, it
    /// means a request with the same key is still in progress at the partner.
    /// `body_hint` is a short excerpt of the answer for the reason text.
    ///
    /// ```
    /// use liaison::PartnerError;
    /// use http::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    /// use http::StatusCode;
    /// use std::time::Duration;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    /// let err = PartnerError::classify_http(StatusCode::TOO_MANY_REQUESTS, &headers, "").unwrap_err();
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    ///
    /// let err = PartnerError::classify_http(StatusCode::UNPROCESSABLE_ENTITY, &HeaderMap::new(), "bad member id")
    ///     .unwrap_err();
    /// assert!(!err.is_retryable());
    /// assert!(PartnerError::classify_http(StatusCode::ACCEPTED, &HeaderMap::new(), "").is_ok());
    /// ```
    pub fn classify_http(
        status: StatusCode,
        headers: &HeaderMap,
        body_hint: &str,
    ) -> Result<(), PartnerError> {
        Self::classify_http_at(status, headers, body_hint, SystemTime::now())
    }

    /// [`PartnerError::classify_http`] as of `now` (for an HTTP-date `Retry-After`).
    pub fn classify_http_at(
        status: StatusCode,
        headers: &HeaderMap,
        body_hint: &str,
        now: SystemTime,
    ) -> Result<(), PartnerError> {
        if status.is_success() {
            return Ok(());
        }
        let code = Some(status.as_u16());
        let reason = || {
            let hint = short(body_hint);
            let canonical = status.canonical_reason().unwrap_or("unexpected status");
            if hint.is_empty() {
                canonical.to_owned()
            } else {
                format!("{canonical}: {hint}")
            }
        };
        let retry_after = parse_retry_after(headers, now);
        Err(match status.as_u16() {
            429 => PartnerError::RateLimited {
                retry_after,
                status: code,
            },
            503 if retry_after.is_some() => PartnerError::RateLimited {
                retry_after,
                status: code,
            },
            408 | 409 | 500..=599 => PartnerError::Transient {
                reason: reason(),
                status: code,
                source: None,
            },
            _ => PartnerError::Permanent {
                reason: reason(),
                status: code,
            },
        })
    }

    /// The reqwest bridge, for adapters that call their partner with
    /// `reqwest` (as [`crate::HttpJsonAdapter`] does): the one place the
    /// public API names a `reqwest` type, because it is about reqwest's errors.
    ///
    /// Classify a failed `reqwest` call: timeouts become `Timeout`, other
    /// transport failures (connect, reset, body) `Transient` — the request may
    /// or may not have arrived, which is what the idempotency key is for.
    /// The URL is stripped from the kept error: it may carry credentials.
    pub fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() {
            return PartnerError::Timeout { after: timeout };
        }
        if let Some(status) = error.status() {
            return Self::classify_http(status, &HeaderMap::new(), "")
                .err()
                .unwrap_or_else(|| PartnerError::transient("unexpected success status error"));
        }
        let what = if error.is_connect() {
            "could not connect"
        } else if error.is_body() || error.is_decode() {
            "the answer could not be read"
        } else if error.is_request() {
            "the request failed"
        } else {
            "transport error"
        };
        PartnerError::Transient {
            reason: what.to_owned(),
            status: None,
            source: Some(Box::new(error.without_url())),
        }
    }
}

/// At most 200 characters of a body, on one line, for reasons and logs.
fn short(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line.trim().to_owned()
}

/// Parse `Retry-After`: delta-seconds or an HTTP-date; a date in the past is
/// zero; values above [`MAX_RETRY_AFTER`] are capped; garbage is ignored.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// One partner integration: sends a submission and, optionally, asks for the
/// status of one it accepted earlier.
///
/// Implementations must send [`AttemptContext::idempotency_key`] so that a
/// retry (after a timeout, say, when the first request did arrive) is
/// recognised by the partner. Return [`PartnerError`] to tell the engine how to
/// retry; never panic on what the partner sends.
///
/// ```
/// use async_trait::async_trait;
/// use liaison::{AttemptContext, Outcome, PartnerAdapter, PartnerError, Submission, SubmitOutcome};
///
/// #[derive(Debug)]
/// struct Ledger;
///
/// #[async_trait]
/// impl PartnerAdapter for Ledger {
///     async fn submit(&self, ctx: &AttemptContext, s: &Submission) -> Result<SubmitOutcome, PartnerError> {
///         // call the partner here, sending ctx.idempotency_key
///         let _ = (ctx, s);
///         Ok(SubmitOutcome::Completed(Outcome::succeeded()))
///     }
/// }
/// ```
#[async_trait]
pub trait PartnerAdapter: Send + Sync + std::fmt::Debug + 'static {
    /// Send the submission once.
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError>;

    /// Ask the partner for the status of an accepted submission. The default
    /// says it is not supported, and an overdue result is then marked `Stuck`.
    async fn poll_status(&self, submission: &Submission) -> Result<PollStatus, PollError> {
        let _ = submission;
        Err(PollError::Unsupported)
    }
}

/// Why a status poll gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The adapter cannot poll.
    #[error("this adapter cannot poll the partner for status")]
    Unsupported,
    /// The poll failed.
    #[error(transparent)]
    Partner(#[from] PartnerError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn _object_safe(_: std::sync::Arc<dyn PartnerAdapter>) {}

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    fn class(code: u16, headers: &HeaderMap) -> Option<PartnerError> {
        PartnerError::classify_http(StatusCode::from_u16(code).unwrap(), headers, "").err()
    }

    #[test]
    fn statuses_classify_as_documented() {
        let none = HeaderMap::new();
        for ok in [200, 201, 202, 204] {
            assert!(class(ok, &none).is_none(), "{ok}");
        }
        for transient in [500, 502, 503, 504, 408, 409] {
            assert!(
                matches!(class(transient, &none), Some(PartnerError::Transient { status: Some(s), .. }) if s == transient),
                "{transient}"
            );
        }
        for permanent in [400, 401, 403, 404, 410, 422, 301, 304] {
            assert!(
                matches!(
                    class(permanent, &none),
                    Some(PartnerError::Permanent { .. })
                ),
                "{permanent}"
            );
        }
        assert!(matches!(
            class(429, &none),
            Some(PartnerError::RateLimited {
                retry_after: None,
                ..
            })
        ));
        let h = with_retry_after("120");
        assert_eq!(
            class(503, &h).unwrap().retry_after(),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            class(429, &h).unwrap().retry_after(),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_accepts_http_dates_and_ignores_garbage() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let h = with_retry_after("Wed, 21 Oct 2015 07:28:30 GMT");
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = with_retry_after("Wed, 21 Oct 2015 07:00:00 GMT");
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        for junk in ["soon", "-5", "1.5", ""] {
            assert_eq!(
                parse_retry_after(&with_retry_after(junk), now),
                None,
                "{junk}"
            );
        }
        let huge = with_retry_after("999999999999");
        assert_eq!(parse_retry_after(&huge, now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn reasons_are_short_single_lines() {
        let body = format!("line one\nline two {}", "x".repeat(1000));
        let err = PartnerError::classify_http(StatusCode::BAD_REQUEST, &HeaderMap::new(), &body)
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'));
        assert!(text.len() < 300, "{}", text.len());
        assert!(text.contains("HTTP 400"));
    }
}
