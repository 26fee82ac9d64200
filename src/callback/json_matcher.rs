//! [`JsonMatcher`]: reads a JSON callback in the partner's own format,
//! configured with JSON pointers.

use std::fmt;

use serde_json::Value;

use super::InboundCallback;
use super::report::{
    CallbackMatcher, CallbackReport, Correlation, MalformedCallback, ReportedOutcome,
};
use super::signature::{SignatureError, SignatureVerifier};
use crate::error::{Error, Result};
use crate::model::submission::MAX_KEY_BYTES;

/// Which of our identifiers the partner's correlation field carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorrelateBy {
    /// The reference the partner returned on acceptance.
    ExternalRef,
    /// Our submission id.
    SubmissionId,
    /// The idempotency key we sent.
    IdempotencyKey,
}

/// A [`CallbackMatcher`] for JSON callbacks: a verifier, and JSON pointers
/// (RFC 6901) to the correlation field, the status field and its values, the
/// partner's event id and the failure reason.
///
/// ```
/// use liaison::callback::{CorrelateBy, CallbackMatcher, InboundCallback, JsonMatcher};
/// use liaison::callback::{Correlation, ReportedOutcome, Unverified};
/// use http::header::HeaderMap;
///
/// let matcher = JsonMatcher::builder(Unverified)
///     .correlate(CorrelateBy::ExternalRef, "/data/claim_ref")
///     .status("/data/state", ["paid"], ["denied"])
///     .progress(["pended"])
///     .event_id("/id")
///     .reason("/data/denial/reason")
///     .build()?;
///
/// let body = br#"{"id":"evt_1","data":{"claim_ref":"CH-9","state":"denied","denial":{"reason":"no coverage"}}}"#;
/// let report = matcher.parse(&InboundCallback::new("clearinghouse", HeaderMap::new(), body.to_vec()))?;
/// assert_eq!(report.correlation, Correlation::ExternalRef("CH-9".into()));
/// assert_eq!(report.outcome, ReportedOutcome::Failed { reason: "no coverage".into() });
/// assert_eq!(report.event_id.as_deref(), Some("evt_1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JsonMatcher {
    verifier: Box<dyn SignatureVerifier>,
    correlate_by: CorrelateBy,
    correlation: String,
    status: String,
    succeeded: Vec<String>,
    failed: Vec<String>,
    progress: Vec<String>,
    event_id: Option<String>,
    reason: Option<String>,
    result: Option<String>,
}

impl fmt::Debug for JsonMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonMatcher")
            .field("verifier", &self.verifier.scheme())
            .field("correlate_by", &self.correlate_by)
            .field("correlation", &self.correlation)
            .field("status", &self.status)
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

/// Builds a [`JsonMatcher`]; [`JsonMatcherBuilder::build`] checks it.
#[derive(Debug)]
pub struct JsonMatcherBuilder {
    verifier: Box<dyn SignatureVerifier>,
    correlate_by: CorrelateBy,
    correlation: String,
    status: String,
    succeeded: Vec<String>,
    failed: Vec<String>,
    progress: Vec<String>,
    event_id: Option<String>,
    reason: Option<String>,
    result: Option<String>,
}

impl JsonMatcher {
    /// Start with a verifier (use [`super::Unverified`] to opt out
    /// explicitly). Defaults match MockPartner's callbacks: correlate by
    /// external reference at `/reference`, status at `/status` with
    /// `succeeded` / `failed`, event id at `/event_id`, reason at `/reason`.
    pub fn builder(verifier: impl SignatureVerifier + 'static) -> JsonMatcherBuilder {
        JsonMatcherBuilder {
            verifier: Box::new(verifier),
            correlate_by: CorrelateBy::ExternalRef,
            correlation: "/reference".into(),
            status: "/status".into(),
            succeeded: vec!["succeeded".into()],
            failed: vec!["failed".into()],
            progress: Vec::new(),
            event_id: Some("/event_id".into()),
            reason: Some("/reason".into()),
            result: None,
        }
    }
}

impl JsonMatcherBuilder {
    /// Where the correlation value is and what it is.
    pub fn correlate(mut self, by: CorrelateBy, pointer: &str) -> Self {
        self.correlate_by = by;
        self.correlation = pointer.to_owned();
        self
    }

