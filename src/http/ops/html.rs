//! HTML helpers: escaping, the page shell, and plain words for the model.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::engine::CircuitState;
use crate::model::submission::SubmissionState;
use crate::ops::alerts::ProblemClass;
use crate::ops::{Trend, Verdict};

/// Escape text for HTML element content and quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// A submission's business value with its currency (`EUR 125.00`,
/// `125.00 (currency unspecified)`), or a dash; escaped.
pub(super) fn value(s: &crate::Submission) -> String {
    s.business_value.map_or("—".into(), |v| {
        escape(&crate::format_value(v, s.currency))
    })
}

/// Summed value per currency (`EUR 250.00 + USD 10.00`, `0`); escaped.
pub(super) fn money(m: &crate::Money) -> String {
    escape(&m.to_string())
}

/// A time for people: `2025-03-01 14:05:09 UTC`.
pub(super) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration for people: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
pub(super) fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

/// A link target that is safe to put in `href`: only http(s) URLs.
pub(super) fn safe_link(url: &str) -> Option<&str> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(url.trim())
}

pub(super) fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Healthy => "Healthy",
        Verdict::Degraded => "Degraded",
        Verdict::Down => "Down",
    }
}

pub(super) fn verdict_class(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Healthy => "ok",
        Verdict::Degraded => "warn",
        Verdict::Down => "bad",
    }
}

pub(super) fn trend_words(trend: Trend) -> &'static str {
    match trend {
        Trend::Improving => "improving",
        Trend::Steady => "steady",
        Trend::Worsening => "getting worse",
        Trend::Unknown => "too early to tell",
    }
}

pub(super) fn circuit_words(circuit: Option<CircuitState>) -> &'static str {
    match circuit {
        Some(CircuitState::Closed) => "sending normally",
        Some(CircuitState::Open) => "stopped: the partner is unreachable",
        Some(CircuitState::HalfOpen) => "testing whether the partner is back",
        None => "not run by this process",
    }
}

/// What a state means, in a few words.
pub(super) fn state_words(state: SubmissionState) -> &'static str {
    use SubmissionState::*;
    match state {
        Queued => "waiting to be sent",
        InFlight => "being sent now",
        AwaitingResult => "accepted; waiting for the partner's result",
        Succeeded => "done: the partner processed it",
        Failed => "the partner could not process it",
        DeadLettered => "not delivered: sending was given up",
        Stuck => "accepted, but the result is overdue",
        Cancelled => "cancelled by a person",
        ResolvedManually => "settled by hand",
    }
}

/// What a problem class means, in a few words.
pub(super) fn class_words(class: ProblemClass) -> &'static str {
    match class {
        ProblemClass::PartnerUnavailable => "Partner unavailable",
        ProblemClass::RejectedByPartner => "Refused by the partner",
        ProblemClass::ResultOverdue => "Results overdue",
        ProblemClass::ProcessingFailed => "Partner reports failures",
        ProblemClass::MalformedCallback => "Unreadable callbacks",
        ProblemClass::UnmatchedCallback => "Callbacks matching nothing",
        ProblemClass::BadSignature => "Callbacks with a bad signature",
        ProblemClass::DelayBudgetExceeded => "Work running late",
        ProblemClass::ConflictingCallback => "Contradicting callbacks",
        ProblemClass::ResultsNotDelivered => "Results not delivered to the host",
        ProblemClass::WorkerCrashed => "Work that crashed the worker",
        ProblemClass::SilentPartner => "Silent partner",
        ProblemClass::BusinessDeadlineAtRisk => "Business deadlines at risk",
    }
}

const STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1b1b1b;line-height:1.4}\
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}h3{margin:0 0 .5rem}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem}\
.card{border:1px solid #ccc;border-radius:.5rem;padding:1rem}\
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;font-weight:bold;color:#fff}\
.ok{background:#2e7d32}.warn{background:#b26a00}.bad{background:#c62828}\
.note{background:#fff4e5;border:1px solid #f0c36d;padding:.5rem 1rem;border-radius:.3rem}\
.error{background:#fdecea;border:1px solid #e57373;padding:.5rem 1rem;border-radius:.3rem}\
.done{background:#edf7ed;border:1px solid #81c784;padding:.5rem 1rem;border-radius:.3rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#555}dd{margin:0}\
fieldset{margin:1rem 0;border:1px solid #ccc;border-radius:.3rem}label{display:block;margin:.4rem 0}\
input,select,textarea{font:inherit;padding:.2rem;min-width:18rem}button{font:inherit;padding:.3rem 1rem}\
.legend span{margin-right:1rem}.nowrap{white-space:nowrap}.muted{color:#666}svg{max-width:100%;height:auto}";

/// A whole page.
pub(super) fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// An HTML response: no scripts may run, no framing, nothing cached. The
/// referrer policy is `same-origin`, not `no-referrer`: under `no-referrer`
/// browsers send `Origin: null` even on same-origin form posts, which the
/// origin check would refuse.
pub(super) fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// A page that only says what went wrong, linking back to `home` (the
/// overview, with the read token when the request carried it).
pub(super) fn error_page(status: StatusCode, message: &str, home: &str) -> Response {
    let body = format!(
        "<p><a href=\"{}\">&larr; All partners</a></p><h1>{}</h1><p class=\"error\" role=\"alert\">{}</p>",
        escape(home),
        escape(status.canonical_reason().unwrap_or("Error")),
        escape(message)
    );
    respond(status, document("Ops: error", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<script>alert("x's & y")</script>"#),
            "&lt;script&gt;alert(&quot;x&#x27;s &amp; y&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("plain é text"), "plain é text");
    }

    #[test]
    fn values_carry_their_currency() {
        let eur = crate::Currency::from_code("EUR").ok();
        assert_eq!(
            money(&crate::Money::default().plus(eur, 12_500).plus(None, 5)),
            "EUR 125.00 + 0.05 (currency unspecified)"
        );
        assert_eq!(money(&crate::Money::default()), "0");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(600), "10 min");
        assert_eq!(duration(3 * 3600 + 300), "3 h 5 min");
        assert_eq!(duration(2 * 86400 + 4 * 3600), "2 d 4 h");
    }

    #[test]
    fn only_web_links_are_linked() {
        assert_eq!(safe_link("https://wiki/x"), Some("https://wiki/x"));
        assert_eq!(safe_link("javascript:alert(1)"), None);
        assert_eq!(safe_link("data:text/html,x"), None);
    }
}
