//! `GET /`: the overview — the four questions, then each partner, open
//! alerts, engines, and the first page of each list to recover.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{Markup, html};

use super::actions::Failure;
use super::chart;
use super::html::{
    CELL_CHARS, Shell, circuit_words, document, duration, error_page, respond, shown, trend_words,
    verdict_class, verdict_word, when,
};
use super::lists::{
    List, PAGE_ROWS, Page, deliveries_table, listed_value, pager, submissions_table,
};
use super::questions;
use super::{OpsState, Shared};
use crate::model::delivery::{Delivery, DeliveryState};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::ops::alerts::Alert;
use crate::ops::{HealthReport, PartnerHealth};
use crate::store::{DeliveryFilter, ListFilter, Totals};

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
    let first = |list: List, rows: usize| list.filter(None).limit(rows);
    let stuck = store.list(&first(List::Stuck, PAGE_ROWS)).await?;
    let failed = store.list(&first(List::Failed, PAGE_ROWS)).await?;
    let nearest = store.list(&first(List::Deadlines, DEADLINE_ROWS)).await?;
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
    let answers = liaison.four_questions(&report).await?;

    let body = html! {
        (header(state, &report))
        (questions::render(state, &answers))
        h2 #partners { "Partners" }
        div.cards {
            @for (p, svg) in report.partners.iter().zip(&charts) {
                (card(state, p, svg))
            }
            @if report.partners.is_empty() {
                p { "No partners yet: nothing has been sent." }
            }
        }
        (alerts_table(state, &alerts))
        (engines_table(&report))
        (first_page(state, List::Deadlines, &nearest, &report, DEADLINE_ROWS))
        (first_page(state, List::Stuck, &stuck, &report, PAGE_ROWS))
        (first_page(state, List::Failed, &failed, &report, PAGE_ROWS))
        (parked_table(state, &parked))
        (quarantine_summary(state, &report))
    };
    let shell = Shell { state, query: "" };
    Ok(document(&shell, "Ops: partner integrations", body))
}

fn header(state: &OpsState, report: &HealthReport) -> Markup {
    html! {
        h1 { "Partner integrations: "
            span.badge.(verdict_class(report.verdict)) data-field="verdict" { (verdict_word(report.verdict)) } }
        p { "Value at risk: " strong { (report.at_risk.value) } " in " (report.at_risk.count)
            " submission(s). Checked at " (when(report.generated_at)) " over the last "
            (duration(report.window_secs)) "." }
        @if state.action_token().is_none() {
            p.note { "Read-only: this page was started without an ops token, so replay, resolve, \
                cancel, reprocess, dismiss, pause and acknowledge are turned off." }
        }
    }
}

fn totals(t: &Totals) -> String {
    match t.count {
        0 => "none".to_owned(),
        1 => format!("{} in 1 submission", t.value),
        n => format!("{} in {n} submissions", t.value),
    }
}