    /// Where the status is, and which values mean succeeded and failed
    /// (compared ignoring ASCII case; numbers and booleans by their JSON text).
    pub fn status<S, F>(mut self, pointer: &str, succeeded: S, failed: F) -> Self
    where
        S: IntoIterator,
        S::Item: Into<String>,
        F: IntoIterator,
        F::Item: Into<String>,
    {
        self.status = pointer.to_owned();
        self.succeeded = succeeded.into_iter().map(Into::into).collect();
        self.failed = failed.into_iter().map(Into::into).collect();
        self
    }

    /// Status values that mean "still processing" (noted, no state change).
    pub fn progress<P>(mut self, values: P) -> Self
    where
        P: IntoIterator,
        P::Item: Into<String>,
    {
        self.progress = values.into_iter().map(Into::into).collect();
        self
    }

    /// Where the partner's event id is.
    pub fn event_id(mut self, pointer: &str) -> Self {
        self.event_id = Some(pointer.to_owned());
        self
    }

    /// The partner sends no event id.
    pub fn without_event_id(mut self) -> Self {
        self.event_id = None;
        self
    }

    /// Where the failure reason is.
    pub fn reason(mut self, pointer: &str) -> Self {
        self.reason = Some(pointer.to_owned());
        self
    }

    /// Where the partner's result document is in a callback reporting a
    /// final outcome (`""` for the whole body; default: none is kept). It
    /// is kept with the submission the callback settles and handed to the
    /// host's result handler. Point at the document itself, not at fields
    /// that change on every resend (a delivery timestamp, an attempt
    /// number): a repeat whose document differs is recorded as
    /// conflicting, not applied.
    pub fn result(mut self, pointer: &str) -> Self {
        self.result = Some(pointer.to_owned());
        self
    }

    /// Check the pointers and value lists.
    pub fn build(self) -> Result<JsonMatcher> {
        for (field, pointer) in [
            ("correlation pointer", Some(&self.correlation)),
            ("status pointer", Some(&self.status)),
            ("event id pointer", self.event_id.as_ref()),
            ("reason pointer", self.reason.as_ref()),
            (
                "result pointer",
                self.result.as_ref().filter(|p| !p.is_empty()),
            ),
        ] {
            if let Some(p) = pointer
                && !p.starts_with('/')
            {
                return Err(Error::invalid(
                    field,
                    format!("{p:?} is not a JSON pointer (it must start with '/')"),
                ));
            }
        }
        if self
            .succeeded
            .iter()
            .chain(&self.failed)
            .chain(&self.progress)
            .any(|v| v.trim().is_empty())
        {
            return Err(Error::invalid(
                "status values",
                "a status value must not be blank",
            ));
        }
        if self.succeeded.is_empty() || self.failed.is_empty() {
            return Err(Error::invalid(
                "status values",
                "name at least one value for succeeded and one for failed",
            ));
        }
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
        let (succeeded, failed, progress) = (
            lower(&self.succeeded),
            lower(&self.failed),
            lower(&self.progress),
        );
        if let Some(both) = succeeded
            .iter()
            .find(|v| failed.contains(v) || progress.contains(v))
            .or_else(|| failed.iter().find(|v| progress.contains(v)))
        {
            return Err(Error::invalid(
                "status values",
                format!("{both:?} is listed under two outcomes"),
            ));
        }
        Ok(JsonMatcher {
            verifier: self.verifier,
            correlate_by: self.correlate_by,
            correlation: self.correlation,
            status: self.status,
            succeeded,
            failed,
            progress,
            event_id: self.event_id,
            reason: self.reason,
            result: self.result,
        })
    }
}

/// A scalar as text: strings as they are, numbers and booleans as JSON.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A usable identifier: non-empty, bounded, no control characters.
fn identifier(what: &str, value: Option<&Value>) -> Result<String, MalformedCallback> {
    let text = value
        .and_then(scalar)
        .ok_or_else(|| MalformedCallback::new(format!("{what} is missing or not a string")))?;
    if text.is_empty() || text.len() > MAX_KEY_BYTES || text.chars().any(char::is_control) {
        return Err(MalformedCallback::new(format!(
            "{what} is empty, longer than {MAX_KEY_BYTES} bytes, or holds control characters"
        )));
    }
    Ok(text)
}

