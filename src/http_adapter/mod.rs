//! [`HttpJsonAdapter`]: a ready [`PartnerAdapter`] for the common partner
//! with one JSON endpoint, so a simple partner needs configuration, not code.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::StatusCode;
use http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, HeaderMap, HeaderName,
    HeaderValue, PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use reqwest::{Client, RequestBuilder, Url};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::submission::Submission;
use crate::partner::{
    AttemptContext, Outcome, PartnerAdapter, PartnerError, PollError, PollStatus, SubmitOutcome,
};

/// Default cap on the bytes read from an answer.
const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Bytes of an error answer read for the reason text.
const EXCERPT_BYTES: usize = 1024;
/// Longest partner reference kept.
const MAX_REFERENCE_BYTES: usize = 255;
/// Longest failure reason kept, in characters.
const MAX_REASON_CHARS: usize = 1000;
/// Timeout of one status poll (polls have no engine deadline to inherit).
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// The default client's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The placeholder of [`HttpJsonAdapter::status_url`], as it reads once parsed.
const REF_PLACEHOLDER: &str = "%7Bref%7D";

const SUBMISSION_ID: HeaderName = HeaderName::from_static("x-liaison-submission-id");
const ATTEMPT: HeaderName = HeaderName::from_static("x-liaison-attempt");

/// Which values of a partner's status field mean "succeeded" and which mean
/// "failed". Any other value means the partner is still processing.
///
/// Values are compared ASCII case-insensitively; a JSON number or boolean is
/// compared in its JSON spelling (`true`, `42`).
///
/// ```
/// use liaison::ResultMapping;
///
/// let mapping = ResultMapping::new(["succeeded", "completed"], ["failed", "rejected"])?;
/// assert!(ResultMapping::new(["done"], ["done"]).is_err()); // a value cannot mean both
/// # let _ = mapping;
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultMapping {
    succeeded: Vec<String>,
    failed: Vec<String>,
}

impl ResultMapping {
    /// A mapping from the values meaning success and those meaning failure.
    /// Refused: no values at all, an empty value, a value in both lists.
    pub fn new<S, F>(succeeded: S, failed: F) -> Result<Self>
    where
        S: IntoIterator,
        S::Item: Into<String>,
        F: IntoIterator,
        F::Item: Into<String>,
    {
        let succeeded: Vec<String> = succeeded.into_iter().map(Into::into).collect();
        let failed: Vec<String> = failed.into_iter().map(Into::into).collect();
        if succeeded.is_empty() && failed.is_empty() {
            return Err(Error::invalid("result mapping", "no status values given"));
        }
        if succeeded.iter().chain(&failed).any(|v| v.trim().is_empty()) {
            return Err(Error::invalid("result mapping", "a status value is empty"));
        }
        if let Some(both) = succeeded
            .iter()
            .find(|s| failed.iter().any(|f| f.eq_ignore_ascii_case(s)))
        {
            return Err(Error::invalid(
                "result mapping",
                format!("{both:?} cannot mean both succeeded and failed"),
            ));
        }
        Ok(ResultMapping { succeeded, failed })
    }

    /// `Some(true)` for success, `Some(false)` for failure, `None` otherwise.
    fn verdict(&self, value: &Value) -> Option<bool> {
        let value = scalar_text(value)?;
        let is = |list: &[String]| list.iter().any(|v| v.eq_ignore_ascii_case(&value));
        if is(&self.succeeded) {
            Some(true)
        } else if is(&self.failed) {
            Some(false)
        } else {
            None
        }
    }
}

