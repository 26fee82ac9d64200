//! One partner: its health, its pause (until when, who paused it and why),
//! and the forms to pause it for announced maintenance or resume it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration as Span, NaiveDateTime, Utc};
use maud::{Markup, html};

use super::actions::{Failure, Request};
use super::forms::{checked, done, failed, read_only, who_and_why};
use super::html::{
    CELL_CHARS, Shell, document, error_page, respond, shown, verdict_class, verdict_word, when,
};
use super::journal::JOURNAL_ROWS;
use super::lists::with_partner;
use super::{OpsState, Shared};
use crate::ops::{JournalEntry, JournalFilter, PartnerHealth};
use crate::store::Pause;

/// Longest pause the page accepts: a maintenance window, not a shutdown.
const MAX_PAUSE: Span = Span::days(30);

/// `GET /partners/{partner}`
pub(super) async fn page(State(state): State<Shared>, Path(partner): Path<String>) -> Response {
    match render(&state, &partner, &Request::default(), None, StatusCode::OK).await {
        Ok(response) => response,
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

/// What the page shows: health, pause, and the partner's journal lines.
type Loaded = (Option<PartnerHealth>, Option<Pause>, Vec<JournalEntry>);

async fn load(state: &Shared, partner: &str) -> Result<Loaded, Failure> {
    let report = state.liaison.health(state.window).await?;
    let health = report.partners.into_iter().find(|p| p.partner == partner);
    let pause = state
        .liaison
        .store()
        .pauses(Utc::now())
        .await?
        .into_iter()
        .find(|p| p.partner == partner);
    let journal = state
        .liaison
        .ops_journal(
            &JournalFilter::default()
                .partner(partner)
                .limit(JOURNAL_ROWS),
        )
        .await?;
    Ok((health, pause, journal))
}

async fn render(
    state: &Shared,
    partner: &str,
    request: &Request,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, Failure> {
    let (health, pause, journal) = load(state, partner).await?;
    let path = partner_path(partner);
    let body = html! {
        h1 { "Partner " (shown(partner, CELL_CHARS)) " "
            @if let Some(h) = &health {
                span.badge.(verdict_class(h.verdict)) { (verdict_word(h.verdict)) }
            }
        }
        @if let Some(message) = error {
            p.error role="alert" { (shown(message, super::html::DETAIL_CHARS)) }
        }
        @match &health {
            Some(h) if !h.reasons.is_empty() => {
                ul.reasons { @for reason in &h.reasons { li { (shown(reason, CELL_CHARS)) } } }
            }
            Some(_) => p { "Everything is working." },
            None => p { "No submissions for this partner are in the outbox." },
        }
        p {
            a href=(state.link(&with_partner("/lists/stuck", Some(partner)))) { "Stuck work" } " · "
            a href=(state.link(&with_partner("/lists/failed", Some(partner)))) { "Failed work" } " · "
            a href=(state.link(&with_partner("/quarantine", Some(partner)))) { "Quarantined callbacks" } " · "
            a href=(state.link(&with_partner("/deliveries", Some(partner)))) { "Results not delivered" }
        }
        h2 #pause { "Pause" }
        @match &pause {
            Some(p) => {
                p.note data-field="paused" { "Paused until " strong { (when(p.until)) } " by "
                    strong { (shown(p.actor.as_str(), CELL_CHARS)) } ": " (shown(&p.reason, CELL_CHARS))
                    ". Nothing is sent to it meanwhile; its work waits in the queue, and alerts raised \
                    for it are marked as expected." }
            }
            None => p data-field="paused" { "Not paused: work is sent as usual." }
        }
        (forms(state, &path, pause.is_some(), request))
        (super::journal::table(&journal))
    };
    let shell = Shell { state, query: "" };
    Ok(respond(status, document(&shell, "Ops: partner", body)))
}

fn forms(state: &OpsState, path: &str, paused: bool, request: &Request) -> Markup {
    if state.action_token().is_none() {
        return read_only("pausing and resuming are");
    }
    html! {
        form method="post" action=(state.link(&format!("{path}/pause"))) data-action="pause" {
            fieldset {
                legend { @if paused { "Change the pause" } @else { "Pause: the partner announced maintenance" } }
                p.muted { "Nothing is sent until the time you give (UTC) or until someone resumes it; \
                    nothing is lost. Give a time like 2026-03-01 18:00, or a length like 90m, 2h or 1d." }
                label { "Until (UTC, or a length) "
                    input name="until" required maxlength="40" placeholder="2h"
                        value=(request.until.as_deref().unwrap_or(""));
                }
                (who_and_why(request, "Why (the partner's announcement)"))
                button type="submit" { "Pause" }
            }
        }
        @if paused {
            form method="post" action=(state.link(&format!("{path}/resume"))) data-action="resume" {
                fieldset {
                    legend { "Resume now" }
                    p.muted { "Queued work goes out at once." }
                    (who_and_why(request, "Why"))
                    button type="submit" { "Resume" }
                }
            }
        }
    }
}

fn partner_path(partner: &str) -> String {
    let name: String = form_urlencoded::byte_serialize(partner.as_bytes()).collect();
    format!("/partners/{name}")
}

/// When a pause ends: a UTC time (`2026-03-01 18:00`, `2026-03-01T18:00`,
/// RFC 3339) or a length from now (`90m`, `2h`, `1d`, `45 min`).
pub(super) fn parse_until(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    let text = text.trim();
    let bad = || {
        Failure::bad_request(format!(
            "invalid until: {text:?}; give a UTC time like 2026-03-01 18:00 or a length like 2h"
        ))
    };
    let until = if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        at.with_timezone(&Utc)
    } else if let Some(at) = [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    {
        at.and_utc()
    } else {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let span = match text[digits.len()..].trim() {
            "m" | "min" | "mins" | "minute" | "minutes" => Span::try_minutes(n),
            "h" | "hour" | "hours" => Span::try_hours(n),
            "d" | "day" | "days" => Span::try_days(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        now.checked_add_signed(span).ok_or_else(bad)?
    };
    if until <= now {
        return Err(Failure::bad_request(
            "invalid until: a pause must end in the future",
        ));
    }
    if until - now > MAX_PAUSE {
        return Err(Failure::bad_request(
            "invalid until: at most 30 days; a partner gone for longer is a configuration change",
        ));
    }
    Ok(until)
}

/// `POST /partners/{partner}/{pause|resume}`: fields `actor`, `reason`,
/// `token`, and `until` for pause.
pub(super) async fn act(
    State(state): State<Shared>,
    Path((partner, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let back = partner_path(&partner);
    let (_, request) = match checked(&state, &headers, &body, &back) {
        Ok(checked) => checked,
        Err(refusal) => return *refusal,
    };
    let acted = async {
        let (actor, reason) = request.check()?;
        match action.as_str() {
            "pause" => {
                let until = parse_until(request.until.as_deref().unwrap_or(""), Utc::now())?;
                state
                    .liaison
                    .pause(&partner, until, actor.clone(), reason)
                    .await?;
                Ok(html! {
                    p { (shown(&partner, CELL_CHARS)) " is paused until " strong { (when(until)) }
                        " by " (shown(actor.as_str(), CELL_CHARS)) ": " (shown(reason, CELL_CHARS))
                        ". Nothing is sent to it until then; its work waits in the queue." }
                })
            }
            "resume" => {
                let paused = state
                    .liaison
                    .store()
                    .pauses(Utc::now())
                    .await?
                    .into_iter()
                    .any(|p| p.partner == partner);
                if !paused {
                    return Err(Failure::new(
                        StatusCode::CONFLICT,
                        format!("{partner} is not paused: there is nothing to resume"),
                    ));
                }
                state
                    .liaison
                    .resume(&partner, actor.clone(), reason)
                    .await?;
                Ok(html! {
                    p { (shown(&partner, CELL_CHARS)) " is resumed by " (shown(actor.as_str(), CELL_CHARS))
                        ": " (shown(reason, CELL_CHARS)) ". Its queued work goes out now." }
                })
            }
            _ => Err(Failure::not_found("no such action: use pause or resume")),
        }
    };
    match acted.await {
        Ok(what) => {
            tracing::warn!(
                partner = %partner,
                action = %action,
                actor = request.actor.trim(),
                reason = request.reason.trim(),
                "ops page action"
            );
            done(&state, "Done", what, &back, "Back to the partner")
        }
        Err(f) if f.status == StatusCode::BAD_REQUEST => {
            // A form to fix: show it again, filled in, with what was wrong.
            match render(&state, &partner, &request, Some(&f.message), f.status).await {
                Ok(response) => response,
                Err(_) => failed(&state, &f, &back, "Back to the partner"),
            }
        }
        Err(f) => failed(&state, &f, &back, "Back to the partner"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_ends_read_as_times_or_lengths() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| parse_until(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2h").unwrap(), "2026-03-01T14:00:00+00:00");
        assert_eq!(at("90 min").unwrap(), "2026-03-01T13:30:00+00:00");
        assert_eq!(at("1d").unwrap(), "2026-03-02T12:00:00+00:00");
        assert_eq!(at("2026-03-01 18:00").unwrap(), "2026-03-01T18:00:00+00:00");
        assert_eq!(at("2026-03-01T18:00").unwrap(), "2026-03-01T18:00:00+00:00");
        assert!(at("2026-03-01 11:00").is_err(), "in the past");
        assert!(at("31d").is_err(), "too long");
        assert!(at("soon").is_err());
        assert!(at("99999999999999999d").is_err());
        assert!(at("").is_err());
    }
}