impl CallbackMatcher for JsonMatcher {
    fn verify(
        &self,
        callback: &InboundCallback,
        now: std::time::SystemTime,
    ) -> Result<(), SignatureError> {
        self.verifier.verify(callback, now)
    }

    fn parse(&self, callback: &InboundCallback) -> Result<CallbackReport, MalformedCallback> {
        let body: Value = serde_json::from_slice(&callback.body)
            .map_err(|e| MalformedCallback::new(format!("the body is not JSON: {e}")))?;
        let reference = identifier("the correlation field", body.pointer(&self.correlation))?;
        let correlation = match self.correlate_by {
            CorrelateBy::ExternalRef => Correlation::ExternalRef(reference),
            CorrelateBy::IdempotencyKey => Correlation::IdempotencyKey(reference),
            CorrelateBy::SubmissionId => {
                Correlation::SubmissionId(reference.parse().map_err(|_| {
                    MalformedCallback::new("the correlation field is not a submission id")
                })?)
            }
        };
        let status = body
            .pointer(&self.status)
            .and_then(scalar)
            .ok_or_else(|| MalformedCallback::new("the status field is missing or not a scalar"))?
            .to_ascii_lowercase();
        let reason = || {
            self.reason
                .as_deref()
                .and_then(|p| body.pointer(p))
                .and_then(scalar)
                .map(|r| r.trim().chars().take(1000).collect::<String>())
                .filter(|r| !r.is_empty())
        };
        let outcome = if self.succeeded.contains(&status) {
            ReportedOutcome::Succeeded
        } else if self.failed.contains(&status) {
            ReportedOutcome::Failed {
                reason: reason()
                    .unwrap_or_else(|| "the partner reported failure without a reason".into()),
            }
        } else if self.progress.contains(&status) {
            ReportedOutcome::Progress { note: reason() }
        } else {
            let shown: String = status.chars().take(64).collect();
            return Err(MalformedCallback::new(format!(
                "unknown status value {shown:?}"
            )));
        };
        let event_id = match &self.event_id {
            Some(p) if body.pointer(p).is_some() => {
                Some(identifier("the event id", body.pointer(p))?)
            }
            _ => None,
        };
        let result = match (&outcome, &self.result) {
            (ReportedOutcome::Progress { .. }, _) | (_, None) => None,
            (_, Some(p)) => body.pointer(p).filter(|v| !v.is_null()).cloned(),
        };
        let report = CallbackReport::new(correlation, outcome);
        let report = match event_id {
            Some(id) => report.event_id(id),
            None => report,
        };
        Ok(match result {
            Some(document) => report.result(document),
            None => report,
        })
    }

    fn scheme(&self) -> &'static str {
        self.verifier.scheme()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::Unverified;
    use http::header::HeaderMap;

    fn parse(matcher: &JsonMatcher, body: &str) -> Result<CallbackReport, MalformedCallback> {
        matcher.parse(&InboundCallback::new(
            "p",
            HeaderMap::new(),
            body.as_bytes().to_vec(),
        ))
    }

    fn default() -> JsonMatcher {
        JsonMatcher::builder(Unverified)
            .progress(["processing"])
            .build()
            .unwrap()
    }

    #[test]
    fn a_result_pointer_keeps_the_document_of_final_outcomes_only() {
        use crate::model::result::ResultDocument;
        let body = r#"{"reference":"R-1","status":"succeeded","data":{"paid":1250}}"#;
        assert_eq!(
            parse(&default(), body).unwrap().result,
            None,
            "none by default"
        );
        let matcher = JsonMatcher::builder(Unverified)
            .progress(["processing"])
            .result("/data")
            .build()
            .unwrap();
        assert_eq!(
            parse(&matcher, body).unwrap().result,
            Some(ResultDocument::Json {
                document: serde_json::json!({"paid": 1250})
            })
        );
        let whole = JsonMatcher::builder(Unverified).result("").build().unwrap();
        let report = parse(&whole, body).unwrap();
        assert_eq!(
            report.result.as_ref().and_then(ResultDocument::document),
            Some(&serde_json::from_str(body).unwrap())
        );
        // Progress carries none; nothing (or null) at the pointer is none.
        let progress = r#"{"reference":"R-1","status":"processing","data":{"eta":3}}"#;
        assert_eq!(parse(&matcher, progress).unwrap().result, None);
        let empty = r#"{"reference":"R-1","status":"failed","data":null}"#;
        assert_eq!(parse(&matcher, empty).unwrap().result, None);
        let bad = JsonMatcher::builder(Unverified).result("data").build();
        assert!(bad.unwrap_err().is_invalid_input());
    }