fn card(state: &OpsState, p: &PartnerHealth, svg: &Markup) -> Markup {
    let count = |s: SubmissionState| p.by_state.get(&s).map_or(0, |t| t.count);
    let rate = p
        .window
        .success_rate
        .map_or("none ended".to_owned(), |r| format!("{:.0}%", r * 100.0));
    let engines = match (p.dispatcher.live_instances, p.dispatcher.last_beat_at) {
        (0, Some(at)) => format!("none live (last beat {})", when(at)),
        (0, None) => "none live".to_owned(),
        (n, _) => format!("{n} live"),
    };
    let partner_link = state.link(&format!(
        "/partners/{}",
        form_urlencoded::byte_serialize(p.partner.as_bytes()).collect::<String>()
    ));
    html! {
        section.card data-partner=(p.partner) {
            h3 { a href=(partner_link) { (shown(&p.partner, CELL_CHARS)) } " "
                span.badge.(verdict_class(p.verdict)) { (verdict_word(p.verdict)) } }
            @if p.reasons.is_empty() {
                p { "Everything is working." }
            } @else {
                ul.reasons { @for reason in &p.reasons { li { (shown(reason, CELL_CHARS)) } } }
            }
            dl {
                dt { "Value at risk" } dd { (totals(&p.at_risk)) }
                dt { "Waiting to be sent" } dd { (count(SubmissionState::Queued) + count(SubmissionState::InFlight)) }
                dt { "Waiting for a result" } dd { (count(SubmissionState::AwaitingResult)) }
                dt { "Stuck" } dd { (count(SubmissionState::Stuck)) }
                dt { "Ended in the window" } dd { (p.window.succeeded) " succeeded, " (p.window.failed)
                    " failed, " (p.window.dead_lettered) " dead-lettered" }
                dt { "Success rate" } dd { (rate) " (trend: " (trend_words(p.trend)) ")" }
                dt { "Oldest waiting" } dd { (p.oldest_queued_secs.map_or("nothing waiting".into(), duration)) }
                dt { "Sending" } dd { (circuit_words(p.circuit)) }
                dt { "Engines serving it" } dd { (engines) }
                @if let Some(t) = &p.traffic {
                    dt { "Expected traffic" }
                    dd { (shown(&t.expected, CELL_CHARS)) ": "
                        @if !t.checked { "not checked now (outside its windows, or paused)" }
                        @else if t.silent { strong { "only " (t.counted) " came" } }
                        @else { "met" } }
                }
                (impact(p))
                @if let Some(pause) = &p.paused {
                    dt { "Paused" }
                    dd data-field="paused" { "until " (when(pause.until)) " by " (shown(pause.actor.as_str(), CELL_CHARS))
                        ": " (shown(&pause.reason, CELL_CHARS)) }
                }
            }
            (svg)
        }
    }
}

/// The value at risk by kind and by age, and the business deadlines near or
/// past: only the lines that have something to say.
fn impact(p: &PartnerHealth) -> Markup {
    html! {
        @if !p.at_risk_by_kind.is_empty() {
            dt { "At risk by kind" }
            dd data-field="at-risk-by-kind" {
                @for (i, (kind, t)) in p.at_risk_by_kind.iter().enumerate() {
                    @if i > 0 { br; }
                    (shown(kind, CELL_CHARS)) ": " (totals(t))
                }
            }
        }
        @if !p.at_risk_by_age.is_empty() {
            dt { "At risk by age" }
            dd data-field="at-risk-by-age" {
                @for (i, (age, t)) in p.at_risk_by_age.iter().enumerate() {
                    @if i > 0 { br; }
                    (age.as_str()) ": " (totals(t))
                }
            }
        }
        @if let Some(words) = p.deadline_words() {
            dt { "Business deadlines" }
            dd data-field="deadlines" { (shown(&words, CELL_CHARS)) }
        }
    }
}

