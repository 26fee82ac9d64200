//! `GET /`: the overview.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::actions::Failure;
use super::chart;
use super::html::{
    circuit_words, class_words, document, duration, error_page, escape, money, respond, safe_link,
    state_words, trend_words, value, verdict_class, verdict_word, when,
};
use super::{OpsState, Shared};
use crate::model::delivery::{Delivery, DeliveryState};
use crate::model::submission::{Submission, SubmissionState};
use crate::ops::alerts::Alert;
use crate::ops::{HealthReport, PartnerHealth};
use crate::store::{DeliveryFilter, ListFilter, Totals};

/// Rows shown in each list of problem submissions (the oldest first).
const LIST_ROWS: usize = 50;
/// Parked result deliveries shown by name (the oldest first).
const PARKED_ROWS: usize = 10;
/// Open submissions shown by nearest business deadline.
const DEADLINE_ROWS: usize = 10;

/// `GET /`
pub(super) async fn page(State(state): State<Shared>) -> Response {
    match render(&state).await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

async fn render(state: &Shared) -> Result<String, Failure> {
    let liaison = &state.liaison;
    let store = liaison.store();
    let report = liaison.health(state.window).await?;
    let alerts = liaison.alerts(true).await?;
    let stuck = store
        .list(
            &ListFilter::default()
                .state(SubmissionState::Stuck)
                .limit(LIST_ROWS)
                .without_payload(),
        )
        .await?;
    let failed = store
        .list(
            &ListFilter::default()
                .state(SubmissionState::Failed)
                .state(SubmissionState::DeadLettered)
                .limit(LIST_ROWS)
                .without_payload(),
        )
        .await?;
    let nearest = store
        .list(
            &ListFilter::default()
                .by_deadline()
                .limit(DEADLINE_ROWS)
                .without_payload(),
        )
        .await?;
    // Counted as the alert evaluation counts them: up to the list cap.
    let parked = liaison
        .deliveries(
            &DeliveryFilter::default()
                .state(DeliveryState::Parked)
                .limit(ListFilter::MAX_LIMIT),
        )
        .await?;
    let now = Utc::now();
    let mut charts = Vec::with_capacity(report.partners.len());
    for p in &report.partners {
        let day = chart::load(store.as_ref(), &p.partner, now).await?;
        charts.push(chart::render(&day, &p.partner));
    }

    let mut body = String::new();
    header(&mut body, state, &report);
    body.push_str("<h2 id=\"partners\">Partners</h2><div class=\"cards\">");
    for (p, svg) in report.partners.iter().zip(&charts) {
        card(&mut body, p, svg);
    }
    if report.partners.is_empty() {
        body.push_str("<p>No partners yet: nothing has been sent.</p>");
    }
    body.push_str("</div>");
    engines_table(&mut body, &report);
    alerts_table(&mut body, &alerts);
    deadlines_table(&mut body, state, &nearest, now);
    let count = |states: &[SubmissionState]| -> u64 {
        report
            .partners
            .iter()
            .flat_map(|p| states.iter().filter_map(|s| p.by_state.get(s)))
            .map(|t| t.count)
            .sum()
    };
    submissions_table(
        &mut body,
        state,
        "stuck",
        "Stuck: accepted by the partner, result overdue",
        "Ask the partner about these (their reference is on each page), then replay, resolve or cancel.",
        &stuck,
        count(&[SubmissionState::Stuck]),
    );
    submissions_table(
        &mut body,
        state,
        "failed",
        "Failed and dead-lettered",
        "Failed: the partner refused the content. Dead-lettered: sending was given up. Fix the cause, then replay, or resolve by hand.",
        &failed,
        count(&[SubmissionState::Failed, SubmissionState::DeadLettered]),
    );
    parked_table(&mut body, state, &parked);
    Ok(document("Ops: partner integrations", &body))
}

fn header(out: &mut String, state: &Shared, report: &HealthReport) {
    let _ = write!(
        out,
        "<h1>Partner integrations: <span class=\"badge {}\" data-field=\"verdict\">{}</span></h1>\
         <p>Value at risk: <strong>{}</strong> in {} submission(s). \
         Checked at {} over the last {}.</p>",
        verdict_class(report.verdict),
        verdict_word(report.verdict),
        money(&report.at_risk.value),
        report.at_risk.count,
        when(report.generated_at),
        duration(report.window_secs),
    );
    if state.action_token().is_none() {
        out.push_str(
            "<p class=\"note\">Read-only: this page was started without an ops token, \
             so replay, resolve and cancel are turned off.</p>",
        );
    }
}

fn card(out: &mut String, p: &PartnerHealth, svg: &str) {
    let _ = write!(
        out,
        "<section class=\"card\" data-partner=\"{0}\"><h3>{0} <span class=\"badge {1}\">{2}</span></h3>",
        escape(&p.partner),
        verdict_class(p.verdict),
        verdict_word(p.verdict),
    );
    if p.reasons.is_empty() {
        out.push_str("<p>Everything is working.</p>");
    } else {
        out.push_str("<ul class=\"reasons\">");
        for reason in &p.reasons {
            let _ = write!(out, "<li>{}</li>", escape(reason));
        }
        out.push_str("</ul>");
    }
    let count = |s: SubmissionState| p.by_state.get(&s).map_or(0, |t| t.count);
    let rate = p
        .window
        .success_rate
        .map_or("none ended".to_owned(), |r| format!("{:.0}%", r * 100.0));
    let _ = write!(
        out,
        "<dl><dt>Value at risk</dt><dd>{}</dd>\
         <dt>Waiting to be sent</dt><dd>{}</dd>\
         <dt>Waiting for a result</dt><dd>{}</dd>\
         <dt>Stuck</dt><dd>{}</dd>\
         <dt>Ended in the window</dt><dd>{} succeeded, {} failed, {} dead-lettered</dd>\
         <dt>Success rate</dt><dd>{rate} (trend: {})</dd>\
         <dt>Oldest waiting</dt><dd>{}</dd>\
         <dt>Sending</dt><dd>{}</dd>",
        totals(&p.at_risk),
        count(SubmissionState::Queued) + count(SubmissionState::InFlight),
        count(SubmissionState::AwaitingResult),
        count(SubmissionState::Stuck),
        p.window.succeeded,
        p.window.failed,
        p.window.dead_lettered,
        trend_words(p.trend),
        p.oldest_queued_secs
            .map_or("nothing waiting".into(), duration),
        circuit_words(p.circuit),
    );
    let _ = write!(
        out,
        "<dt>Engines serving it</dt><dd>{}</dd>",
        match (p.dispatcher.live_instances, p.dispatcher.last_beat_at) {
            (0, Some(at)) => format!("none live (last beat {})", when(at)),
            (0, None) => "none live".to_owned(),
            (n, _) => format!("{n} live"),
        }
    );
    if let Some(t) = &p.traffic {
        let _ = write!(
            out,
            "<dt>Expected traffic</dt><dd>{}: {}</dd>",
            escape(&t.expected),
            if !t.checked {
                "not checked now (outside its windows, or paused)".to_owned()
            } else if t.silent {
                format!("<strong>only {} came</strong>", t.counted)
            } else {
                "met".to_owned()
            }
        );
    }
    impact(out, p);
    if let Some(pause) = &p.paused {
        let _ = write!(
            out,
            "<dt>Paused</dt><dd>until {} by {}: {}</dd>",
            when(pause.until),
            escape(pause.actor.as_str()),
            escape(&pause.reason)
        );
    }
    let _ = write!(out, "</dl>{svg}</section>");
}

/// The engine instances recorded in the store: where each runs, for which
/// partners, its last beat, and whether it is live.
fn engines_table(out: &mut String, report: &HealthReport) {
    let live = report.instances.iter().filter(|i| i.live).count();
    let _ = write!(out, "<h2 id=\"engines\">Engines ({live} live)</h2>");
    if report.instances.is_empty() {
        out.push_str(
            "<p>No engine has recorded itself in the store in the last day: nothing sends \
             queued work.</p>",
        );
        return;
    }
    out.push_str(
        "<table id=\"engines-list\"><thead><tr><th>Instance</th><th>Host</th><th>PID</th>\
         <th>Version</th><th>Started</th><th>Partners</th><th>Last beat</th><th>State</th>\
         </tr></thead><tbody>",
    );
    for i in &report.instances {
        let inst = &i.instance;
        let state = if i.live {
            "<span class=\"badge ok\">live</span>".to_owned()
        } else if let Some(at) = inst.stopped_at {
            format!("stopped at {}", when(at))
        } else {
            "<span class=\"badge bad\">gone</span>".to_owned()
        };
        let _ = write!(
            out,
            "<tr data-instance=\"{}\"><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"nowrap\">{}</td><td>{}</td><td class=\"nowrap\">{}</td><td>{state}</td></tr>",
            escape(&inst.id),
            escape(&inst.id),
            escape(&inst.host),
            inst.pid,
            escape(&inst.version),
            when(inst.started_at),
            escape(&inst.partners.join(", ")),
            when(inst.last_beat_at),
        );
    }
    out.push_str("</tbody></table>");
}

fn totals(t: &Totals) -> String {
    format!("{} in {} submission(s)", money(&t.value), t.count)
}

/// The value at risk by kind and by age, and the business deadlines near or
/// past: only the lines that have something to say.
fn impact(out: &mut String, p: &PartnerHealth) {
    let split = |groups: Vec<(String, &Totals)>| {
        groups
            .into_iter()
            .map(|(name, t)| format!("{}: {}", escape(&name), totals(t)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    if !p.at_risk_by_kind.is_empty() {
        let _ = write!(
            out,
            "<dt>At risk by kind</dt><dd data-field=\"at-risk-by-kind\">{}</dd>",
            split(
                p.at_risk_by_kind
                    .iter()
                    .map(|(k, t)| (k.clone(), t))
                    .collect()
            )
        );
    }
    if !p.at_risk_by_age.is_empty() {
        let _ = write!(
            out,
            "<dt>At risk by age</dt><dd data-field=\"at-risk-by-age\">{}</dd>",
            split(
                p.at_risk_by_age
                    .iter()
                    .map(|(a, t)| (a.as_str().to_owned(), t))
                    .collect()
            )
        );
    }
    if let Some(words) = p.deadline_words() {
        let _ = write!(
            out,
            "<dt>Business deadlines</dt><dd data-field=\"deadlines\">{}</dd>",
            escape(&words)
        );
    }
}

/// Open work by nearest business deadline (shown only when there is some).
fn deadlines_table(out: &mut String, state: &OpsState, rows: &[Submission], now: DateTime<Utc>) {
    if rows.is_empty() {
        return;
    }
    out.push_str(
        "<h2 id=\"deadlines\">Nearest business deadlines</h2>\
         <table class=\"submissions\" id=\"deadlines-list\"><thead><tr><th>Deadline</th><th>Key</th>\
         <th>Partner</th><th>Kind</th><th>State</th><th>Value</th></tr></thead><tbody>",
    );
    for s in rows {
        let Some(deadline) = s.business_deadline else {
            continue;
        };
        let left = if deadline <= now {
            "<strong>missed</strong>".to_owned()
        } else {
            format!(
                "in {}",
                duration((deadline - now).num_seconds().max(0).unsigned_abs())
            )
        };
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\">{} ({left})</td><td class=\"nowrap\"><a href=\"{}\">{}</a></td>\
             <td>{}</td><td>{}</td><td title=\"{}\">{}</td><td class=\"nowrap\">{}</td></tr>",
            when(deadline),
            escape(&state.link(&format!("/submissions/{}", s.id))),
            escape(&s.idempotency_key),
            escape(&s.partner),
            escape(&s.kind),
            state_words(s.state),
            s.state.as_str(),
            value(s),
        );
    }
    out.push_str("</tbody></table>");
}

fn alerts_table(out: &mut String, alerts: &[Alert]) {
    out.push_str("<h2 id=\"alerts\">Open alerts</h2>");
    if alerts.is_empty() {
        out.push_str("<p>No open alerts.</p>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Partner</th><th>Problem</th><th>Details</th><th>Since</th>\
         <th>Owner</th><th>Contact</th><th>Runbook</th><th>Acknowledged</th></tr></thead><tbody>",
    );
    for a in alerts {
        let runbook = match a.owner.runbook.as_deref() {
            Some(link) => match safe_link(link) {
                Some(url) => format!("<a href=\"{0}\" title=\"{0}\">runbook</a>", escape(url)),
                None => escape(link),
            },
            None => "<span class=\"muted\">none</span>".into(),
        };
        let acknowledged = match &a.acknowledged_by {
            Some(actor) => format!("by {}", escape(actor.as_str())),
            None => "no".into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td><td>{runbook}</td><td>{acknowledged}</td></tr>",
            escape(&a.partner),
            class_words(a.class),
            if a.expected {
                " <span class=\"muted\">(during a planned pause)</span>"
            } else {
                ""
            },
            escape(&a.details),
            when(a.opened_at),
            escape(&a.owner.name),
            escape(&a.owner.contact),
        );
    }
    out.push_str("</tbody></table>");
}

fn submissions_table(
    out: &mut String,
    state: &OpsState,
    id: &str,
    title: &str,
    help: &str,
    rows: &[Submission],
    total: u64,
) {
    let listed = rows.iter().fold(crate::Money::default(), |mut m, s| {
        if let Some(v) = s.business_value {
            m.add(s.currency, v);
        }
        m
    });
    let _ = write!(out, "<h2 id=\"{id}\">{} ({total})</h2>", escape(title));
    if rows.is_empty() {
        out.push_str("<p>None.</p>");
        return;
    }
    let _ = write!(
        out,
        "<p>{} Value of those listed: <strong>{}</strong>.{}</p>",
        escape(help),
        money(&listed),
        if total > rows.len() as u64 {
            format!(" Showing the oldest {} of {total}.", rows.len())
        } else {
            String::new()
        }
    );
    let _ = write!(
        out,
        "<table class=\"submissions\" id=\"{id}-list\"><thead><tr><th>Key</th><th>Partner</th><th>Kind</th>\
         <th>State</th><th>Value</th><th>Since</th><th>Last error</th></tr></thead><tbody>"
    );
    for s in rows {
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\"><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td title=\"{}\">{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{}</td></tr>",
            escape(&state.link(&format!("/submissions/{}", s.id))),
            escape(&s.idempotency_key),
            escape(&s.partner),
            escape(&s.kind),
            state_words(s.state),
            s.state.as_str(),
            value(s),
            when(s.terminal_at.unwrap_or(s.updated_at)),
            escape(s.last_error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}

/// Results the host's handler kept failing to take: shown only while any is
/// parked. Counts per partner, then the oldest with their last error.
fn parked_table(out: &mut String, state: &OpsState, parked: &[Delivery]) {
    if parked.is_empty() {
        return;
    }
    let mut per_partner: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in parked {
        *per_partner.entry(d.partner.as_str()).or_default() += 1;
    }
    let at_least = if parked.len() >= ListFilter::MAX_LIMIT {
        "at least "
    } else {
        ""
    };
    let _ = write!(
        out,
        "<h2 id=\"parked\">Results not delivered to the host ({at_least}{})</h2>\
         <p>These submissions are finished, but the host application's result handler kept \
         failing to take their result and gave up. Their results (and later ones of the same \
         ordering key) wait. Fix what made the handler fail (see the last error), then open \
         each submission and re-run its delivery.</p><ul class=\"parked-partners\">",
        parked.len()
    );
    for (partner, n) in &per_partner {
        let _ = write!(
            out,
            "<li data-partner=\"{}\">{}: <strong>{at_least}{n}</strong> parked</li>",
            escape(partner),
            escape(partner)
        );
    }
    out.push_str("</ul>");
    if parked.len() > PARKED_ROWS {
        let _ = write!(out, "<p>Showing the oldest {PARKED_ROWS}.</p>");
    }
    out.push_str(
        "<table class=\"deliveries\" id=\"parked-list\"><thead><tr><th>Submission</th><th>Partner</th>\
         <th>Result</th><th>Attempts</th><th>Finished</th><th>Last error</th></tr></thead><tbody>",
    );
    for d in parked.iter().take(PARKED_ROWS) {
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\"><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"nowrap\">{}</td><td>{}</td></tr>",
            // The fragment after the read token, or the token would be in it.
            escape(&format!(
                "{}#deliveries",
                state.link(&format!("/submissions/{}", d.submission_id))
            )),
            d.submission_id,
            escape(&d.partner),
            escape(d.final_state.as_str()),
            d.attempts,
            when(d.created_at),
            escape(d.last_error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}
