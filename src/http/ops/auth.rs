//! Who may read and act: the tokens (compared in constant time), the origin
//! check and the allowed hosts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use axum::http::{HeaderMap, StatusCode, Uri};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The shortest ops token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// How often refused token attempts are logged, at most.
pub(super) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Refuse a configured token shorter than [`MIN_TOKEN_BYTES`] (none, or an
/// empty one, makes the page read-only and is fine).
pub(super) fn check_token(token: Option<&str>) -> Result<()> {
    match token {
        Some(t) if !t.is_empty() && t.len() < MIN_TOKEN_BYTES => Err(Error::invalid(
            "token",
            format!(
                "{} bytes; an ops token needs at least {MIN_TOKEN_BYTES} (use a long random secret)",
                t.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Refused token attempts: counted, and logged at most once per interval
/// (with how many there were since the last line), so that guessing is
/// visible without flooding the log.
#[derive(Debug)]
pub(super) struct FailedTokens {
    count: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
    interval: Duration,
}

impl FailedTokens {
    pub(super) fn new(interval: Duration) -> Self {
        FailedTokens {
            count: AtomicU64::new(0),
            last_logged: Mutex::new(None),
            interval,
        }
    }

    /// Count one refused attempt; log a warning if none was logged within
    /// the interval. Returns the number the warning reported, if one was logged.
    pub(super) fn record(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            return None;
        }
        *last = Some(now);
        let failed = self.count.swap(0, Ordering::Relaxed);
        tracing::warn!(
            failed,
            interval_secs = self.interval.as_secs(),
            "ops page: requests refused for a missing or wrong token"
        );
        Some(failed)
    }
}

/// Why an action was refused before it was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// No token is configured: the page is read-only.
    ReadOnly,
    /// A browser posted from another site.
    CrossOrigin,
    /// The token is missing or wrong.
    BadToken,
}

impl Denied {
    pub(super) fn status(self) -> StatusCode {
        match self {
            Denied::ReadOnly | Denied::CrossOrigin => StatusCode::FORBIDDEN,
            Denied::BadToken => StatusCode::UNAUTHORIZED,
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Denied::ReadOnly => {
                "read-only: this ops page was started without a token, so actions are turned off"
            }
            Denied::CrossOrigin => "refused: the request came from another site",
            Denied::BadToken => "the ops token is missing or wrong",
        }
    }
}

/// Check, in this order: actions are enabled, the request is not
/// cross-origin, and `given` is the configured token.
pub(super) fn authorize(
    configured: Option<&str>,
    headers: &HeaderMap,
    given: Option<&str>,
) -> Result<(), Denied> {
    let Some(configured) = configured else {
        return Err(Denied::ReadOnly);
    };
    if !same_origin(headers) {
        return Err(Denied::CrossOrigin);
    }
    match given {
        Some(given) if same_token(configured, given) => Ok(()),
        _ => Err(Denied::BadToken),
    }
}

/// Whether a read may go ahead: no read token is configured, or `given` is it
/// (the same constant-time comparison as actions).
pub(super) fn may_read(configured: Option<&str>, given: Option<&str>) -> bool {
    match (configured, given) {
        (None, _) => true,
        (Some(configured), Some(given)) => same_token(configured, given),
        (Some(_), None) => false,
    }
}

/// Refuse an allowed-hosts list that is empty or holds something other than
/// `host` or `host:port` (an empty list would refuse every request).
pub(super) fn check_hosts(hosts: Option<&[String]>) -> Result<()> {
    let Some(hosts) = hosts else {
        return Ok(());
    };
    if hosts.is_empty() {
        return Err(Error::invalid(
            "allowed_hosts",
            "the list is empty, so every request would be refused; leave it unset or name the hosts",
        ));
    }
    for host in hosts {
        if split_host(host).is_none() {
            return Err(Error::invalid(
                "allowed_hosts",
                format!("{host:?} is not a host name or host:port"),
            ));
        }
    }
    Ok(())
}

/// Whether the request's `Host` header (or, without one, the authority of an
/// HTTP/2 request's URI) names one of `allowed`. An entry without a port
/// allows its host on any port; names compare without regard to case.
pub(super) fn host_allowed(allowed: &[String], headers: &HeaderMap, uri: &Uri) -> bool {
    let host = match headers.get(HOST) {
        Some(value) => match value.to_str() {
            Ok(host) => host,
            Err(_) => return false,
        },
        None => match uri.authority() {
            Some(authority) => authority.as_str(),
            None => return false,
        },
    };
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    allowed
        .iter()
        .filter_map(|a| split_host(a))
        .any(|(a_name, a_port)| {
            a_name.eq_ignore_ascii_case(name) && (a_port.is_none() || a_port == port)
        })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` as its name and port; `None`
/// when it is empty or holds characters no host name has.
fn split_host(host: &str) -> Option<(&str, Option<&str>)> {
    let (name, port, v6) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (v6, port, true)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port), false),
            None => (host, None, false),
        }
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (v6 && c == ':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (name_ok && port_ok).then_some((name, port))
}

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Equal tokens, in time that depends on neither (hashing first hides the
/// length too).
fn same_token(configured: &str, given: &str) -> bool {
    let a = Sha256::digest(configured.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// No `Origin` (not a browser, or a same-origin navigation that omits it), or
/// one naming the host the request was sent to. A browser's
/// `Sec-Fetch-Site: cross-site` is refused as well.
fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (origin.to_str(), header(HOST.as_str())) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and other opaque origins
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let normalize = |a: &str| {
        let a = a.trim_end_matches('/').to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(bare) => bare.to_owned(),
            None => a,
        }
    };
    normalize(authority) == normalize(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(check_token(None).is_ok());
        assert!(check_token(Some("")).is_ok());
        assert!(check_token(Some(&"x".repeat(MIN_TOKEN_BYTES))).is_ok());
        let short = check_token(Some(&"x".repeat(MIN_TOKEN_BYTES - 1))).unwrap_err();
        assert!(short.is_invalid_input(), "{short:?}");
        assert!(check_token(Some("s3cret")).is_err());
    }

    #[test]
    fn failed_attempts_are_logged_at_most_once_per_interval() {
        let failed = FailedTokens::new(Duration::from_millis(200));
        assert_eq!(failed.record(), Some(1));
        for _ in 0..50 {
            assert_eq!(failed.record(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        // The next line reports every attempt since the last one.
        assert_eq!(failed.record(), Some(51));
        assert_eq!(failed.record(), None);
    }

    #[test]
    fn tokens_compare_by_value() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cret", "s3cres"));
        assert!(!same_token("s3cret", "s3cret "));
        assert!(!same_token("s3cret", ""));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer abc")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn origins_must_name_the_host() {
        let ok = |pairs| same_origin(&headers(pairs));
        assert!(ok(&[]));
        assert!(ok(&[("host", "ops.local:8080")]));
        assert!(ok(&[
            ("origin", "http://ops.local:8080"),
            ("host", "ops.local:8080")
        ]));
        assert!(ok(&[
            ("origin", "https://OPS.local"),
            ("host", "ops.local:443")
        ]));
        assert!(!ok(&[
            ("origin", "http://evil.example"),
            ("host", "ops.local")
        ]));
        assert!(!ok(&[
            ("origin", "http://ops.local:8081"),
            ("host", "ops.local:8080")
        ]));
        assert!(!ok(&[("origin", "null"), ("host", "ops.local")]));
        assert!(!ok(&[("origin", "http://ops.local")]));
        assert!(!ok(&[
            ("sec-fetch-site", "cross-site"),
            ("host", "ops.local")
        ]));
    }

    #[test]
    fn reads_need_the_read_token_when_one_is_set() {
        assert!(may_read(None, None));
        assert!(may_read(None, Some("anything")));
        assert!(may_read(Some("s3cret"), Some("s3cret")));
        assert!(!may_read(Some("s3cret"), Some("s3cres")));
        assert!(!may_read(Some("s3cret"), None));
    }

    #[test]
    fn hosts_must_be_allowed() {
        let allowed = ["127.0.0.1:8081".to_owned(), "OPS.internal".to_owned()];
        let uri = Uri::from_static("/api/health");
        let ok = |pairs| host_allowed(&allowed, &headers(pairs), &uri);
        assert!(ok(&[("host", "127.0.0.1:8081")]));
        assert!(ok(&[("host", "ops.internal")]));
        assert!(ok(&[("host", "ops.internal:9000")]));
        assert!(!ok(&[("host", "127.0.0.1:8080")]));
        assert!(!ok(&[("host", "127.0.0.1")]));
        assert!(!ok(&[("host", "evil.example")]));
        assert!(!ok(&[("host", "ops.internal.evil.example")]));
        assert!(!ok(&[("host", "ops.internal:")]));
        assert!(!ok(&[]));
        let h2 = Uri::from_static("http://ops.internal/api/health");
        assert!(host_allowed(&allowed, &headers(&[]), &h2));
        let v6 = ["[::1]:8081".to_owned()];
        assert!(host_allowed(&v6, &headers(&[("host", "[::1]:8081")]), &uri));
        assert!(!host_allowed(
            &v6,
            &headers(&[("host", "[::2]:8081")]),
            &uri
        ));
    }

    #[test]
    fn host_lists_must_be_hosts() {
        assert!(check_hosts(None).is_ok());
        assert!(check_hosts(Some(&["127.0.0.1:8081".to_owned(), "ops".to_owned()])).is_ok());
        assert!(check_hosts(Some(&[])).is_err());
        assert!(check_hosts(Some(&["http://ops".to_owned()])).is_err());
        assert!(check_hosts(Some(&["ops:x".to_owned()])).is_err());
        assert!(check_hosts(Some(&["".to_owned()])).is_err());
    }

    #[test]
    fn refusals_come_in_order() {
        let none = headers(&[]);
        assert_eq!(authorize(None, &none, Some("t")), Err(Denied::ReadOnly));
        let evil = headers(&[("origin", "http://evil.example"), ("host", "ops.local")]);
        assert_eq!(
            authorize(Some("t"), &evil, Some("t")),
            Err(Denied::CrossOrigin)
        );
        assert_eq!(
            authorize(Some("t"), &none, Some("u")),
            Err(Denied::BadToken)
        );
        assert_eq!(authorize(Some("t"), &none, None), Err(Denied::BadToken));
        assert_eq!(authorize(Some("t"), &none, Some("t")), Ok(()));
    }
}
