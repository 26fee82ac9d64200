//! The quarantine: callbacks that were malformed, failed verification,
//! expired unmatched or conflicted, newest first and page by page; one
//! callback with its reason and a bounded, escaped view of its body; and
//! reprocessing (after a fix shipped) or dismissing (with a reason), one at
//! a time or every one a filter matches, after a dry-run count.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use maud::{Markup, html};

use super::actions::{Failure, Request, dismiss, reprocess};
use super::forms::{checked, done, failed, read_only, who_and_why};
use super::html::{
    CELL_CHARS, DETAIL_CHARS, Shell, document, error_page, inert, respond, shown, when,
};
use super::lists::{Page, pager};
use super::params::Params;
use super::{OpsState, Shared};
use crate::callback::{CallbackId, Disposition, StoredCallback};
use crate::engine::BulkScope;
use crate::model::event::Actor;
use crate::store::{CallbackFilter, ListFilter};

/// The most of a body the page shows, in bytes.
pub(super) const BODY_BYTES: usize = 8 * 1024;

/// What a quarantine disposition means, in a few words.
pub(super) fn reason_words(d: Disposition) -> &'static str {
    match d {
        Disposition::Malformed => "unreadable: could not be parsed",
        Disposition::Rejected => "failed verification (signature or origin)",
        Disposition::Expired => "matched no submission in time",
        Disposition::Conflicting => "contradicts what is already known",
        Disposition::Unmatched => "matches no submission yet",
        Disposition::Applied => "applied to its submission",
        Disposition::Duplicate => "a repeat; not applied again",
        Disposition::Late => "came after the submission was settled by a person",
        Disposition::Dismissed => "dismissed by a person",
        Disposition::Received => "stored, not processed yet",
        Disposition::TooLarge => "too large: its body was not kept",
        Disposition::Incomplete => "cut off: the sender stopped before the body ended",
    }
}

/// The quarantine filter a page or form names: `partner=` and
/// `disposition=` (one of the quarantined ones).
struct Filter {
    partner: Option<String>,
    disposition: Option<Disposition>,
}

impl Filter {
    fn from(params: &Params) -> Result<Filter, Failure> {
        let disposition = params.parsed::<Disposition>("disposition")?;
        if let Some(d) = disposition
            && !d.is_quarantined()
        {
            return Err(Failure::bad_request(format!(
                "invalid disposition: {d} is not in the quarantine (use malformed, rejected, expired or conflicting)"
            )));
        }
        Ok(Filter {
            partner: params.get("partner").map(str::to_owned),
            disposition,
        })
    }

    fn store(&self) -> CallbackFilter {
        let mut filter = match self.disposition {
            Some(d) => CallbackFilter::default().disposition(d),
            None => CallbackFilter::quarantined(),
        };
        filter.partner = self.partner.clone();
        filter.without_body()
    }

    /// The query string (URL-encoded), without `?`.
    fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = &self.partner {
            q.append_pair("partner", p);
        }
        if let Some(d) = self.disposition {
            q.append_pair("disposition", d.as_str());
        }
        q.finish()
    }

    fn path(&self, path: &str) -> String {
        match self.query() {
            q if q.is_empty() => path.to_owned(),
            q => format!("{path}?{q}"),
        }
    }

    fn words(&self) -> String {
        let what = self
            .disposition
            .map_or("quarantined".to_owned(), |d| d.as_str().to_owned());
        match &self.partner {
            Some(p) => format!("{what} callbacks from {}", inert(p, CELL_CHARS).0),
            None => format!("{what} callbacks from every partner"),
        }
    }

    /// Hidden fields carrying the filter to a form's action.
    fn hidden(&self) -> Markup {
        html! {
            @if let Some(p) = &self.partner { input type="hidden" name="partner" value=(p); }
            @if let Some(d) = self.disposition { input type="hidden" name="disposition" value=(d.as_str()); }
        }
    }

    /// How many the health report counts in the quarantine for this filter.
    fn count(&self, report: &crate::ops::HealthReport) -> u64 {
        report
            .partners
            .iter()
            .filter(|p| self.partner.as_deref().is_none_or(|name| p.partner == name))
            .flat_map(|p| p.quarantined.iter())
            .filter(|(d, _)| self.disposition.is_none_or(|want| **d == want))
            .map(|(_, n)| *n)
            .sum()
    }
}

