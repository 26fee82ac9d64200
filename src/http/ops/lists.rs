//! The lists behind the overview, page by page: stuck work, failed and
//! dead-lettered work, open work by business deadline, and results not
//! delivered to the host. Pages follow a cursor (`after=`, the last row of
//! the page before), so rows arriving meanwhile neither shift nor repeat
//! what is paged through; each list says how many it holds and can be
//! exported as CSV as filtered.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::actions::Failure;
use super::html::{
    CELL_CHARS, Shell, document, duration, error_page, respond, shown, state_words, value, when,
};
use super::params::Params;
use super::{OpsState, Shared};
use crate::model::delivery::{Delivery, DeliveryId, DeliveryState};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::ops::HealthReport;
use crate::store::{DeliveryFilter, ListFilter};

/// Rows on one page unless `limit=` says otherwise.
pub(super) const PAGE_ROWS: usize = 50;
/// Most rows on one page.
const MAX_PAGE_ROWS: usize = 500;

/// A list of submissions the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum List {
    Stuck,
    Failed,
    Deadlines,
}

impl List {
    pub(super) fn parse(name: &str) -> Option<List> {
        match name {
            "stuck" => Some(List::Stuck),
            "failed" => Some(List::Failed),
            "deadlines" => Some(List::Deadlines),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            List::Stuck => "stuck",
            List::Failed => "failed",
            List::Deadlines => "deadlines",
        }
    }

    pub(super) fn title(self) -> &'static str {
        match self {
            List::Stuck => "Stuck: accepted by the partner, result overdue",
            List::Failed => "Failed and dead-lettered",
            List::Deadlines => "Open work by business deadline",
        }
    }

    pub(super) fn help(self) -> &'static str {
        match self {
            List::Stuck => {
                "Ask the partner about these (their reference is on each page), then replay, \
                 resolve or cancel."
            }
            List::Failed => {
                "Failed: the partner refused the content. Dead-lettered: sending was given up. \
                 Fix the cause, then replay, or resolve by hand."
            }
            List::Deadlines => {
                "Open work (not succeeded, cancelled or resolved by hand) with a business \
                 deadline, the nearest first. Open one to replay, resolve or cancel it."
            }
        }
    }

    /// The store filter for this list (one page of `limit` after `after`).
    pub(super) fn filter(self, partner: Option<&str>) -> ListFilter {
        let filter = match self {
            List::Stuck => ListFilter::default().state(SubmissionState::Stuck),
            List::Failed => ListFilter::default()
                .state(SubmissionState::Failed)
                .state(SubmissionState::DeadLettered),
            List::Deadlines => ListFilter::default().by_deadline(),
        };
        let filter = filter.without_payload();
        match partner {
            Some(p) => filter.partner(p),
            None => filter,
        }
    }

    /// How many the list holds, from the health report (for deadlines:
    /// those near or past their deadline).
    pub(super) fn count(self, report: &HealthReport, partner: Option<&str>) -> u64 {
        let partners = report
            .partners
            .iter()
            .filter(|p| partner.is_none_or(|name| p.partner == name));
        let states: &[SubmissionState] = match self {
            List::Stuck => &[SubmissionState::Stuck],
            List::Failed => &[SubmissionState::Failed, SubmissionState::DeadLettered],
            List::Deadlines => {
                return partners
                    .map(|p| p.deadlines.at_risk.count + p.deadlines.missed.count)
                    .sum();
            }
        };
        partners
            .flat_map(|p| states.iter().filter_map(|s| p.by_state.get(s)))
            .map(|t| t.count)
            .sum()
    }
}

/// Where a page starts: the cursor and how many rows came before (for
/// "rows 51-100"), and the page size.
#[derive(Debug, Clone)]
pub(super) struct Page<C> {
    pub(super) after: Option<C>,
    pub(super) seen: u64,
    pub(super) limit: usize,
}

impl<C: std::str::FromStr> Page<C> {
    pub(super) fn from(params: &Params) -> Result<Self, Failure> {
        Ok(Page {
            after: params.parsed::<C>("after")?,
            seen: params.parsed::<u64>("seen")?.unwrap_or(0),
            limit: params
                .parsed::<usize>("limit")?
                .unwrap_or(PAGE_ROWS)
                .clamp(1, MAX_PAGE_ROWS),
        })
    }
}

