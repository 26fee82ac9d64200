//! `GET /submissions/{id}` and the forms that replay, resolve or cancel it,
//! or re-run its parked result delivery.

use std::fmt::Write as _;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::actions::{Action, Failure, Request, perform, rerun as rerun_delivery};
use super::html::{document, error_page, escape, respond, state_words, value, when};
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
            respond(
                status,
                document(&format!("Ops: {}", s.idempotency_key), &html),
            )
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
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<p><a href=\"{}\">&larr; All partners</a></p><h1>Submission {}</h1>",
        escape(&forms.state.link("/")),
        escape(&s.idempotency_key)
    );
    match notice {
        Some(Notice::Done(action)) => {
            let _ = write!(
                out,
                "<p class=\"done\" role=\"status\">{}</p>",
                match action {
                    Action::Replay => "Replayed: it is queued and will be sent again.",
                    Action::Resolve => "Resolved by hand: it is settled and will not be sent.",
                    Action::Cancel => "Cancelled: it will not be sent.",
                }
            );
        }
        Some(Notice::Rerun) => {
            out.push_str(
                "<p class=\"done\" role=\"status\">Re-run: the result is handed to the host's \
                 handler again, with a fresh set of retries.</p>",
            );
        }
        Some(Notice::Error(message)) => {
            let _ = write!(
                out,
                "<p class=\"error\" role=\"alert\">{}</p>",
                escape(message)
            );
        }
        None => {}
    }
    details(&mut out, s);
    out.push_str("<h2>What you can do</h2>");
    forms.render(&mut out, s);
    forms.deliveries(&mut out, deliveries);
    timeline_table(&mut out, timeline);
    attempts_table(&mut out, attempts);
    out
}

fn details(out: &mut String, s: &Submission) {
    let row = |out: &mut String, name: &str, value: &str| {
        let _ = write!(out, "<dt>{name}</dt><dd>{value}</dd>");
    };
    out.push_str("<dl>");
    row(
        out,
        "State",
        &format!(
            "<strong data-field=\"state\">{}</strong> — {}",
            s.state.as_str(),
            state_words(s.state)
        ),
    );
    row(out, "Partner", &escape(&s.partner));
    row(out, "Kind", &escape(&s.kind));
    row(out, "Value", &value(s));
    if let Some(deadline) = s.business_deadline {
        row(
            out,
            "Business deadline",
            &format!(
                "<span data-field=\"business_deadline\">{}</span>",
                when(deadline)
            ),
        );
    }
    row(out, "Idempotency key", &escape(&s.idempotency_key));
    row(out, "Id", &s.id.to_string());
    if let Some(reference) = &s.external_ref {
        row(out, "Partner's reference", &escape(reference));
    }
    row(
        out,
        "Attempts",
        &format!(
            "{} in all, {} since it was last (re)started; replayed {} time(s)",
            s.attempts,
            s.attempts_in_cycle(),
            s.replays
        ),
    );
    row(out, "Created", &when(s.created_at));
    row(out, "Last change", &when(s.updated_at));
    if s.state == SubmissionState::Queued {
        row(out, "Next try", &when(s.due_at));
    }
    if let Some(deadline) = s.result_deadline {
        row(out, "Result due", &when(deadline));
    }
    if let Some(error) = &s.last_error {
        row(out, "Last error", &escape(error));
    }
    if let Some(ordering) = &s.ordering_key {
        row(out, "Ordering key", &escape(ordering));
    }
    if !s.correlation.is_empty() {
        let fields: Vec<String> = s
            .correlation
            .iter()
            .map(|(k, v)| format!("{} = {}", escape(k), escape(v)))
            .collect();
        row(out, "Correlation", &fields.join("<br>"));
    }
    let payload = if s.payload.is_some() {
        format!("kept, not shown here (fingerprint {})", s.fingerprint)
    } else {
        format!("purged by retention (fingerprint {})", s.fingerprint)
    };
    row(out, "Payload", &payload);
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
            escape(&format!("not kept: {reason} ({bytes} bytes)"))
        }
    };
    row(out, "Result document", &result);
    out.push_str("</dl>");
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
    fn render(&self, out: &mut String, s: &Submission) {
        let possible: Vec<Action> = Action::ALL
            .into_iter()
            .filter(|a| a.applies_to(s.state))
            .collect();
        if possible.is_empty() {
            let _ = write!(
                out,
                "<p>Nothing: it is finished ({}).</p>",
                state_words(s.state)
            );
            return;
        }
        if !self.enabled {
            out.push_str(
                "<p class=\"note\">Read-only: this page was started without an ops token, \
                 so replay, resolve and cancel are turned off. Use the command-line tool or \
                 the API instead.</p>",
            );
            return;
        }
        for action in possible {
            self.form(out, s, action);
        }
    }

    fn form(&self, out: &mut String, s: &Submission, action: Action) {
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
        let reason = if self.tried == Some(Tried::Action(action)) {
            escape(&self.request.reason)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<form method=\"post\" action=\"{target}\" data-action=\"{name}\">\
             <fieldset><legend>{legend}</legend><p class=\"muted\">{help}</p>\
             <label>Your name <input name=\"actor\" required maxlength=\"200\" value=\"{actor}\"></label>\
             <label>Why (goes on the timeline) <input name=\"reason\" required maxlength=\"2000\" value=\"{reason}\"></label>",
            target = escape(&self.state.link(&format!(
                "/submissions/{}/{}",
                s.id,
                action.as_str()
            ))),
            name = action.as_str(),
            actor = escape(&self.request.actor),
        );
        if action == Action::Resolve {
            out.push_str(
                "<label>The work <select name=\"outcome\">\
                 <option value=\"succeeded\">was done (succeeded)</option>\
                 <option value=\"failed\">could not be done (failed)</option></select></label>\
                 <label>Result document (JSON, optional: what the partner's portal showed) \
                 <textarea name=\"result\" rows=\"3\" maxlength=\"65536\"></textarea></label>",
            );
        }
        let _ = write!(
            out,
            "<label>Ops token <input type=\"password\" name=\"token\" required autocomplete=\"off\"></label>\
             <button type=\"submit\">{button}</button></fieldset></form>"
        );
    }
}

