//! What every action form and its answer share: the actor, reason and token
//! fields, the page that says what was done, and the page that says why an
//! action was refused.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};

use super::actions::{Failure, Request};
use super::html::{DETAIL_CHARS, Shell, document, respond, shown};
use super::params::Params;
use super::{OpsState, Shared};

/// The fields every action asks for: who, why (pre-filled with what was
/// typed before a refusal), and the ops token (never pre-filled).
pub(super) fn who_and_why(request: &Request, why: &str) -> Markup {
    html! {
        label { "Your name "
            input name="actor" required maxlength="200" value=(request.actor);
        }
        label { (why) " "
            input name="reason" required maxlength="2000" value=(request.reason);
        }
        label { "Ops token "
            input type="password" name="token" required autocomplete="off";
        }
    }
}

/// The note shown instead of action forms on a read-only page.
pub(super) fn read_only(what: &str) -> Markup {
    html! {
        p.note {
            "Read-only: this page was started without an ops token, so " (what)
            " turned off. Use the command-line tool or the API instead."
        }
    }
}

/// A posted form: its fields, as an action request, once the token and
/// origin checks passed; otherwise the refusal page (nothing was looked at
/// or changed).
pub(super) fn checked(
    state: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
    back: &str,
) -> Result<(Params, Request), Box<Response>> {
    let params = Params::from_form(body);
    let request = Request::from_form(&params);
    if let Err(denied) = state.authorize(headers, params.get("token")) {
        return Err(Box::new(refused(
            state,
            denied.status(),
            denied.message(),
            back,
            "Go back",
        )));
    }
    Ok((params, request))
}

/// The answer to an action that was done: what happened, and the way back.
pub(super) fn done(
    state: &OpsState,
    title: &str,
    what: Markup,
    back: &str,
    back_to: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        div.done role="status" { (what) }
        p { a href=(state.link(back)) { "← " (back_to) } }
    };
    let shell = Shell { state, query: "" };
    respond(
        StatusCode::OK,
        document(&shell, &format!("Ops: {title}"), body),
    )
}

/// The answer to an action that was refused (wrong state, missing reason,
/// wrong token, another site): why, in plain words, and the way back.
/// Nothing was changed.
pub(super) fn refused(
    state: &OpsState,
    status: StatusCode,
    message: &str,
    back: &str,
    back_to: &str,
) -> Response {
    let body = html! {
        h1 { "Not done" }
        p.error role="alert" { (shown(message, DETAIL_CHARS)) }
        p { "Nothing was changed." }
        p { a href=(state.link(back)) { "← " (back_to) } }
    };
    let shell = Shell { state, query: "" };
    respond(status, document(&shell, "Ops: not done", body))
}

/// [`refused`] for a failure.
pub(super) fn failed(state: &OpsState, failure: &Failure, back: &str, back_to: &str) -> Response {
    refused(state, failure.status, &failure.message, back, back_to)
}