/// The engine instances recorded in the store: where each runs, for which
/// partners, its last beat, and whether it is live.
fn engines_table(report: &HealthReport) -> Markup {
    let live = report.instances.iter().filter(|i| i.live).count();
    html! {
        h2 #engines { "Engines (" (live) " live)" }
        @if report.instances.is_empty() {
            p { "No engine has recorded itself in the store in the last day: nothing sends queued work." }
        } @else {
            div.wide { table #engines-list {
                thead { tr { th { "Instance" } th { "Host" } th { "PID" } th { "Version" } th { "Started" }
                    th { "Partners" } th { "Last beat" } th { "State" } } }
                tbody {
                    @for i in &report.instances {
                        @let inst = &i.instance;
                        tr data-instance=(inst.id) {
                            td { (shown(&inst.id, CELL_CHARS)) }
                            td { (shown(&inst.host, CELL_CHARS)) }
                            td { (inst.pid) }
                            td { (shown(&inst.version, CELL_CHARS)) }
                            td.nowrap { (when(inst.started_at)) }
                            td { (shown(&inst.partners.join(", "), CELL_CHARS)) }
                            td.nowrap { (when(inst.last_beat_at)) }
                            td {
                                @if i.live { span.badge.ok { "live" } }
                                @else if let Some(at) = inst.stopped_at { "stopped at " (when(at)) }
                                @else { span.badge.bad { "gone" } }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn alerts_table(state: &OpsState, alerts: &[Alert]) -> Markup {
    html! {
        h2 #alerts { "Open alerts" }
        @if alerts.is_empty() {
            p { "No open alerts." }
        } @else {
            (super::alerts::table(state, alerts))
        }
    }
}

/// The first page of a list, linking to the rest.
fn first_page(
    state: &OpsState,
    list: List,
    rows: &[Submission],
    report: &HealthReport,
    limit: usize,
) -> Markup {
    let total = list.count(report, None);
    let page = Page::<SubmissionId> {
        after: None,
        seen: 0,
        limit,
    };
    let last = (rows.len() == limit)
        .then(|| rows.last().map(|s| s.id.to_string()))
        .flatten();
    let base = format!("/lists/{}", list.name());
    html! {
        @if list != List::Deadlines || !rows.is_empty() {
            h2 id=(list.name()) { (list.title()) " (" (total) ")" }
            @if rows.is_empty() {
                p { "None." }
            } @else {
                p { (list.help()) " Value of those listed: " strong { (listed_value(rows)) } ". "
                    a href=(state.link(&base)) { "The whole list" } " · "
                    a href=(state.link(&format!("/export/{}", list.name()))) download { "CSV" } }
                (submissions_table(state, list.name(), rows, list == List::Deadlines, Utc::now()))
                (pager(state, &base, &page, rows.len(), Some(total), last))
            }
        }
    }
}

/// Results the host's handler kept failing to take: shown only while any is
/// parked. Counts per partner, then the oldest with their last error.
fn parked_table(state: &OpsState, parked: &[Delivery]) -> Markup {
    let mut per_partner: std::collections::BTreeMap<&str, usize> = Default::default();
    for d in parked {
        *per_partner.entry(d.partner.as_str()).or_default() += 1;
    }
    let at_least = if parked.len() >= ListFilter::MAX_LIMIT {
        "at least "
    } else {
        ""
    };
    html! {
        @if !parked.is_empty() {
            h2 #parked { "Results not delivered to the host (" (at_least) (parked.len()) ")" }
            p { "These submissions are finished, but the host application's result handler kept \
                failing to take their result and gave up. Their results (and later ones of the same \
                ordering key) wait. Fix what made the handler fail (see the last error), then open \
                each submission and re-run its delivery." }
            ul.parked-partners {
                @for (partner, n) in &per_partner {
                    li data-partner=(partner) { (shown(partner, CELL_CHARS)) ": " strong { (at_least) (n) } " parked" }
                }
            }
            @if parked.len() > PARKED_ROWS {
                p { "Showing the oldest " (PARKED_ROWS) ". " a href=(state.link("/deliveries")) { "All of them" } }
            }
            (deliveries_table(state, &parked[..parked.len().min(PARKED_ROWS)]))
        }
    }
}

/// Callbacks in the quarantine now, per partner and reason, linking to the
/// quarantine list.
fn quarantine_summary(state: &OpsState, report: &HealthReport) -> Markup {
    let rows: Vec<(&str, crate::callback::Disposition, u64)> = report
        .partners
        .iter()
        .flat_map(|p| {
            p.quarantined
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(d, n)| (p.partner.as_str(), *d, *n))
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.2).sum();
    html! {
        h2 #quarantine { "Callbacks in quarantine (" (total) ")" }
        @if rows.is_empty() {
            p { "None: every callback that came was read and matched." }
        } @else {
            ul {
                @for (partner, disposition, n) in &rows {
                    li { a href=(state.link(&format!("/quarantine?partner={}&disposition={}",
                            form_urlencoded::byte_serialize(partner.as_bytes()).collect::<String>(),
                            disposition.as_str()))) {
                        (shown(partner, CELL_CHARS)) ": " (n) " " (disposition.as_str()) } }
                }
            }
            p { a href=(state.link("/quarantine")) { "Open the quarantine" } " to read each one, then \
                reprocess it (once a fix has shipped) or dismiss it with a reason." }
        }
    }
}
