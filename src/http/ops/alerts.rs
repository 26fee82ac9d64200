//! Alerts: the list (open, or all), one alert with its notification
//! history (to which sink and owner, delivered or failed), and
//! acknowledging one with a name so its reminders stop.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};

use super::actions::Failure;
use super::forms::{checked, done, failed, read_only};
use super::html::{
    CELL_CHARS, DETAIL_CHARS, Shell, class_words, document, error_page, respond, safe_link, shown,
    when,
};
use super::journal::JOURNAL_ROWS;
use super::params::Params;
use super::{OpsState, Shared};
use crate::model::event::Actor;
use crate::ops::JournalFilter;
use crate::ops::alerts::{Alert, AlertId, AlertNotification};

/// A table of alerts, each linking to its page (history and acknowledge).
pub(super) fn table(state: &OpsState, alerts: &[Alert]) -> Markup {
    html! {
        table #alerts-list {
            thead { tr { th { "Partner" } th { "Problem" } th { "Details" } th { "Since" } th { "Owner" }
                th { "Contact" } th { "Runbook" } th { "Acknowledged" } } }
            tbody {
                @for a in alerts {
                    tr data-alert=(a.id) {
                        td { (shown(&a.partner, CELL_CHARS)) }
                        td { a href=(state.link(&format!("/alerts/{}", a.id))) { (class_words(a.class)) }
                            @if a.expected { " " span.muted { "(during a planned pause)" } }
                            @if a.resolved_at.is_some() { " " span.muted { "(resolved)" } } }
                        td { (shown(&a.details, CELL_CHARS)) }
                        td.nowrap { (when(a.opened_at)) }
                        td { (shown(&a.owner.name, CELL_CHARS)) }
                        td { (shown(&a.owner.contact, CELL_CHARS)) }
                        td { (runbook(a)) }
                        td {
                            @match &a.acknowledged_by {
                                Some(actor) => { "by " (shown(actor.as_str(), CELL_CHARS)) }
                                None if a.is_open() => {
                                    "no — " a href=(state.link(&format!("/alerts/{}#acknowledge", a.id))) { "acknowledge" }
                                }
                                None => { "no" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn runbook(a: &Alert) -> Markup {
    html! {
        @match a.owner.runbook.as_deref() {
            Some(link) => @match safe_link(link) {
                Some(url) => a href=(url) title=(url) { "runbook" },
                None => (shown(link, CELL_CHARS)),
            },
            None => span.muted { "none" },
        }
    }
}

/// `GET /alerts?all=true`: open alerts (all, newest first, with `all`).
pub(super) async fn list(State(state): State<Shared>, uri: Uri) -> Response {
    let loaded = async {
        let all = Params::from_query(&uri).flag("all", false)?;
        let alerts = state.liaison.alerts(!all).await?;
        let body = html! {
            h1 { @if all { "All alerts (newest first)" } @else { "Open alerts" } }
            p { @if all { a href=(state.link("/alerts")) { "Only the open ones" } }
                @else { a href=(state.link("/alerts?all=true")) { "All alerts, resolved ones too" } } }
            @if alerts.is_empty() { p { "None." } } @else { (table(&state, &alerts)) }
        };
        let shell = Shell {
            state: &state,
            query: "",
        };
        Ok::<_, Failure>(document(&shell, "Ops: alerts", body))
    };
    match loaded.await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

/// `GET /alerts/{id}`: one alert, its notifications, and the acknowledge form.
pub(super) async fn page(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let loaded = async {
        let id: AlertId = id.parse()?;
        let alert = state.liaison.store().alert(id).await?;
        let sent = state.liaison.alert_notifications(id).await?;
        let journal = state
            .liaison
            .ops_journal(
                &JournalFilter::default()
                    .target(id.to_string())
                    .limit(JOURNAL_ROWS),
            )
            .await?;
        Ok::<_, Failure>((alert, sent, journal))
    };
    match loaded.await {
        Ok((alert, sent, journal)) => {
            let body = html! {
                (render(&state, &alert, &sent))
                (super::journal::table(&journal))
            };
            let shell = Shell {
                state: &state,
                query: "",
            };
            respond(StatusCode::OK, document(&shell, "Ops: alert", body))
        }
        Err(f) => error_page(f.status, &f.message, &state.link("/alerts")),
    }
}

fn render(state: &OpsState, a: &Alert, sent: &[AlertNotification]) -> Markup {
    html! {
        h1 { (class_words(a.class)) " at " (shown(&a.partner, CELL_CHARS)) }
        dl {
            dt { "State" } dd data-field="alert-state" {
                @if let Some(at) = a.resolved_at { "resolved at " (when(at)) } @else { "open" } }
            dt { "Details" } dd { (shown(&a.details, DETAIL_CHARS)) }
            dt { "Since" } dd { (when(a.opened_at)) }
            dt { "Owner" } dd { (shown(&a.owner.name, CELL_CHARS)) " (" (shown(&a.owner.contact, CELL_CHARS)) ")" }
            dt { "Runbook" } dd { (runbook(a)) }
            dt { "Notified" } dd { (a.notify_count) " time(s)"
                @if let Some(at) = a.last_notified_at { ", last at " (when(at)) } }
            dt { "Acknowledged" } dd data-field="acknowledged" {
                @match (&a.acknowledged_by, a.acknowledged_at) {
                    (Some(actor), Some(at)) => { "by " (shown(actor.as_str(), CELL_CHARS)) " at " (when(at)) }
                    (Some(actor), None) => { "by " (shown(actor.as_str(), CELL_CHARS)) }
                    _ => { "no" }
                }
            }
        }
        @if a.is_open() && a.acknowledged_by.is_none() {
            @if state.action_token().is_some() {
                form #acknowledge method="post" action=(state.link(&format!("/alerts/{}/acknowledge", a.id)))
                    data-action="acknowledge" {
                    fieldset {
                        legend { "Acknowledge: I am on it" }
                        p.muted { "Reminders to the owner stop; the alert stays open until the problem clears." }
                        label { "Your name " input name="actor" required maxlength="200"; }
                        label { "Note (optional, journaled) " input name="reason" maxlength="2000"; }
                        label { "Ops token " input type="password" name="token" required autocomplete="off"; }
                        button type="submit" { "Acknowledge" }
                    }
                }
            } @else {
                (read_only("acknowledging is"))
            }
        }
        h2 #notifications { "Notifications sent" }
        @if sent.is_empty() {
            p { "None recorded." }
        } @else {
            table.notifications {
                thead { tr { th { "Sent" } th { "Event" } th { "To" } th { "Owner" } th { "State" }
                    th { "Tries" } th { "Last error" } } }
                tbody {
                    @for n in sent {
                        tr {
                            td.nowrap { (when(n.created_at)) }
                            td { (n.event.as_str()) }
                            td { (shown(&n.sink, CELL_CHARS)) }
                            td { (shown(&n.owner, CELL_CHARS)) }
                            td data-field="notification-state" { (n.state.as_str())
                                @if let Some(at) = n.delivered_at { " at " (when(at)) }
                                @else if let Some(at) = n.next_try_at { " (next try " (when(at)) ")" } }
                            td { (n.attempts) }
                            td { (shown(n.last_error.as_deref().unwrap_or(""), CELL_CHARS)) }
                        }
                    }
                }
            }
        }
        p { a href=(state.link("/alerts")) { "← All open alerts" } }
    }
}

/// `POST /alerts/{id}/acknowledge`: fields `actor`, `token`, `reason`
/// (optional).
pub(super) async fn acknowledge(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let back = format!("/alerts/{id}");
    let (_, request) = match checked(&state, &headers, &body, &back) {
        Ok(checked) => checked,
        Err(refusal) => return *refusal,
    };
    let acted = async {
        let id: AlertId = id.parse()?;
        let actor = request.actor()?;
        let alert = state.liaison.store().alert(id).await?;
        if !alert.is_open() {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "this alert is already resolved: there is nothing to acknowledge",
            ));
        }
        if let Some(by) = &alert.acknowledged_by {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!("this alert was already acknowledged by {}", by.as_str()),
            ));
        }
        let done = state
            .liaison
            .acknowledge_alert_with_note(id, Actor::person(actor.as_str()), request.reason.trim())
            .await?;
        tracing::warn!(
            alert = %id,
            partner = %done.partner,
            action = "acknowledge_alert",
            actor = actor.as_str(),
            note = request.reason.trim(),
            "ops page action"
        );
        Ok(done)
    };
    match acted.await {
        Ok(alert) => done(
            &state,
            "Alert acknowledged",
            html! {
                p { (class_words(alert.class)) " at " (shown(&alert.partner, CELL_CHARS))
                    " is acknowledged by " (shown(&request.actor, CELL_CHARS))
                    ". Reminders to its owner stop; the alert closes when the problem clears." }
            },
            &back,
            "Back to the alert",
        ),
        Err(f) => failed(&state, &f, &back, "Back to the alert"),
    }
}
