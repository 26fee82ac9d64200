//! Inbound callbacks: the [`InboundCallback`] as received, the
//! [`SignatureVerifier`]s that decide whether it really came from the
//! partner, the [`CallbackMatcher`] that reads it in the partner's own format
//! ([`JsonMatcher`] for JSON), and the [`Disposition`] recorded for it.
//!
//! A callback is kept exactly as it arrived (headers and raw body bytes); a
//! verifier reads the bytes, never a re-serialized body. Verification fails
//! closed: each partner is configured with a verifier, or explicitly with
//! [`Unverified`].
//!
//! | verifier | headers | signed content | secret |
//! |---|---|---|---|
//! | [`StandardWebhooks`] ([spec](https://www.standardwebhooks.com), svix) | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> ...` | `{id}.{timestamp}.{body}` | `whsec_<base64>`, base64-decoded |
//! | [`GithubSignature`] | `X-Hub-Signature-256: sha256=<hex>` | `{body}` | UTF-8 bytes |
//! | [`StripeSignature`] | `Stripe-Signature: t=<unix>,v1=<hex>,...` | `{t}.{body}` | UTF-8 bytes, as-is (`whsec_` included) |
//! | [`Unverified`] | none | none | none |
//!
//! All three use HMAC-SHA256 compared in constant time, accept several
//! secrets (rotation), and refuse empty, truncated or over-long signatures.
//! Headers longer than [`MAX_SIGNATURE_HEADER_BYTES`] are refused, and at
//! most [`MAX_SIGNATURES_CHECKED`] signatures of one header are checked.
//! Timestamped schemes accept a timestamp up to [`DEFAULT_TOLERANCE`] away
//! from the clock, in either direction, unless configured otherwise.
//!
//! ```
//! use liaison::callback::{InboundCallback, SignatureError, SignatureVerifier, StandardWebhooks};
//! use http::header::{HeaderMap, HeaderValue};
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! # fn main() -> liaison::Result<()> {
//! // The Standard Webhooks specification's example.
//! let verifier = StandardWebhooks::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let mut headers = HeaderMap::new();
//! headers.insert("webhook-id", HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"));
//! headers.insert("webhook-timestamp", HeaderValue::from_static("1614265330"));
//! headers.insert(
//!     "webhook-signature",
//!     HeaderValue::from_static("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
//! );
//! let callback = InboundCallback::new("billing", headers, br#"{"test": 2432232314}"#.to_vec());
//!
//! let sent_at = UNIX_EPOCH + Duration::from_secs(1614265330);
//! assert_eq!(verifier.verify(&callback, sent_at), Ok(()));
//!
//! // A day later the same delivery is a replay.
//! let later = sent_at + Duration::from_secs(86_400);
//! assert!(matches!(
//!     verifier.verify(&callback, later),
//!     Err(SignatureError::TimestampOutOfTolerance { .. })
//! ));
//! # Ok(())
//! # }
//! ```

use chrono::{DateTime, Utc};
use http::header::HeaderMap;

mod github;
mod json_matcher;
#[cfg(test)]
mod matcher_proptests;
#[cfg(test)]
mod proptests;
mod report;
mod signature;
mod standard_webhooks;
mod stripe;

pub use crate::model::callback::{
    CallbackId, CallbackReceipt, Dismissal, Disposition, StoredCallback,
};
pub use github::GithubSignature;
pub use json_matcher::{CorrelateBy, JsonMatcher, JsonMatcherBuilder};
pub use report::{
    CallbackMatcher, CallbackReport, Correlation, MalformedCallback, ReportedOutcome,
};
pub use signature::{
    DEFAULT_TOLERANCE, MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNATURES_CHECKED, SignatureError,
    SignatureVerifier, Unverified,
};
pub use standard_webhooks::StandardWebhooks;
pub use stripe::StripeSignature;

/// One inbound delivery from a partner, as received.
///
/// ```
/// use liaison::callback::InboundCallback;
/// use http::header::{HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("X-Partner-Event", HeaderValue::from_static("result.ready"));
/// let callback = InboundCallback::new("clearinghouse", headers, b"{\"ok\":true}".to_vec());
/// assert_eq!(callback.header_str("x-partner-event"), Some("result.ready"));
/// assert_eq!(callback.header_str("x-missing"), None);
/// ```
///
/// `Debug` shows the header names and the body's length only: header values
/// carry credentials (`Authorization`, `Cookie`, signatures) and the body
/// personal data.
#[derive(Clone)]
#[non_exhaustive]
pub struct InboundCallback {
    /// The partner's registered name.
    pub partner: String,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw body bytes, never re-serialized before verification.
    pub body: Vec<u8>,
}

impl InboundCallback {
    /// A callback received now.
    pub fn new(partner: impl Into<String>, headers: HeaderMap, body: impl Into<Vec<u8>>) -> Self {
        Self {
            partner: partner.into(),
            received_at: Utc::now(),
            headers,
            body: body.into(),
        }
    }

    /// When it was received (default: when it was built).
    pub fn received_at(mut self, at: DateTime<Utc>) -> Self {
        self.received_at = at;
        self
    }

    /// The first value of header `name` (case-insensitive), if present and
    /// made only of visible ASCII (and tabs); `None` otherwise.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

impl std::fmt::Debug for InboundCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(|n| n.as_str()).collect();
        f.debug_struct("InboundCallback")
            .field("partner", &self.partner)
            .field("received_at", &self.received_at)
            .field("header_names", &header_names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A callback with the given headers and body, for tests.
#[cfg(test)]
pub(crate) fn test_callback(headers: &[(&str, &str)], body: &[u8]) -> InboundCallback {
    use http::header::{HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    InboundCallback::new("test-partner", map, body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    #[test]
    fn debug_shows_header_names_and_the_body_length_only() {
        let cb = test_callback(
            &[
                ("Authorization", "Bearer TOKEN"),
                ("Cookie", "session=COOKIE"),
            ],
            b"{\"patient\":\"PATIENT\"}",
        );
        for shown in [format!("{cb:?}"), format!("{cb:#?}")] {
            for secret in ["TOKEN", "COOKIE", "PATIENT", "Bearer"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("authorization"), "{shown}");
            assert!(shown.contains("cookie"), "{shown}");
            assert!(shown.contains("21"), "the body's length: {shown}");
            assert!(shown.contains("test-partner"), "{shown}");
        }
    }

    #[test]
    fn header_str_is_case_insensitive_and_first_value() {
        let cb = test_callback(&[("X-A", "one"), ("x-a", "two")], b"");
        assert_eq!(cb.header_str("x-a"), Some("one"));
        assert_eq!(cb.header_str("X-A"), Some("one"));
        assert_eq!(cb.header_str("not a valid name"), None);
    }

    #[test]
    fn header_str_refuses_opaque_bytes() {
        let mut cb = test_callback(&[], b"");
        cb.headers.insert(
            "x-opaque",
            HeaderValue::from_bytes(b"caf\xc3\xa9").expect("opaque value"),
        );
        assert_eq!(cb.header_str("x-opaque"), None);
    }

    #[test]
    fn body_is_kept_byte_for_byte() {
        let body = b"{\"a\": 1,   \"b\":2}\n\xff".to_vec();
        let cb = InboundCallback::new("p", HeaderMap::new(), body.clone());
        assert_eq!(cb.body, body);
        assert_eq!(cb.partner, "p");
    }
}
