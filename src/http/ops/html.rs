//! HTML: the page shell, text from data made inert, and plain words for
//! the model.
//!
//! Every page is built with [`maud`]: each `(value)` in a template is
//! escaped when it is rendered, so text from the store (keys, partner
//! errors, actors, callback bodies) cannot become markup. The only raw HTML
//! is the style sheet and the chart's SVG, both written by this module's
//! code from numbers and escaped text, marked [`PreEscaped`] where they are
//! put in. Text from data also goes through [`shown`], which cuts it to a
//! bounded length, shows control characters as visible escapes and isolates
//! it (`<bdi>`) so right-to-left overrides cannot reorder the page around it.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::engine::CircuitState;
use crate::model::submission::SubmissionState;
use crate::ops::alerts::ProblemClass;
use crate::ops::{Trend, Verdict};

/// Longest text from data shown in a table cell, in characters.
pub(super) const CELL_CHARS: usize = 300;
/// Longest text from data shown on a detail page, in characters.
pub(super) const DETAIL_CHARS: usize = 4000;

/// `text` made safe to show: at most `max` characters (then a note of how
/// many were left out), control and bidirectional-formatting characters as
/// visible `\u{..}` escapes, isolated from the text around it. Escaped for
/// HTML by the template.
pub(super) fn shown(text: &str, max: usize) -> Markup {
    let (clean, more) = inert(text, max);
    html! {
        bdi { (clean) }
        @if more > 0 {
            " " span.muted { "(" (more) " more characters not shown)" }
        }
    }
}

/// [`shown`]'s text: the first `max` characters with invisible ones made
/// visible, and how many characters were left out.
pub(super) fn inert(text: &str, max: usize) -> (String, usize) {
    let mut out = String::with_capacity(text.len().min(max * 2));
    let mut chars = text.chars();
    for (taken, c) in chars.by_ref().enumerate() {
        if taken == max {
            // Count the rest without keeping it.
            return (out, 1 + chars.count());
        }
        if invisible(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    (out, 0)
}

/// Control characters (but tab) and the characters that change the
/// direction or joining of the text around them.
fn invisible(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// A submission's business value with its currency (`EUR 125.00`,
/// `125.00 (currency unspecified)`), or a dash.
pub(super) fn value(s: &crate::Submission) -> String {
    s.business_value
        .map_or("—".into(), |v| crate::format_value(v, s.currency))
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
td{overflow-wrap:break-word}td bdi{display:inline-block;max-width:40ch;overflow-wrap:break-word}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem}\
.card{border:1px solid #ccc;border-radius:.5rem;padding:1rem}\
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;font-weight:bold;color:#fff}\
.ok{background:#2e7d32}.warn{background:#b26a00}.bad{background:#c62828}\
.note{background:#fff4e5;border:1px solid #f0c36d;padding:.5rem 1rem;border-radius:.3rem}\
.error{background:#fdecea;border:1px solid #e57373;padding:.5rem 1rem;border-radius:.3rem}\
.done{background:#edf7ed;border:1px solid #81c784;padding:.5rem 1rem;border-radius:.3rem}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#555}dd{margin:0;overflow-wrap:anywhere}\
fieldset{margin:1rem 0;border:1px solid #ccc;border-radius:.3rem}label{display:block;margin:.4rem 0}\
input,select,textarea{font:inherit;padding:.2rem;min-width:18rem}button{font:inherit;padding:.3rem 1rem}\
nav.top{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;border-bottom:1px solid #ddd;padding-bottom:.5rem}\
nav.top form{display:flex;gap:.3rem;margin-left:auto}nav.top input{min-width:20rem}\
.questions{display:grid;grid-template-columns:repeat(auto-fill,minmax(16rem,1fr));gap:.5rem;margin:1rem 0}\
.question{border:1px solid #ccc;border-radius:.5rem;padding:.5rem 1rem}.question h3{font-size:1rem}\
.pager{display:flex;gap:1rem;align-items:center}\
pre.body{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;border:1px solid #ddd;padding:.5rem;max-height:24rem;overflow:auto}\
.wide{overflow-x:auto}.legend span{margin-right:1rem}.nowrap{white-space:nowrap}.muted{color:#666}svg{max-width:100%;height:auto}";

/// What every page's top bar needs: the read token for its links.
pub(super) struct Shell<'a> {
    pub(super) state: &'a super::OpsState,
    /// What the search box holds.
    pub(super) query: &'a str,
}

/// A whole page: the top bar (links to the lists and the search box) and
/// `body`.
pub(super) fn document(shell: &Shell<'_>, title: &str, body: Markup) -> String {
    let state = shell.state;
    let search_action = "/search";
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav.top {
                    @for (path, name) in super::NAV {
                        a href=(state.link(path)) { (name) }
                    }
                    form method="get" action=(search_action) role="search" {
                        @if let Some(token) = state.reading_token() {
                            input type="hidden" name="token" value=(token);
                        }
                        input type="search" name="q" value=(shell.query)
                            placeholder="Key, correlation value, partner reference or id"
                            aria-label="Search by idempotency key, correlation value, partner reference or submission id"
                            maxlength="500";
                        button type="submit" { "Search" }
                    }
                }
                (body)
            }
        }
    }
    .into_string()
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
/// overview, with the read token when the request carried it). No top
/// bar: it is also the answer to a request that has not shown the read
/// token.
pub(super) fn error_page(status: StatusCode, message: &str, home: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Ops: error" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                p { a href=(home) { "← All partners" } }
                h1 { (status.canonical_reason().unwrap_or("Error")) }
                p.error role="alert" { (shown(message, DETAIL_CHARS)) }
            }
        }
    };
    respond(status, page.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_cut_and_made_visible() {
        let page = shown(r#"<script>alert("x's & y")</script>"#, 100).into_string();
        assert_eq!(
            page,
            "<bdi>&lt;script&gt;alert(&quot;x's &amp; y&quot;)&lt;/script&gt;</bdi>"
        );
        let rtl = shown("abc\u{202E}fed\u{0}\n", 100).into_string();
        assert_eq!(rtl, "<bdi>abc\\u{202e}fed\\u{0}\\u{a}</bdi>");
        let long = "é".repeat(1 << 20);
        let (cut, more) = inert(&long, 10);
        assert_eq!((cut.chars().count(), more), (10, (1 << 20) - 10));
        assert!(
            shown(&long, 10)
                .into_string()
                .contains("1048566 more characters")
        );
        assert_eq!(inert("plain", 5), ("plain".to_owned(), 0));
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