/// `GET /quarantine?partner=&disposition=&after=&seen=&limit=`
pub(super) async fn quarantine(State(state): State<Shared>, uri: Uri) -> Response {
    let params = Params::from_query(&uri);
    let loaded = async {
        let filter = Filter::from(&params)?;
        let page = Page::<CallbackId>::from(&params)?;
        let mut query = filter.store().limit(page.limit);
        query.after = page.after;
        let rows = state.liaison.store().list_callbacks(&query).await?;
        let report = state.liaison.health(state.window).await?;
        let total = filter.count(&report);
        let last = (rows.len() == page.limit)
            .then(|| rows.last().map(|c| c.id.to_string()))
            .flatten();
        let body = html! {
            h1 { "Callbacks in quarantine (" (total) ")" }
            p { "Callbacks a partner sent that liaison could not apply: unreadable, failed \
                verification, matched nothing in time, or contradicting what is known. Open one \
                to read its body. Reprocess once a fix has shipped (a matcher, a key, a \
                configuration); dismiss, with a reason, those that need nothing (a test message, \
                a repeat the partner sent again correctly, a conflict settled with the partner)." }
            p { "Showing " (filter.words()) ". Only: "
                a href=(state.link("/quarantine")) { "all" }
                @for d in Disposition::QUARANTINED {
                    " · " a href=(state.link(&Filter { partner: filter.partner.clone(), disposition: Some(d) }.path("/quarantine"))) { (d.as_str()) }
                }
                " · " a href=(state.link(&filter.path("/export/quarantine"))) data-action="export" download { "Export as CSV" }
            }
            (table(&state, &rows))
            (pager(&state, &filter.path("/quarantine"), &page, rows.len(), Some(total), last))
            @if !rows.is_empty() { (bulk_forms(&state, &filter, &Request::default())) }
        };
        let shell = Shell {
            state: &state,
            query: "",
        };
        Ok::<_, Failure>(document(&shell, "Ops: quarantine", body))
    };
    match loaded.await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

fn table(state: &OpsState, rows: &[StoredCallback]) -> Markup {
    html! {
        table.callbacks #quarantine-list {
            thead { tr { th { "Received" } th { "Partner" } th { "Why it is here" } th { "Error" }
                th { "Size" } th { "Event id" } th { "Submission" } } }
            tbody {
                @for c in rows {
                    tr data-callback=(c.id) {
                        td.nowrap { a href=(state.link(&format!("/callbacks/{}", c.id))) { (when(c.received_at)) } }
                        td { (shown(&c.partner, CELL_CHARS)) }
                        td title=(c.disposition.as_str()) { (reason_words(c.disposition)) }
                        td { (shown(c.error.as_deref().unwrap_or(""), CELL_CHARS)) }
                        td.nowrap { (c.size) " bytes" }
                        td { (shown(c.event_id.as_deref().unwrap_or(""), CELL_CHARS)) }
                        td.nowrap { @if let Some(id) = c.submission_id {
                            a href=(state.link(&format!("/submissions/{id}"))) { (id) } } }
                    }
                }
            }
        }
    }
}