/// A [`PartnerAdapter`] that POSTs each payload as JSON to one URL and reads
/// the partner's answer from its JSON body.
///
/// Every attempt sends `Content-Type: application/json` (unless set with
/// [`header`](Self::header)), the idempotency key in
/// [`idempotency_header`](Self::idempotency_header), and
/// `X-Liaison-Submission-Id` / `X-Liaison-Attempt`. The answer maps to:
///
/// | answer | result |
/// |---|---|
/// | not 2xx | [`PartnerError::classify_http`] with an excerpt of the body |
/// | no answer (connect, reset) | [`PartnerError::from_reqwest`] |
/// | 2xx, body longer than [`max_response_bytes`](Self::max_response_bytes) | `Transient`: the partner accepted but we cannot read its reference; the retry is safe under the same idempotency key |
/// | 2xx, status value meaning succeeded / failed | `Completed(Succeeded / Failed { reason })` |
/// | 202, or 2xx with a status value meaning neither | `AwaitResult` with the reference at [`reference_pointer`](Self::reference_pointer) |
/// | 2xx other than 202 with no [`status_pointer`](Self::status_pointer) configured | `Completed(Succeeded)`: the answer is the result |
/// | 2xx, empty or not JSON | as above, without a reference or result document |
///
/// A final answer carries the partner's result document: the value at
/// [`result_pointer`](Self::result_pointer) (default: the whole body).
///
/// A reference that is not a string or number, is longer than 255 bytes or
/// holds control characters is dropped with a warning: the acceptance stands,
/// and the submission can still be matched by its id or idempotency key.
///
/// The default client follows no redirects (a 3xx is a `Permanent` refusal:
/// a redirected POST may silently become a GET) and has a 10 s connect
/// timeout and no overall timeout: the engine times each attempt out.
/// `Debug` output shows header names only and hides the URL's user info and
/// query string.
///
/// ```
/// use liaison::{HttpJsonAdapter, ResultMapping};
///
/// let adapter = HttpJsonAdapter::new("https://api.clearinghouse.example/v2/claims")?
///     .bearer_token("s3cr3t")?
///     .header("X-Partner-Account", "acme")?
///     .reference_pointer("/data/claim_ref")?
///     .status_pointer("/data/state", ResultMapping::new(["accepted"], ["rejected"])?)?
///     .reason_pointer("/data/errors/0/message")?
///     .status_url("https://api.clearinghouse.example/v2/claims/{ref}")?;
/// assert!(!format!("{adapter:?}").contains("s3cr3t"));
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Clone)]
pub struct HttpJsonAdapter {
    url: Url,
    client: Client,
    host_client: bool,
    headers: HeaderMap,
    idempotency_header: HeaderName,
    reference_pointer: String,
    status: Option<(String, ResultMapping)>,
    reason_pointer: String,
    result_pointer: String,
    max_response_bytes: usize,
    status_url: Option<StatusUrl>,
}

/// A status URL template, split around its `{ref}` placeholder.
#[derive(Clone)]
struct StatusUrl {
    url: Url,
    before: String,
    after: String,
}