/// "Rows 51 to 100 of 230", and the links to the first and the next page.
/// `base`: the list's path with its filters (no cursor); `last`: the last
/// row's id when the page is full (there may be more).
pub(super) fn pager<C>(
    state: &OpsState,
    base: &str,
    page: &Page<C>,
    shown_rows: usize,
    total: Option<u64>,
    last: Option<String>,
) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    let first = page.seen + 1;
    let end = page.seen + shown_rows as u64;
    html! {
        p.pager data-field="pager" {
            @if shown_rows == 0 {
                span { "No rows" @if page.after.is_some() { " after the ones already shown" } "." }
            } @else {
                span { "Rows " (first) " to " (end)
                    @if let Some(total) = total { " of " span data-field="total" { (total) } } }
            }
            @if page.after.is_some() {
                a href=(state.link(base)) rel="first" { "← First page" }
            }
            @if let Some(last) = last {
                @let next = format!("{base}{sep}after={last}&seen={end}&limit={}", page.limit);
                a href=(state.link(&next)) rel="next" data-action="next-page" { "Next page →" }
            }
        }
    }
}

/// A table of submissions, linking each to its page.
pub(super) fn submissions_table(
    state: &OpsState,
    id: &str,
    rows: &[Submission],
    deadline: bool,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        table.submissions id=(format!("{id}-list")) {
            thead { tr {
                @if deadline { th { "Deadline" } }
                th { "Key" } th { "Partner" } th { "Kind" } th { "State" } th { "Value" }
                th { "Since" } th { "Partner's reference" } th { "Last error" }
            } }
            tbody {
                @for s in rows {
                    tr {
                        @if deadline {
                            td.nowrap { (deadline_words(s, now)) }
                        }
                        td.nowrap {
                            a href=(state.link(&format!("/submissions/{}", s.id))) {
                                (shown(&s.idempotency_key, CELL_CHARS))
                            }
                        }
                        td { (shown(&s.partner, CELL_CHARS)) }
                        td { (shown(&s.kind, CELL_CHARS)) }
                        td title=(s.state.as_str()) { (state_words(s.state)) }
                        td.nowrap { (value(s)) }
                        td.nowrap { (when(s.terminal_at.unwrap_or(s.updated_at))) }
                        td { (shown(s.external_ref.as_deref().unwrap_or(""), CELL_CHARS)) }
                        td { (shown(s.last_error.as_deref().unwrap_or(""), CELL_CHARS)) }
                    }
                }
            }
        }
    }
}

fn deadline_words(s: &Submission, now: DateTime<Utc>) -> Markup {
    match s.business_deadline {
        None => html! { "—" },
        Some(deadline) if deadline <= now => {
            html! { (when(deadline)) " (" strong { "missed" } ")" }
        }
        Some(deadline) => html! {
            (when(deadline)) " (in " (duration((deadline - now).num_seconds().max(0).unsigned_abs())) ")"
        },
    }
}

/// The total of the values of `rows`, per currency.
pub(super) fn listed_value(rows: &[Submission]) -> crate::Money {
    rows.iter().fold(crate::Money::default(), |mut m, s| {
        if let Some(v) = s.business_value {
            m.add(s.currency, v);
        }
        m
    })
}

/// `GET /lists/{stuck|failed|deadlines}?partner=&after=&seen=&limit=`
pub(super) async fn page(
    State(state): State<Shared>,
    Path(list): Path<String>,
    uri: Uri,
) -> Response {
    let Some(list) = List::parse(&list) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "no such list: use stuck, failed or deadlines",
            &state.link("/"),
        );
    };
    match render(&state, list, &Params::from_query(&uri)).await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