    #[test]
    fn reads_the_default_format() {
        let m = default();
        let r = parse(
            &m,
            r#"{"event_id":"e1","reference":"MP-1","status":"SUCCEEDED"}"#,
        )
        .unwrap();
        assert_eq!(r.correlation, Correlation::ExternalRef("MP-1".into()));
        assert_eq!(r.outcome, ReportedOutcome::Succeeded);
        assert_eq!(r.event_id.as_deref(), Some("e1"));
        let r = parse(&m, r#"{"reference":7,"status":"failed","reason":"denied"}"#).unwrap();
        assert_eq!(r.correlation, Correlation::ExternalRef("7".into()));
        assert_eq!(
            r.outcome,
            ReportedOutcome::Failed {
                reason: "denied".into()
            }
        );
        assert_eq!(r.event_id, None);
        let r = parse(
            &m,
            r#"{"reference":"MP-1","status":"failed","reason":"  "}"#,
        )
        .unwrap();
        assert_eq!(
            r.outcome,
            ReportedOutcome::Failed {
                reason: "the partner reported failure without a reason".into()
            }
        );
        let r = parse(&m, r#"{"reference":"MP-1","status":"processing"}"#).unwrap();
        assert_eq!(r.outcome, ReportedOutcome::Progress { note: None });
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let m = default();
        for body in [
            "",
            "<xml/>",
            "[]",
            r#"{"status":"succeeded"}"#,
            r#"{"reference":"","status":"succeeded"}"#,
            r#"{"reference":{"a":1},"status":"succeeded"}"#,
            r#"{"reference":"MP-1"}"#,
            r#"{"reference":"MP-1","status":"weird"}"#,
            r#"{"reference":"MP-1","status":"succeeded","event_id":""}"#,
        ] {
            assert!(parse(&m, body).is_err(), "{body:?} should be malformed");
        }
        let long = format!(
            r#"{{"reference":"{}","status":"succeeded"}}"#,
            "x".repeat(300)
        );
        assert!(parse(&m, &long).is_err());
    }

    #[test]
    fn correlates_by_id_or_key() {
        let id = crate::SubmissionId::new();
        let m = JsonMatcher::builder(Unverified)
            .correlate(CorrelateBy::SubmissionId, "/ours")
            .build()
            .unwrap();
        let r = parse(&m, &format!(r#"{{"ours":"{id}","status":"succeeded"}}"#)).unwrap();
        assert_eq!(r.correlation, Correlation::SubmissionId(id));
        assert!(parse(&m, r#"{"ours":"nope","status":"succeeded"}"#).is_err());
        let m = JsonMatcher::builder(Unverified)
            .correlate(CorrelateBy::IdempotencyKey, "/claim")
            .build()
            .unwrap();
        let r = parse(&m, r#"{"claim":"C-1","status":"failed"}"#).unwrap();
        assert_eq!(r.correlation, Correlation::IdempotencyKey("C-1".into()));
    }

    #[test]
    fn the_builder_checks_its_input() {
        assert!(
            JsonMatcher::builder(Unverified)
                .correlate(CorrelateBy::ExternalRef, "ref")
                .build()
                .is_err()
        );
        assert!(
            JsonMatcher::builder(Unverified)
                .status("/s", Vec::<String>::new(), ["x"])
                .build()
                .is_err()
        );
        assert!(
            JsonMatcher::builder(Unverified)
                .status("/s", ["ok"], ["OK"])
                .build()
                .is_err()
        );
        assert!(
            JsonMatcher::builder(Unverified)
                .progress(["failed"])
                .build()
                .is_err()
        );
    }
}