fn bulk_forms(state: &OpsState, filter: &Filter, request: &Request) -> Markup {
    if state.action_token().is_none() {
        return read_only("reprocessing and dismissing are");
    }
    html! {
        h2 #bulk { "Every one of these at once" }
        p.muted { "First you see how many would be changed; nothing changes until you confirm." }
        form method="post" action=(state.link("/quarantine/reprocess")) data-action="reprocess-where" {
            fieldset {
                legend { "Reprocess all " (filter.words()) }
                (filter.hidden())
                (who_and_why(request, "What was fixed (goes to the log)"))
                button type="submit" { "Count them first" }
            }
        }
        form method="post" action=(state.link("/quarantine/dismiss")) data-action="dismiss-where" {
            fieldset {
                legend { "Dismiss all " (filter.words()) }
                (filter.hidden())
                (who_and_why(request, "Why (kept with each callback)"))
                button type="submit" { "Count them first" }
            }
        }
    }
}

/// `GET /callbacks/{id}`: one callback, its body (bounded), and the forms.
pub(super) async fn page(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let loaded = async {
        let id: CallbackId = id.parse()?;
        Ok::<_, Failure>(state.liaison.store().callback(id).await?)
    };
    match loaded.await {
        Ok(c) => {
            let body = render(&state, &c, &Request::default());
            let shell = Shell {
                state: &state,
                query: "",
            };
            respond(StatusCode::OK, document(&shell, "Ops: callback", body))
        }
        Err(f) => error_page(f.status, &f.message, &state.link("/quarantine")),
    }
}

fn render(state: &OpsState, c: &StoredCallback, request: &Request) -> Markup {
    let path = format!("/callbacks/{}", c.id);
    html! {
        p { a href=(state.link("/quarantine")) { "← The quarantine" } }
        h1 { "Callback from " (shown(&c.partner, CELL_CHARS)) }
        dl {
            dt { "Why it is here" } dd { strong data-field="disposition" { (c.disposition.as_str()) } " — " (reason_words(c.disposition)) }
            dt { "Error" } dd { (shown(c.error.as_deref().unwrap_or("none"), DETAIL_CHARS)) }
            dt { "Received" } dd { (when(c.received_at)) }
            @if let Some(at) = c.processed_at { dt { "Processed" } dd { (when(at)) } }
            dt { "Event id" } dd { (shown(c.event_id.as_deref().unwrap_or("none"), CELL_CHARS)) }
            @if let Some(id) = c.submission_id {
                dt { "Submission" } dd { a href=(state.link(&format!("/submissions/{id}"))) { (id) } }
            }
            dt { "Size" } dd { (c.size) " bytes (SHA-256 " (shown(&c.body_hash, CELL_CHARS)) ")" }
            dt { "Id" } dd { (c.id) }
            @if let Some(d) = &c.dismissal {
                dt { "Dismissed" } dd data-field="dismissal" { "by " (shown(d.actor.as_str(), CELL_CHARS)) " at " (when(d.at))
                    " (it was " (d.from.as_str()) "): " (shown(&d.reason, DETAIL_CHARS)) }
            }
        }
        h2 { "Body" }
        (body_view(c))
        @if state.action_token().is_none() {
            (read_only("reprocessing and dismissing are"))
        } @else {
            @if c.disposition.is_reprocessable() {
                form method="post" action=(state.link(&format!("{path}/reprocess"))) data-action="reprocess" {
                    fieldset {
                        legend { "Reprocess: run it through verification and matching again" }
                        p.muted { "Do this once the fix has shipped. It is applied if it now matches; \
                            otherwise it stays in the quarantine with the new reason." }
                        (who_and_why(request, "What was fixed (goes to the log)"))
                        button type="submit" { "Reprocess" }
                    }
                }
            }
            @if c.disposition.is_quarantined() {
                form method="post" action=(state.link(&format!("{path}/dismiss"))) data-action="dismiss" {
                    fieldset {
                        legend { "Dismiss: it needs nothing" }
                        p.muted { "It leaves the quarantine with your name and reason kept with it. \
                            It can still be reprocessed on purpose later." }
                        (who_and_why(request, "Why (kept with the callback)"))
                        button type="submit" { "Dismiss" }
                    }
                }
            }
            @if !c.disposition.is_reprocessable() && !c.disposition.is_quarantined() {
                p { "Nothing to do: it is " (c.disposition.as_str()) "." }
            }
        }
    }
}

