//! `GET /search?q=`: find submissions by what a caller reads out on the
//! phone — the idempotency key (a claim or order number), a correlation
//! value, the partner's reference — or by a submission or callback id.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::Shared;
use super::actions::Failure;
use super::html::{CELL_CHARS, Shell, document, error_page, respond, shown, when};
use super::lists::submissions_table;
use super::params::Params;
use crate::callback::CallbackId;
use crate::model::submission::{Submission, SubmissionId};
use crate::store::ListFilter;

/// Longest search accepted, in characters.
const MAX_QUERY_CHARS: usize = 500;
/// Most submissions one way of matching returns.
const MAX_HITS: usize = 100;

/// `GET /search?q=`
pub(super) async fn page(State(state): State<Shared>, uri: Uri) -> Response {
    let params = Params::from_query(&uri);
    let query = params.get("q").unwrap_or("").trim().to_owned();
    match render(&state, &query).await {
        Ok(html) => respond(StatusCode::OK, html),
        Err(f) => error_page(f.status, &f.message, &state.link("/")),
    }
}

async fn render(state: &Shared, query: &str) -> Result<String, Failure> {
    if query.chars().count() > MAX_QUERY_CHARS {
        return Err(Failure::bad_request(format!(
            "the search is too long: at most {MAX_QUERY_CHARS} characters"
        )));
    }
    let store = state.liaison.store();
    let mut found: Vec<(Submission, &'static str)> = Vec::new();
    let mut callback = None;
    if !query.is_empty() {
        let mut add = |rows: Vec<Submission>, how: &'static str| {
            for s in rows {
                if !found.iter().any(|(f, _)| f.id == s.id) {
                    found.push((s, how));
                }
            }
        };
        if let Ok(id) = query.parse::<SubmissionId>() {
            match store.get(id).await {
                Ok(mut s) => {
                    s.payload = None;
                    add(vec![s], "submission id");
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Ok(id) = query.parse::<CallbackId>() {
            match store.callback(id).await {
                Ok(c) => callback = Some(c),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let base = || ListFilter::default().without_payload().limit(MAX_HITS);
        add(
            store.list(&base().idempotency_key(query)).await?,
            "idempotency key",
        );
        add(
            store.list(&base().external_ref(query)).await?,
            "partner's reference",
        );
        // A value no correlation field could hold matches none.
        if crate::model::submission::validate_correlation("value", query).is_ok() {
            add(
                store.list(&base().correlation_value(query)).await?,
                "correlation value",
            );
        }
        if let Some((name, value)) = query.split_once('=')
            && crate::model::submission::validate_correlation(name.trim(), value.trim()).is_ok()
        {
            add(
                store
                    .list(&base().correlation(name.trim(), value.trim()))
                    .await?,
                "correlation field",
            );
        }
    }
    let rows: Vec<Submission> = found.iter().map(|(s, _)| s.clone()).collect();
    let ways: Vec<&str> = {
        let mut ways: Vec<&str> = found.iter().map(|(_, how)| *how).collect();
        ways.dedup();
        ways
    };
    let body = html! {
        h1 { "Search" }
        @if query.is_empty() {
            p { "Type what the caller reads out — a claim or order number (the idempotency key \
                or a correlation value such as order_no), the partner's reference — or a \
                submission or callback id, in the box at the top of any page. A correlation \
                field can also be named: order_no=SO-9913." }
        } @else {
            p data-field="hits" { (rows.len()) " submission(s) found for "
                strong { (shown(query, CELL_CHARS)) }
                @if !ways.is_empty() { " (by " (ways.join(", ")) ")" } "." }
            @if let Some(c) = &callback {
                p { "A callback has this id: "
                    a href=(state.link(&format!("/callbacks/{}", c.id))) { "the callback from "
                        (shown(&c.partner, CELL_CHARS)) " received " (when(c.received_at)) } "." }
            }
            @if rows.is_empty() && callback.is_none() {
                p { "Nothing matches. Keys and references match exactly (capitals count); \
                    check for spaces and look-alike characters." }
            } @else if !rows.is_empty() {
                (submissions_table(state, "search", &rows, false, Utc::now()))
            }
        }
    };
    let shell = Shell { state, query };
    Ok(document(&shell, "Ops: search", body))
}