impl Forms<'_> {
    /// The submission's result deliveries to the host (none when its
    /// partner has no result handler), with a re-run form for a parked one.
    fn deliveries(&self, out: &mut String, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        out.push_str(
            "<h2 id=\"deliveries\">Results to the host</h2>\
             <table class=\"deliveries\"><thead><tr><th>Delivery</th><th>Result</th><th>State</th>\
             <th>Attempts</th><th>Recorded</th><th>Due or delivered</th><th>Last error</th></tr></thead><tbody>",
        );
        for d in deliveries {
            let at = match (d.state, d.delivered_at) {
                (DeliveryState::Delivered, Some(at)) => when(at),
                (DeliveryState::Parked, _) => "waits for a re-run".into(),
                _ => when(d.due_at),
            };
            let _ = write!(
                out,
                "<tr data-delivery=\"{id}\"><td class=\"nowrap\">{id}</td><td>{}</td>\
                 <td data-field=\"delivery-state\">{}</td><td>{}</td><td class=\"nowrap\">{}</td>\
                 <td class=\"nowrap\">{at}</td><td>{}</td></tr>",
                escape(d.final_state.as_str()),
                escape(d.state.as_str()),
                d.attempts,
                when(d.created_at),
                escape(d.last_error.as_deref().unwrap_or("")),
                id = d.id,
            );
        }
        out.push_str("</tbody></table>");
        let parked: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Parked)
            .collect();
        if parked.is_empty() {
            return;
        }
        if !self.enabled {
            out.push_str(
                "<p class=\"note\">Parked: the host's handler kept failing. Read-only: re-run it \
                 with the command-line tool (liaison rerun-delivery) or the API.</p>",
            );
            return;
        }
        for d in parked {
            let reason = if self.tried == Some(Tried::Rerun(d.id)) {
                escape(&self.request.reason)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{target}\" data-action=\"rerun\">\
                 <fieldset><legend>Re-run: hand the result to the host again</legend>\
                 <p class=\"muted\">The host's handler kept failing and gave up. Fix what made it fail \
                 (see the last error), then re-run: it gets a fresh set of retries.</p>\
                 <label>Your name <input name=\"actor\" required maxlength=\"200\" value=\"{actor}\"></label>\
                 <label>What was fixed (goes on the timeline) <input name=\"reason\" required maxlength=\"2000\" value=\"{reason}\"></label>\
                 <label>Ops token <input type=\"password\" name=\"token\" required autocomplete=\"off\"></label>\
                 <button type=\"submit\">Re-run</button></fieldset></form>",
                target = escape(&self.state.link(&format!(
                    "/submissions/{}/deliveries/{}/rerun",
                    d.submission_id, d.id
                ))),
                actor = escape(&self.request.actor),
            );
        }
    }
}

fn timeline_table(out: &mut String, timeline: &[Event]) {
    out.push_str(
        "<h2>Timeline</h2><table class=\"timeline\"><thead><tr><th>When</th><th>What</th>\
         <th>Change</th><th>Who</th><th>Why</th></tr></thead><tbody>",
    );
    for e in timeline {
        let change = match (e.from_state, e.to_state) {
            (Some(from), Some(to)) => format!("{from} &rarr; {to}"),
            (None, Some(to)) => to.to_string(),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td>{}</td><td>{change}</td><td>{}</td><td>{}</td></tr>",
            when(e.at),
            escape(e.kind.as_str()),
            escape(e.actor.as_str()),
            escape(e.reason.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}

fn attempts_table(out: &mut String, attempts: &[Attempt]) {
    out.push_str("<h2>Attempts</h2>");
    if attempts.is_empty() {
        out.push_str("<p>None yet.</p>");
        return;
    }
    out.push_str(
        "<table class=\"attempts\"><thead><tr><th>#</th><th>Started</th><th>Finished</th>\
         <th>Outcome</th><th>HTTP</th><th>Error</th></tr></thead><tbody>",
    );
    for a in attempts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.number,
            when(a.started_at),
            a.finished_at.map_or("running".into(), when),
            a.outcome.map_or("—", |o| o.as_str()),
            a.http_status.map_or(String::new(), |s| s.to_string()),
            escape(a.error.as_deref().unwrap_or("")),
        );
    }
    out.push_str("</tbody></table>");
}
