//! `GET /submissions/{id}` and the forms that replay, resolve or cancel it,
//! or re-run its parked result delivery.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::actions::{Action, Failure, Request, perform, rerun as rerun_delivery};
use maud::{Markup, html};

use super::forms::{read_only, who_and_why};
use super::html::{
    CELL_CHARS, DETAIL_CHARS, Shell, document, error_page, inert, respond, shown, state_words,
    value, when,
};
use super::params::Params;
use super::{OpsState, Shared};
use crate::model::delivery::{Delivery, DeliveryId, DeliveryState};
use crate::model::event::{Attempt, Event};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};

/// What to tell the operator above the details.
enum Notice {
    Done(Action),
    Rerun,
    Error(String),
}

/// The form that was sent, to fill it again after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tried {
    Action(Action),
    Rerun(DeliveryId),
}

/// `GET /submissions/{id}` (`?done=replay` after a form succeeded).
pub(super) async fn page(
    State(state): State<Shared>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let notice = match Params::from_query(&uri).get("done") {
        Some("rerun") => Some(Notice::Rerun),
        done => done.and_then(Action::parse).map(Notice::Done),
    };
    show(
        &state,
        &id,
        notice,
        &Request::default(),
        None,
        StatusCode::OK,
    )
    .await
}

/// `POST /submissions/{id}/{replay|resolve|cancel}` from the page's forms:
/// fields `actor`, `reason`, `token`, and `outcome` and `result` (JSON, optional) for resolve. Success
/// redirects (303) back to the submission's page.
pub(super) async fn act(
    State(state): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return error_page(StatusCode::NOT_FOUND, "no such action", &state.link("/"));
    };
    let params = Params::from_form(&body);
    let request = Request::from_form(&params);
    if let Err(denied) = state.authorize(&headers, params.get("token")) {
        let notice = Notice::Error(denied.message().to_owned());
        return show(
            &state,
            &id,
            Some(notice),
            &request,
            Some(Tried::Action(action)),
            denied.status(),
        )
        .await;
    }
    match perform(&state.liaison, &id, action, &request).await {
        Ok(done) => done_page(&state, done.id, action.as_str()),
        Err(f) => {
            show(
                &state,
                &id,
                Some(Notice::Error(f.message)),
                &request,
                Some(Tried::Action(action)),
                f.status,
            )
            .await
        }
    }
}