/// At most [`BODY_BYTES`] of the body, as text, inert.
fn body_view(c: &StoredCallback) -> Markup {
    match &c.body {
        None => html! { p.muted { "Not kept (purged by retention, or never stored)." } },
        Some(body) => {
            let cut = &body[..body.len().min(BODY_BYTES)];
            let text = String::from_utf8_lossy(cut);
            // Newlines are kept (a <pre>); every other invisible character
            // shows as an escape.
            let lines: Vec<String> = text
                .split('\n')
                .map(|line| inert(line, BODY_BYTES).0)
                .collect();
            html! {
                pre.body data-field="body" { (lines.join("\n")) }
                @if body.len() > BODY_BYTES {
                    p.muted { "The first " (BODY_BYTES) " of " (body.len()) " bytes." }
                }
            }
        }
    }
}

/// `POST /callbacks/{id}/{reprocess|dismiss}`: fields `actor`, `reason`, `token`.
pub(super) async fn act(
    State(state): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let back = format!("/callbacks/{id}");
    let (_, request) = match checked(&state, &headers, &body, &back) {
        Ok(checked) => checked,
        Err(refusal) => return *refusal,
    };
    let acted = async {
        match action.as_str() {
            "reprocess" => {
                let receipt = reprocess(&state.liaison, &id, &request).await?;
                Ok(html! {
                    p { "Reprocessed: it is now " strong data-field="disposition" { (receipt.disposition.as_str()) }
                        " — " (reason_words(receipt.disposition)) "."
                        @if let Some(detail) = &receipt.detail { " " (shown(detail, CELL_CHARS)) } }
                    @if let Some(sid) = receipt.submission_id {
                        p { a href=(state.link(&format!("/submissions/{sid}"))) { "Its submission" } }
                    }
                })
            }
            "dismiss" => {
                let dismissed = dismiss(&state.liaison, &id, &request).await?;
                Ok(html! {
                    p { "Dismissed: the callback from " (shown(&dismissed.partner, CELL_CHARS))
                        " left the quarantine. Your name and reason are kept with it." }
                })
            }
            _ => Err(Failure::not_found(
                "no such action: use reprocess or dismiss",
            )),
        }
    };
    match acted.await {
        Ok(what) => done(
            &state,
            "Done",
            what,
            "/quarantine",
            "Back to the quarantine",
        ),
        Err(f) => failed(&state, &f, &back, "Back to the callback"),
    }
}

/// The quarantined callbacks `filter` matches that `action` applies to,
/// oldest first, all of them (paged through; at most [`ListFilter::MAX_LIMIT`]
/// per page).
async fn matching(
    state: &Shared,
    filter: &Filter,
    reprocessing: bool,
) -> Result<Vec<CallbackId>, Failure> {
    let mut query = filter.store().oldest_first().limit(ListFilter::MAX_LIMIT);
    if reprocessing {
        query.dispositions.retain(|d| d.is_reprocessable());
        if query.dispositions.is_empty() {
            return Ok(Vec::new());
        }
    }
    let mut ids = Vec::new();
    loop {
        let batch = state.liaison.store().list_callbacks(&query).await?;
        let Some(last) = batch.last() else { break };
        query.after = Some(last.id);
        ids.extend(batch.iter().map(|c| c.id));
        if batch.len() < ListFilter::MAX_LIMIT {
            break;
        }
    }
    Ok(ids)
}