async fn render(state: &Shared, list: List, params: &Params) -> Result<String, Failure> {
    let partner = params.get("partner");
    let page = Page::<SubmissionId>::from(params)?;
    let mut filter = list.filter(partner).limit(page.limit);
    filter.after = page.after;
    let rows = state.liaison.store().list(&filter).await?;
    let report = state.liaison.health(state.window).await?;
    let total = list.count(&report, partner);
    let base = with_partner(&format!("/lists/{}", list.name()), partner);
    let export = with_partner(&format!("/export/{}", list.name()), partner);
    let last = (rows.len() == page.limit)
        .then(|| rows.last().map(|s| s.id.to_string()))
        .flatten();
    let body = html! {
        h1 { (list.title()) " (" (total) ")" }
        @if let Some(p) = partner {
            p { "Partner " strong { (shown(p, CELL_CHARS)) } ". "
                a href=(state.link(&format!("/lists/{}", list.name()))) { "All partners" } }
        }
        p { (list.help()) " Value of those on this page: " strong { (listed_value(&rows)) } "." }
        p { a href=(state.link(&export)) data-action="export" download { "Export this list as CSV" }
            span.muted { " (every row as filtered, not only this page: the hand-off for a manual fallback)" } }
        (submissions_table(state, list.name(), &rows, list == List::Deadlines, chrono::Utc::now()))
        (pager(state, &base, &page, rows.len(), Some(total), last))
    };
    let shell = Shell { state, query: "" };
    Ok(document(&shell, &format!("Ops: {}", list.title()), body))
}

/// `path?partner=..` (URL-encoded), or `path`.
pub(super) fn with_partner(path: &str, partner: Option<&str>) -> String {
    match partner {
        Some(p) => {
            let p: String = form_urlencoded::byte_serialize(p.as_bytes()).collect();
            format!("{path}?partner={p}")
        }
        None => path.to_owned(),
    }
}

/// A table of result deliveries to the host, linking each to its
/// submission's page (where the re-run form is).
pub(super) fn deliveries_table(state: &OpsState, rows: &[Delivery]) -> Markup {
    html! {
        table.deliveries id="parked-list" {
            thead { tr { th { "Submission" } th { "Partner" } th { "Result" } th { "Attempts" }
                th { "Finished" } th { "Last error" } } }
            tbody {
                @for d in rows {
                    tr {
                        td.nowrap {
                            a href=(state.link(&format!("/submissions/{}#deliveries", d.submission_id))) {
                                (d.submission_id)
                            }
                        }
                        td { (shown(&d.partner, CELL_CHARS)) }
                        td { (d.final_state.as_str()) }
                        td { (d.attempts) }
                        td.nowrap { (when(d.created_at)) }
                        td { (shown(d.last_error.as_deref().unwrap_or(""), CELL_CHARS)) }
                    }
                }
            }
        }
    }
}

/// `GET /deliveries?partner=&after=&seen=&limit=`: results the host's
/// handler kept failing to take (parked), oldest first.
pub(super) async fn deliveries(State(state): State<Shared>, uri: Uri) -> Response {
    let params = Params::from_query(&uri);
    let loaded = async {
        let partner = params.get("partner");
        let page = Page::<DeliveryId>::from(&params)?;
        let mut filter = DeliveryFilter::default()
            .state(DeliveryState::Parked)
            .limit(page.limit);
        filter.partner = partner.map(str::to_owned);
        filter.after = page.after;
        let rows = state.liaison.deliveries(&filter).await?;
        let base = with_partner("/deliveries", partner);
        let export = with_partner("/export/deliveries", partner);
        let last = (rows.len() == page.limit)
            .then(|| rows.last().map(|d| d.id.to_string()))
            .flatten();
        let body = html! {
            h1 { "Results not delivered to the host" }
            p { "These submissions are finished, but the host application's result handler kept \
                 failing to take their result and gave up. Their results (and later ones of the \
                 same ordering key) wait. Fix what made the handler fail (see the last error), \
                 then open each submission and re-run its delivery." }
            p { a href=(state.link(&export)) data-action="export" download { "Export this list as CSV" } }
            (deliveries_table(&state, &rows))
            (pager(&state, &base, &page, rows.len(), None, last))
        };
        let shell = Shell {
            state: &state,
            query: "",
        };
        Ok::<_, Failure>(document(&shell, "Ops: results not delivered", body))
    };
    match loaded.await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}