/// `POST /submissions/{id}/deliveries/{delivery}/rerun` from the re-run
/// form of a parked result delivery: fields `actor`, `reason`, `token`.
/// Success redirects (303) back to the submission's page.
pub(super) async fn rerun(
    State(state): State<Shared>,
    Path((id, delivery)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::from_form(&body);
    let request = Request::from_form(&params);
    let tried = delivery.parse().ok().map(Tried::Rerun);
    if let Err(denied) = state.authorize(&headers, params.get("token")) {
        let notice = Notice::Error(denied.message().to_owned());
        return show(&state, &id, Some(notice), &request, tried, denied.status()).await;
    }
    let submission = match id.parse::<SubmissionId>() {
        Ok(submission) => submission,
        Err(e) => {
            let f = Failure::from(e);
            return error_page(f.status, &f.message, &state.link("/"));
        }
    };
    match rerun_delivery(&state.liaison, &delivery, Some(submission), &request).await {
        Ok(done) => done_page(&state, done.submission_id, "rerun"),
        Err(f) => {
            show(
                &state,
                &id,
                Some(Notice::Error(f.message)),
                &request,
                tried,
                f.status,
            )
            .await
        }
    }
}

/// 303 back to the submission's page, saying which action was done.
fn done_page(state: &Shared, id: SubmissionId, done: &str) -> Response {
    let location = state.link(&format!("/submissions/{id}?done={done}"));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

async fn show(
    state: &Shared,
    id: &str,
    notice: Option<Notice>,
    request: &Request,
    tried: Option<Tried>,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let id: SubmissionId = id.parse()?;
        let store = state.liaison.store();
        Ok::<_, Failure>((
            store.get(id).await?,
            store.timeline(id).await?,
            store.attempts(id).await?,
            state
                .liaison
                .deliveries(&crate::store::DeliveryFilter::default().submission(id))
                .await?,
        ))
    };
    match loaded.await {
        Ok((s, timeline, attempts, deliveries)) => {
            let forms = Forms {
                enabled: state.action_token().is_some(),
                state,
                request,
                tried,
            };
            let html = render(
                &s,
                &timeline,
                &attempts,
                &deliveries,
                notice.as_ref(),
                &forms,
            );
            let shell = Shell { state, query: "" };
            respond(status, document(&shell, "Ops: submission", html))
        }
        // A refusal wins over what the lookup found.
        Err(_) if status.is_client_error() => match notice {
            Some(Notice::Error(message)) => error_page(status, &message, &state.link("/")),
            _ => error_page(status, "refused", &state.link("/")),
        },
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

fn render(
    s: &Submission,
    timeline: &[Event],
    attempts: &[Attempt],
    deliveries: &[Delivery],
    notice: Option<&Notice>,
    forms: &Forms<'_>,
) -> Markup {
    html! {
        p { a href=(forms.state.link("/")) { "← All partners" } }
        h1 { "Submission " (shown(&s.idempotency_key, CELL_CHARS)) }
        @match notice {
            Some(Notice::Done(action)) => {
                p.done role="status" { (match action {
                    Action::Replay => "Replayed: it is queued and will be sent again.",
                    Action::Resolve => "Resolved by hand: it is settled and will not be sent.",
                    Action::Cancel => "Cancelled: it will not be sent.",
                }) " Your name and reason are on the timeline below." }
            }
            Some(Notice::Rerun) => {
                p.done role="status" { "Re-run: the result is handed to the host's handler again, \
                    with a fresh set of retries. Your name and reason are on the timeline below." }
            }
            Some(Notice::Error(message)) => {
                p.error role="alert" { (shown(message, DETAIL_CHARS)) " Nothing was changed." }
            }
            None => {}
        }
        (details(s))
        h2 { "What you can do" }
        (forms.render(s))
        (forms.deliveries(deliveries))
        (timeline_table(timeline))
        (attempts_table(attempts))
    }
}

fn details(s: &Submission) -> Markup {
    // The partner's document may hold personal data: its shape, not its
    // content (the API and the CLI return it to those who may read it).
    let result = match &s.result {
        None if s.payload.is_none() && s.terminal_at.is_some() => {
            "none kept (purged with the payload, or none was sent)".to_owned()
        }
        None => "none".to_owned(),
        Some(crate::ResultDocument::Json { document }) => format!(
            "kept, not shown here ({} bytes of JSON)",
            serde_json::to_string(document).map_or(0, |t| t.len())
        ),
        Some(crate::ResultDocument::TooLarge { bytes, limit }) => {
            format!("not kept: {bytes} bytes, over the {limit}-byte cap")
        }
        Some(crate::ResultDocument::Unreadable { reason, bytes }) => {
            format!("not kept: {} ({bytes} bytes)", inert(reason, CELL_CHARS).0)
        }
    };
    html! {
        dl {
            dt { "State" } dd { strong data-field="state" { (s.state.as_str()) } " — " (state_words(s.state)) }
            dt { "Partner" } dd { (shown(&s.partner, CELL_CHARS)) }
            dt { "Kind" } dd { (shown(&s.kind, CELL_CHARS)) }
            dt { "Value" } dd { (value(s)) }
            @if let Some(deadline) = s.business_deadline {
                dt { "Business deadline" } dd { span data-field="business_deadline" { (when(deadline)) } }
            }
            dt { "Idempotency key" } dd { (shown(&s.idempotency_key, DETAIL_CHARS)) }
            dt { "Id" } dd { (s.id) }
            @if let Some(reference) = &s.external_ref {
                dt { "Partner's reference" } dd { (shown(reference, DETAIL_CHARS)) }
            }
            dt { "Attempts" } dd { (s.attempts) " in all, " (s.attempts_in_cycle())
                " since it was last (re)started; replayed " (s.replays) " time(s)" }
            dt { "Created" } dd { (when(s.created_at)) }
            dt { "Last change" } dd { (when(s.updated_at)) }
            @if s.state == SubmissionState::Queued { dt { "Next try" } dd { (when(s.due_at)) } }
            @if let Some(deadline) = s.result_deadline { dt { "Result due" } dd { (when(deadline)) } }
            @if let Some(error) = &s.last_error { dt { "Last error" } dd { (shown(error, DETAIL_CHARS)) } }
            @if let Some(ordering) = &s.ordering_key { dt { "Ordering key" } dd { (shown(ordering, DETAIL_CHARS)) } }
            @if !s.correlation.is_empty() {
                dt { "Correlation" }
                dd { @for (i, (k, v)) in s.correlation.iter().enumerate() {
                    @if i > 0 { br; }
                    (shown(k, CELL_CHARS)) " = " (shown(v, CELL_CHARS))
                } }
            }
            dt { "Payload" } dd {
                @if s.payload.is_some() { "kept, not shown here (fingerprint " (s.fingerprint) ")" }
                @else { "purged by retention (fingerprint " (s.fingerprint) ")" }
            }
            dt { "Result document" } dd { (result) }
        }
    }
}

struct Forms<'a> {
    enabled: bool,
    /// For the read token in links and form targets.
    state: &'a OpsState,
    /// What was typed, to fill the form again after a refusal.
    request: &'a Request,
    tried: Option<Tried>,
}

impl Forms<'_> {
    fn render(&self, s: &Submission) -> Markup {
        let possible: Vec<Action> = Action::ALL
            .into_iter()
            .filter(|a| a.applies_to(s.state))
            .collect();
        html! {
            @if possible.is_empty() {
                p { "Nothing: it is finished (" (state_words(s.state)) ")." }
            } @else if !self.enabled {
                (read_only("replay, resolve and cancel are"))
            } @else {
                @for action in possible { (self.form(s, action)) }
            }
        }
    }

    /// What was typed before a refusal of this form, or nothing.
    fn typed(&self, tried: Tried) -> Request {
        Request {
            actor: self.request.actor.clone(),
            reason: if self.tried == Some(tried) {
                self.request.reason.clone()
            } else {
                String::new()
            },
            ..Request::default()
        }
    }

    fn form(&self, s: &Submission, action: Action) -> Markup {
        let (legend, help, button) = match action {
            Action::Replay => (
                "Replay: send it again",
                "It goes back to the queue with a fresh set of retries. Do this once the cause is fixed.",
                "Replay",
            ),
            Action::Resolve => (
                "Resolve by hand",
                "Settle it without sending: the work was done another way (by phone, on the partner's portal) or will not be done.",
                "Resolve",
            ),
            Action::Cancel => (
                "Cancel",
                "Stop it for good: it will not be sent (again). A result arriving later is recorded and ignored.",
                "Cancel it",
            ),
        };
        let target = self
            .state
            .link(&format!("/submissions/{}/{}", s.id, action.as_str()));
        html! {
            form method="post" action=(target) data-action=(action.as_str()) {
                fieldset {
                    legend { (legend) }
                    p.muted { (help) }
                    @if action == Action::Resolve {
                        label { "The work " select name="outcome" {
                            option value="succeeded" { "was done (succeeded)" }
                            option value="failed" { "could not be done (failed)" }
                        } }
                        label { "Result document (JSON, optional: what the partner's portal showed) "
                            textarea name="result" rows="3" maxlength="65536" {} }
                    }
                    (who_and_why(&self.typed(Tried::Action(action)), "Why (goes on the timeline)"))
                    button type="submit" { (button) }
                }
            }
        }
    }

    /// The submission's result deliveries to the host (none when its
    /// partner has no result handler), with a re-run form for a parked one.
    fn deliveries(&self, deliveries: &[Delivery]) -> Markup {
        let parked: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Parked)
            .collect();
        html! {
            @if !deliveries.is_empty() {
                h2 #deliveries { "Results to the host" }
                table.deliveries {
                    thead { tr { th { "Delivery" } th { "Result" } th { "State" } th { "Attempts" }
                        th { "Recorded" } th { "Due or delivered" } th { "Last error" } } }
                    tbody {
                        @for d in deliveries {
                            tr data-delivery=(d.id) {
                                td.nowrap { (d.id) }
                                td { (d.final_state.as_str()) }
                                td data-field="delivery-state" { (d.state.as_str()) }
                                td { (d.attempts) }
                                td.nowrap { (when(d.created_at)) }
                                td.nowrap { @match (d.state, d.delivered_at) {
                                    (DeliveryState::Delivered, Some(at)) => (when(at)),
                                    (DeliveryState::Parked, _) => "waits for a re-run",
                                    _ => (when(d.due_at)),
                                } }
                                td { (shown(d.last_error.as_deref().unwrap_or(""), CELL_CHARS)) }
                            }
                        }
                    }
                }
                @if !parked.is_empty() && !self.enabled {
                    p.note { "Parked: the host's handler kept failing. Read-only: re-run it with the \
                        command-line tool (liaison rerun-delivery) or the API." }
                }
                @if self.enabled {
                    @for d in parked {
                        form method="post" action=(self.state.link(&format!(
                                "/submissions/{}/deliveries/{}/rerun", d.submission_id, d.id)))
                            data-action="rerun" {
                            fieldset {
                                legend { "Re-run: hand the result to the host again" }
                                p.muted { "The host's handler kept failing and gave up. Fix what made it fail \
                                    (see the last error), then re-run: it gets a fresh set of retries." }
                                (who_and_why(&self.typed(Tried::Rerun(d.id)), "What was fixed (goes on the timeline)"))
                                button type="submit" { "Re-run" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn timeline_table(timeline: &[Event]) -> Markup {
    html! {
        h2 { "Timeline" }
        table.timeline {
            thead { tr { th { "When" } th { "What" } th { "Change" } th { "Who" } th { "Why" } } }
            tbody {
                @for e in timeline {
                    tr {
                        td.nowrap { (when(e.at)) }
                        td { (shown(e.kind.as_str(), CELL_CHARS)) }
                        td { @match (e.from_state, e.to_state) {
                            (Some(from), Some(to)) => { (from) " → " (to) }
                            (None, Some(to)) => { (to) }
                            _ => {}
                        } }
                        td { (shown(e.actor.as_str(), CELL_CHARS)) }
                        td { (shown(e.reason.as_deref().unwrap_or(""), DETAIL_CHARS)) }
                    }
                }
            }
        }
    }
}

fn attempts_table(attempts: &[Attempt]) -> Markup {
    html! {
        h2 { "Attempts" }
        @if attempts.is_empty() {
            p { "None yet." }
        } @else {
            table.attempts {
                thead { tr { th { "#" } th { "Started" } th { "Finished" } th { "Outcome" } th { "HTTP" } th { "Error" } } }
                tbody {
                    @for a in attempts {
                        tr {
                            td { (a.number) }
                            td.nowrap { (when(a.started_at)) }
                            td.nowrap { (a.finished_at.map_or("running".into(), when)) }
                            td { (a.outcome.map_or("—", |o| o.as_str())) }
                            td { @if let Some(status) = a.http_status { (status) } }
                            td { (shown(a.error.as_deref().unwrap_or(""), CELL_CHARS)) }
                        }
                    }
                }
            }
        }
    }
}