/// `POST /quarantine/{reprocess|dismiss}`: fields `partner`, `disposition`
/// (the filter), `actor`, `reason`, `token`; without `confirm` a dry run
/// that counts and asks to confirm, with `confirm` and `expected` (the
/// count confirmed) the action on each. A count that changed meanwhile is
/// refused (count again).
pub(super) async fn act_where(
    State(state): State<Shared>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, request) = match checked(&state, &headers, &body, "/quarantine") {
        Ok(checked) => checked,
        Err(refusal) => return *refusal,
    };
    let reprocessing = match action.as_str() {
        "reprocess" => true,
        "dismiss" => false,
        _ => {
            let f = Failure::not_found("no such action: use reprocess or dismiss");
            return failed(&state, &f, "/quarantine", "Back to the quarantine");
        }
    };
    let acted = async {
        let filter = Filter::from(&params)?;
        let (actor, reason) = request.check()?;
        let ids = matching(&state, &filter, reprocessing).await?;
        let verb = if reprocessing { "reprocess" } else { "dismiss" };
        if params.get("confirm").is_none() {
            return Ok(confirm_page(&state, &filter, &request, verb, ids.len()));
        }
        let expected = params.parsed::<usize>("expected")?;
        if expected != Some(ids.len()) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!(
                    "the quarantine changed since you counted: {} match now, you confirmed {}; count again",
                    ids.len(),
                    expected.map_or("none".to_owned(), |n| n.to_string())
                ),
            ));
        }
        let words = filter.words();
        let scope = BulkScope {
            ids: &ids,
            filter: &words,
            partner: filter.partner.as_deref(),
        };
        let actor = Actor::person(actor.as_str());
        let outcome = if reprocessing {
            state
                .liaison
                .reprocess_callbacks_by(scope, actor, reason)
                .await?
        } else {
            state
                .liaison
                .dismiss_callbacks(scope, actor, reason)
                .await?
        };
        let changed = outcome.changed;
        let refused: Vec<(CallbackId, String)> = outcome
            .refused
            .into_iter()
            .map(|(id, e)| (id, Failure::from(e).message))
            .collect();
        tracing::warn!(
            action = if reprocessing { "reprocess_callbacks" } else { "dismiss_callbacks" },
            filter = %filter.query(),
            changed,
            refused = refused.len(),
            actor = request.actor.as_str(),
            reason,
            "ops page action"
        );
        Ok(done(
            &state,
            "Done",
            html! {
                p data-field="changed" { (if reprocessing { "Reprocessed " } else { "Dismissed " }) (changed)
                    " of " (ids.len()) " " (filter.words()) "." }
                @if !refused.is_empty() {
                    p { (refused.len()) " could not be:" }
                    ul { @for (id, why) in refused.iter().take(50) {
                        li { a href=(state.link(&format!("/callbacks/{id}"))) { (id) } ": " (shown(why, CELL_CHARS)) }
                    } }
                }
            },
            &filter.path("/quarantine"),
            "Back to the quarantine",
        ))
    };
    match acted.await {
        Ok(response) => response,
        Err(f) => failed(&state, &f, "/quarantine", "Back to the quarantine"),
    }
}

/// The dry run's answer: how many would change, and the form to confirm
/// (the token is asked again, never carried in the page).
fn confirm_page(
    state: &Shared,
    filter: &Filter,
    request: &Request,
    verb: &str,
    n: usize,
) -> Response {
    let body = html! {
        h1 { "Check before you " (verb) }
        p.note role="status" data-field="dry-run" { strong data-field="count" { (n) } " " (filter.words())
            " would be " (if verb == "reprocess" { "reprocessed" } else { "dismissed" })
            ". Nothing has been changed yet." }
        @if n > 0 {
            form method="post" action=(state.link(&format!("/quarantine/{verb}"))) data-action=(format!("{verb}-confirm")) {
                fieldset {
                    legend { "Confirm" }
                    (filter.hidden())
                    input type="hidden" name="confirm" value="yes";
                    input type="hidden" name="expected" value=(n);
                    (who_and_why(request, "Why"))
                    button type="submit" { (if verb == "reprocess" { "Reprocess " } else { "Dismiss " }) (n) }
                }
            }
        }
        p { a href=(state.link(&filter.path("/quarantine"))) { "← Back to the quarantine" } }
    };
    let shell = Shell { state, query: "" };
    respond(StatusCode::OK, document(&shell, "Ops: check first", body))
}
