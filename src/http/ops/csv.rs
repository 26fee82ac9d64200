//! `GET /export/{list}`: a list as CSV, as filtered — the hand-off for a
//! manual fallback. Streamed a page at a time (the store is read as the
//! client takes the rows), never built whole in memory.
//!
//! Text cells that a spreadsheet would run as a formula (starting with `=`,
//! `+`, `-`, `@`, a tab or a carriage return) get a leading `'`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::Shared;
use super::actions::Failure;
use super::lists::List;
use super::params::Params;
use crate::callback::{Disposition, StoredCallback};
use crate::engine::Liaison;
use crate::model::delivery::{Delivery, DeliveryState};
use crate::model::submission::Submission;
use crate::store::{CallbackFilter, DeliveryFilter, ListFilter};

/// Rows read from the store per chunk.
pub(super) const CHUNK_ROWS: usize = 500;

/// What is exported, with its cursor.
enum Source {
    Submissions(ListFilter),
    Callbacks(CallbackFilter),
    Deliveries(DeliveryFilter),
}

impl Source {
    fn header(&self) -> &'static str {
        match self {
            Source::Submissions(_) => {
                "id,partner,kind,idempotency_key,state,value,currency,business_deadline,\
                 partner_reference,correlation,created_at,updated_at,attempts,last_error\r\n"
            }
            Source::Callbacks(_) => {
                "id,partner,received_at,disposition,error,event_id,submission_id,size,body_sha256\r\n"
            }
            Source::Deliveries(_) => {
                "id,submission_id,partner,result,state,attempts,created_at,last_error\r\n"
            }
        }
    }

    /// The next rows as CSV, moving the cursor on; `None` when done.
    async fn next(&mut self, liaison: &Liaison) -> crate::Result<Option<String>> {
        let mut out = String::new();
        let full = match self {
            Source::Submissions(filter) => {
                let rows = liaison.store().list(filter).await?;
                rows.iter().for_each(|s| submission_row(&mut out, s));
                filter.after = rows.last().map(|s| s.id);
                rows.len() == CHUNK_ROWS
            }
            Source::Callbacks(filter) => {
                let rows = liaison.store().list_callbacks(filter).await?;
                rows.iter().for_each(|c| callback_row(&mut out, c));
                filter.after = rows.last().map(|c| c.id);
                rows.len() == CHUNK_ROWS
            }
            Source::Deliveries(filter) => {
                let rows = liaison.deliveries(filter).await?;
                rows.iter().for_each(|d| delivery_row(&mut out, d));
                filter.after = rows.last().map(|d| d.id);
                rows.len() == CHUNK_ROWS
            }
        };
        Ok((!out.is_empty() || full).then_some(out))
    }
}

/// `GET /export/{stuck|failed|deadlines|quarantine|deliveries}` with the
/// list's filters (`partner=`, and `disposition=` for the quarantine).
pub(super) async fn export(
    State(state): State<Shared>,
    Path(list): Path<String>,
    uri: Uri,
) -> Response {
    let params = Params::from_query(&uri);
    let source = match source(&list, &params) {
        Ok(source) => source,
        Err(f) => return f.json(),
    };
    let liaison = state.liaison.clone();
    let header = source.header();
    // (source, whether the header went out, whether the rows ended)
    let stream = futures_util::stream::unfold(
        (source, false, false),
        move |(mut source, started, ended)| {
            let liaison = liaison.clone();
            async move {
                if ended {
                    return None;
                }
                if !started {
                    return Some((Ok(header.to_owned()), (source, true, false)));
                }
                match source.next(&liaison).await {
                    Ok(Some(chunk)) => Some((Ok(chunk), (source, true, false))),
                    Ok(None) => None,
                    Err(error) => {
                        // The status is sent; the client sees a cut-off body.
                        tracing::error!(%error, "ops page: CSV export stopped: the store failed");
                        Some((Err(error), (source, true, true)))
                    }
                }
            }
        },
    );
    let name = format!(
        "attachment; filename=\"liaison-{list}-{}.csv\"",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}

fn source(list: &str, params: &Params) -> Result<Source, Failure> {
    let partner = params.get("partner").map(str::to_owned);
    if let Some(list) = List::parse(list) {
        let filter = list.filter(partner.as_deref()).limit(CHUNK_ROWS);
        return Ok(Source::Submissions(filter));
    }
    match list {
        "quarantine" => {
            let mut filter = match params.parsed::<Disposition>("disposition")? {
                Some(d) if d.is_quarantined() => CallbackFilter::default().disposition(d),
                Some(d) => {
                    return Err(Failure::bad_request(format!(
                        "invalid disposition: {d} is not in the quarantine"
                    )));
                }
                None => CallbackFilter::quarantined(),
            };
            filter.partner = partner;
            Ok(Source::Callbacks(filter.without_body().limit(CHUNK_ROWS)))
        }
        "deliveries" => {
            let mut filter = DeliveryFilter::default()
                .state(DeliveryState::Parked)
                .limit(CHUNK_ROWS);
            filter.partner = partner;
            Ok(Source::Deliveries(filter))
        }
        _ => Err(Failure::not_found(
            "no such list: use stuck, failed, deadlines, quarantine or deliveries",
        )),
    }
}

/// One CSV cell: quoted when it holds a comma, quote or line break, with
/// a `'` before what a spreadsheet would run as a formula.
fn cell(out: &mut String, text: &str) {
    let guard = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = guard || text.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in text.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn row(out: &mut String, cells: &[&str]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell(out, c);
    }
    out.push_str("\r\n");
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map_or(String::new(), |t| t.to_rfc3339())
}

fn submission_row(out: &mut String, s: &Submission) {
    let correlation: Vec<String> = s
        .correlation
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    row(
        out,
        &[
            &s.id.to_string(),
            &s.partner,
            &s.kind,
            &s.idempotency_key,
            s.state.as_str(),
            &s.business_value
                .map_or(String::new(), |v| crate::format_value(v, s.currency)),
            &s.currency.map_or(String::new(), |c| c.code().to_owned()),
            &time(s.business_deadline),
            s.external_ref.as_deref().unwrap_or(""),
            &correlation.join("; "),
            &time(Some(s.created_at)),
            &time(Some(s.updated_at)),
            &s.attempts.to_string(),
            s.last_error.as_deref().unwrap_or(""),
        ],
    );
}

fn callback_row(out: &mut String, c: &StoredCallback) {
    row(
        out,
        &[
            &c.id.to_string(),
            &c.partner,
            &time(Some(c.received_at)),
            c.disposition.as_str(),
            c.error.as_deref().unwrap_or(""),
            c.event_id.as_deref().unwrap_or(""),
            &c.submission_id.map_or(String::new(), |s| s.to_string()),
            &c.size.to_string(),
            &c.body_hash,
        ],
    );
}

fn delivery_row(out: &mut String, d: &Delivery) {
    row(
        out,
        &[
            &d.id.to_string(),
            &d.submission_id.to_string(),
            &d.partner,
            d.final_state.as_str(),
            d.state.as_str(),
            &d.attempts.to_string(),
            &time(Some(d.created_at)),
            d.last_error.as_deref().unwrap_or(""),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let mut out = String::new();
        row(
            &mut out,
            &[
                "plain",
                "a,b",
                "say \"hi\"",
                "line\nbreak",
                "=HYPERLINK(\"x\")",
                "-1",
                "",
            ],
        );
        assert_eq!(
            out,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",\"'=HYPERLINK(\"\"x\"\")\",\"'-1\",\r\n"
        );
    }
}