impl HttpJsonAdapter {
    /// An adapter posting to `url` (http or https).
    pub fn new(url: &str) -> Result<Self> {
        let url = parse_http_url("url", url)?;
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::invalid("client", format!("cannot build an HTTP client: {e}")))?;
        Ok(HttpJsonAdapter {
            url,
            client,
            host_client: false,
            headers: HeaderMap::new(),
            idempotency_header: HeaderName::from_static("idempotency-key"),
            reference_pointer: "/reference".to_owned(),
            status: None,
            reason_pointer: "/reason".to_owned(),
            result_pointer: String::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            status_url: None,
        })
    }

    /// Send this header on every request, replacing an earlier value of the
    /// same name. The adapter's own headers (the idempotency header and
    /// `X-Liaison-*`) win over one set here; `Content-Type` and `Accept` set
    /// here win over the adapter's `application/json`.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Error::invalid("header name", format!("{name:?} is not a header name")))?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            Error::invalid(
                "header value",
                format!("the value of {name} has characters not allowed in a header"),
            )
        })?;
        value.set_sensitive(is_secret(&name));
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Send `Authorization: Bearer <token>` on every request. The token is
    /// marked sensitive and never shown by `Debug`.
    pub fn bearer_token(mut self, token: &str) -> Result<Self> {
        let invalid = || {
            Error::invalid(
                "bearer token",
                "empty or has characters not allowed in a header",
            )
        };
        if token.trim().is_empty() {
            return Err(invalid());
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| invalid())?;
        value.set_sensitive(true);
        self.headers.insert(AUTHORIZATION, value);
        Ok(self)
    }

    /// The header carrying the idempotency key (default `Idempotency-Key`).
    pub fn idempotency_header(mut self, name: &str) -> Result<Self> {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Error::invalid(
                "idempotency header",
                format!("{name:?} is not a header name"),
            )
        })?;
        let reserved = [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            TRANSFER_ENCODING,
            HOST,
            AUTHORIZATION,
            SUBMISSION_ID,
            ATTEMPT,
        ];
        if reserved.contains(&header) {
            return Err(Error::invalid(
                "idempotency header",
                format!("{header} is used for something else"),
            ));
        }
        self.idempotency_header = header;
        Ok(self)
    }

    /// Where the partner's reference is in a 2xx answer: a JSON pointer
    /// (RFC 6901), default `/reference`. `""` is the whole body.
    pub fn reference_pointer(mut self, pointer: &str) -> Result<Self> {
        self.reference_pointer = json_pointer("reference pointer", pointer)?;
        Ok(self)
    }

    /// Where a result is in the answer, and which values mean what; a value
    /// meaning neither is an acceptance awaiting its result. Without it the
    /// HTTP status decides: 202 Accepted awaits the result (by callback or
    /// poll), any other 2xx is a success.
    pub fn status_pointer(mut self, pointer: &str, mapping: ResultMapping) -> Result<Self> {
        self.status = Some((json_pointer("status pointer", pointer)?, mapping));
        Ok(self)
    }

    /// Where the reason for a failed result is (default `/reason`). Without a
    /// value there, the reason names the status value.
    pub fn reason_pointer(mut self, pointer: &str) -> Result<Self> {
        self.reason_pointer = json_pointer("reason pointer", pointer)?;
        Ok(self)
    }

    /// Where the partner's result document is in an answer that carries a
    /// result (a final 2xx answer, a status poll's final answer): a JSON
    /// pointer, default `""` (the whole body). The document is kept with
    /// the submission and handed to the host's result handler; an answer
    /// without a value there finishes without a document.
    pub fn result_pointer(mut self, pointer: &str) -> Result<Self> {
        self.result_pointer = json_pointer("result pointer", pointer)?;
        Ok(self)
    }

    /// Use the host's client (proxies, TLS roots, timeouts) instead of the
    /// default one. Its redirect policy then applies: reqwest's default
    /// follows redirects, turning a redirected POST into a GET for 301-303.
    pub fn client(mut self, client: Client) -> Self {
        self.client = client;
        self.host_client = true;
        self
    }

    /// Read at most this many bytes of an answer (default 64 KiB). A longer
    /// 2xx answer is a `Transient` failure: see the table on the type.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Enable [`PartnerAdapter::poll_status`]: GET this URL, where `{ref}`
    /// (once, in the path) is replaced by the percent-encoded partner
    /// reference, and read the answer through the
    /// [`status_pointer`](Self::status_pointer) mapping. Polling stays
    /// unsupported without a status pointer, and for a submission without a
    /// reference. A poll times out after 30 s.
    pub fn status_url(mut self, template: &str) -> Result<Self> {
        let url = parse_http_url("status url", template)?;
        let path = url.path();
        let Some((before, after)) = path.split_once(REF_PLACEHOLDER) else {
            return Err(Error::invalid("status url", "has no {ref} in its path"));
        };
        if after.contains(REF_PLACEHOLDER) {
            return Err(Error::invalid("status url", "has {ref} more than once"));
        }
        let (before, after) = (before.to_owned(), after.to_owned());
        self.status_url = Some(StatusUrl { url, before, after });
        Ok(self)
    }

    /// The configured headers plus `Accept: application/json` unless set.
    fn request_headers(&self) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("application/json"));
        headers
    }

    /// Send a request; a 2xx answer's status and body (at most
    /// `max_response_bytes`), anything else as a [`PartnerError`].
    async fn exchange(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>), PartnerError> {
        let mut response = request
            .send()
            .await
            .map_err(|e| PartnerError::from_reqwest(e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            let limit = self.max_response_bytes.min(EXCERPT_BYTES);
            // The status decides; a body that cannot be read only loses the hint.
            let (excerpt, _) = read_capped(&mut response, limit).await.unwrap_or_default();
            let hint = String::from_utf8_lossy(&excerpt);
            return Err(
                PartnerError::classify_http(status, response.headers(), &hint)
                    .err()
                    .unwrap_or_else(|| PartnerError::transient("unexpected status")),
            );
        }
        let too_long = || PartnerError::Transient {
            reason: format!(
                "the partner's {status} answer is longer than {} bytes and was not read",
                self.max_response_bytes
            ),
            status: Some(status.as_u16()),
            source: None,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(too_long());
        }
        let (body, complete) = read_capped(&mut response, self.max_response_bytes)
            .await
            .map_err(|e| PartnerError::from_reqwest(e, timeout))?;
        if !complete {
            return Err(too_long());
        }
        Ok((status, body))
    }

    /// The result in an answer, if the status mapping recognises one.
    fn result_in(&self, body: &Value) -> Option<Outcome> {
        let (pointer, mapping) = self.status.as_ref()?;
        let value = body.pointer(pointer)?;
        let outcome = if mapping.verdict(value)? {
            Outcome::succeeded()
        } else {
            let reason = body
                .pointer(&self.reason_pointer)
                .and_then(|r| match r {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .map(|r| one_line(&r))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| format!("the partner reported status {value}"));
            Outcome::failed(reason)
        };
        Some(self.with_document(outcome, body))
    }

    /// `outcome` with the result document at the result pointer, if any.
    fn with_document(&self, outcome: Outcome, body: &Value) -> Outcome {
        match body.pointer(&self.result_pointer) {
            Some(Value::Null) | None => outcome,
            Some(document) => outcome.with_result(document.clone()),
        }
    }

    /// The usable partner reference in an answer.
    fn reference_in(&self, body: &Value, ctx: &AttemptContext) -> Option<String> {
        let reference = scalar_text(body.pointer(&self.reference_pointer)?)?;
        if reference.is_empty() {
            return None;
        }
        if reference.len() > MAX_REFERENCE_BYTES || reference.chars().any(char::is_control) {
            tracing::warn!(
                submission = %ctx.submission_id,
                partner = %ctx.partner,
                bytes = reference.len(),
                "partner reference is longer than {MAX_REFERENCE_BYTES} bytes or has control characters; not kept"
            );
            return None;
        }
        Some(reference)
    }
}

#[async_trait]
impl PartnerAdapter for HttpJsonAdapter {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        let Some(payload) = submission.payload.as_ref() else {
            return Err(PartnerError::permanent("payload was purged"));
        };
        let body = serde_json::to_vec(payload)
            .map_err(|e| PartnerError::permanent(format!("payload is not encodable JSON: {e}")))?;
        let key = HeaderValue::from_bytes(ctx.idempotency_key.as_bytes()).map_err(|_| {
            PartnerError::permanent("the idempotency key has characters not allowed in a header")
        })?;
        let mut headers = self.request_headers();
        headers
            .entry(CONTENT_TYPE)
            .or_insert(HeaderValue::from_static("application/json"));
        headers.insert(self.idempotency_header.clone(), key);
        headers.insert(ATTEMPT, HeaderValue::from(ctx.attempt));
        if let Ok(id) = HeaderValue::from_str(&ctx.submission_id.to_string()) {
            headers.insert(SUBMISSION_ID, id);
        }

        tracing::debug!(
            submission = %ctx.submission_id,
            partner = %ctx.partner,
            attempt = ctx.attempt,
            bytes = body.len(),
            "posting submission"
        );
        let request = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body);
        let (status, body) = self.exchange(request, remaining(ctx.deadline)).await?;

        // Without a status pointer the HTTP status says it: 202 Accepted is
        // "result to come", any other 2xx is the final answer.
        let in_response = self.status.is_none() && status != StatusCode::ACCEPTED;
        let unread = || {
            if in_response {
                SubmitOutcome::Completed(Outcome::succeeded())
            } else {
                SubmitOutcome::AwaitResult { external_ref: None }
            }
        };
        if body.trim_ascii().is_empty() {
            return Ok(unread());
        }
        let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
            tracing::warn!(
                submission = %ctx.submission_id,
                partner = %ctx.partner,
                status = status.as_u16(),
                bytes = body.len(),
                "partner answered with a body that is not JSON; no reference or result document kept"
            );
            return Ok(unread());
        };
        if let Some(outcome) = self.result_in(&answer) {
            return Ok(SubmitOutcome::Completed(outcome));
        }
        if in_response {
            let outcome = self.with_document(Outcome::succeeded(), &answer);
            return Ok(SubmitOutcome::Completed(outcome));
        }
        Ok(SubmitOutcome::AwaitResult {
            external_ref: self.reference_in(&answer, ctx),
        })
    }

    async fn poll_status(&self, submission: &Submission) -> Result<PollStatus, PollError> {
        let (Some(template), Some((pointer, _))) = (&self.status_url, &self.status) else {
            return Err(PollError::Unsupported);
        };
        let Some(reference) = submission.external_ref.as_deref() else {
            return Err(PollError::Unsupported);
        };
        if matches!(reference, "" | "." | "..") {
            return Err(
                PartnerError::permanent("the partner reference cannot be put in a URL").into(),
            );
        }
        let mut url = template.url.clone();
        url.set_path(&format!(
            "{}{}{}",
            template.before,
            encode_segment(reference),
            template.after
        ));
        let mut headers = self.request_headers();
        if let Ok(id) = HeaderValue::from_str(&submission.id.to_string()) {
            headers.insert(SUBMISSION_ID, id);
        }
        let request = self.client.get(url).headers(headers).timeout(POLL_TIMEOUT);
        let (status, body) = self.exchange(request, POLL_TIMEOUT).await?;
        let unreadable = |what: &str| PartnerError::Transient {
            reason: format!("the status answer {what}"),
            status: Some(status.as_u16()),
            source: None,
        };
        let answer: Value = serde_json::from_slice(&body).map_err(|_| unreadable("is not JSON"))?;
        match self.result_in(&answer) {
            Some(outcome) => Ok(PollStatus::Done(outcome)),
            None if answer.pointer(pointer).is_some() => Ok(PollStatus::Pending),
            None => Err(unreadable("has no status value").into()),
        }
    }
}

impl fmt::Debug for HttpJsonAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpJsonAdapter")
            .field("url", &url_origin(&self.url))
            .field("headers", &header_names)
            .field("idempotency_header", &self.idempotency_header.as_str())
            .field("reference_pointer", &self.reference_pointer)
            .field("status", &self.status)
            .field("reason_pointer", &self.reason_pointer)
            .field("max_response_bytes", &self.max_response_bytes)
            .field(
                "status_url",
                &self.status_url.as_ref().map(|s| url_origin(&s.url)),
            )
            .field("client", &if self.host_client { "host" } else { "default" })
            .finish()
    }
}

/// Parse an http(s) URL; the reason never repeats the URL (it may hold secrets).
fn parse_http_url(field: &'static str, text: &str) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| Error::invalid(field, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(
            field,
            format!("scheme {:?} is not http or https", url.scheme()),
        ));
    }
    Ok(url)
}

/// A URL as `Debug` may show it: scheme, host and port only. User info,
/// query and fragment may hold credentials, and so may the path (chat
/// webhooks put their secret there; APIs put claim or patient ids there).
pub(crate) fn url_origin(url: &Url) -> String {
    let mut text = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        text.push_str(&format!(":{port}"));
    }
    text
}

fn json_pointer(field: &'static str, pointer: &str) -> Result<String> {
    if pointer.is_empty() || pointer.starts_with('/') {
        Ok(pointer.to_owned())
    } else {
        Err(Error::invalid(
            field,
            "a JSON pointer must be empty or start with '/'",
        ))
    }
}

/// Headers whose values are likely secrets (hidden from HTTP-level debug logs).
fn is_secret(name: &HeaderName) -> bool {
    [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE].contains(name)
        || ["key", "token", "secret", "auth", "signature", "password"]
            .iter()
            .any(|word| name.as_str().contains(word))
}

/// A string, number or boolean as text; other JSON values have none.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// At most [`MAX_REASON_CHARS`] characters, control characters as spaces.
fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_owned()
}

/// Percent-encode everything but RFC 3986 unreserved characters, so the
/// text is one path segment whatever it holds.
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Time left until `deadline`, zero if it passed (for error text only).
fn remaining(deadline: DateTime<Utc>) -> Duration {
    (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// Read at most `limit` bytes of the body; `true` when that was all of it.
async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

#[cfg(test)]
mod tests;
