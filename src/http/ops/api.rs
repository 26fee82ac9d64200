//! The JSON API: health, alerts, submissions, callbacks, result deliveries,
//! and the actions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::Shared;
use super::actions::{Action, Failure, Request, dismiss, forget, perform, rerun};
use super::auth::{Denied, bearer};
use super::params::Params;
use crate::callback::StoredCallback;
use crate::model::callback::{CallbackId, Correlation, Dismissal, Disposition};
use crate::model::delivery::DeliveryState;
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::{CallbackFilter, DeliveryFilter, ListFilter};

/// Most rows one list request returns.
pub(super) const MAX_LIST: usize = 1000;
/// Rows a list request returns when it does not say.
const DEFAULT_LIST: usize = 100;

/// A submission as the API shows it: without its payload, which may hold
/// personal data (`payload_purged` says whether it is still kept).
pub(super) fn submission_json(s: &Submission) -> Value {
    let mut value = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("payload");
        map.insert("payload_purged".into(), Value::Bool(s.payload.is_none()));
    }
    value
}

/// A stored callback as the API shows it: without its raw body (its size
/// and hash only) and headers.
#[derive(Serialize)]
struct CallbackView<'a> {
    id: CallbackId,
    partner: &'a str,
    received_at: DateTime<Utc>,
    body_hash: &'a str,
    size: u64,
    event_id: Option<&'a str>,
    correlation: Option<&'a Correlation>,
    disposition: Disposition,
    error: Option<&'a str>,
    submission_id: Option<SubmissionId>,
    processed_at: Option<DateTime<Utc>>,
    quarantined: bool,
    dismissal: Option<&'a Dismissal>,
}

impl<'a> From<&'a StoredCallback> for CallbackView<'a> {
    fn from(c: &'a StoredCallback) -> Self {
        CallbackView {
            id: c.id,
            partner: &c.partner,
            received_at: c.received_at,
            body_hash: &c.body_hash,
            size: c.size,
            event_id: c.event_id.as_deref(),
            correlation: c.correlation.as_ref(),
            disposition: c.disposition,
            error: c.error.as_deref(),
            submission_id: c.submission_id,
            processed_at: c.processed_at,
            quarantined: c.disposition.is_quarantined(),
            dismissal: c.dismissal.as_ref(),
        }
    }
}

fn limit(params: &Params) -> Result<usize, Failure> {
    Ok(params
        .parsed::<usize>("limit")?
        .unwrap_or(DEFAULT_LIST)
        .clamp(1, MAX_LIST))
}

/// `GET /api/health`
pub(super) async fn health(State(state): State<Shared>) -> Response {
    match state.liaison.health(state.window).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => Failure::from(e).json(),
    }
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub(super) async fn metrics(State(state): State<Shared>) -> Response {
    match state.liaison.render_metrics(state.window).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                crate::ops::Metrics::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => Failure::from(e).json(),
    }
}

/// `GET /api/alerts?open=true`
pub(super) async fn alerts(State(state): State<Shared>, uri: Uri) -> Response {
    let result = async {
        let open = Params::from_query(&uri).flag("open", true)?;
        let alerts = state.liaison.alerts(open).await?;
        Ok::<_, Failure>(json!({ "alerts": alerts }))
    };
    respond(result.await)
}

/// `GET /api/submissions?state=&partner=&limit=&after=`
pub(super) async fn submissions(State(state): State<Shared>, uri: Uri) -> Response {
    let result = async {
        let params = Params::from_query(&uri);
        let states = params
            .list("state")
            .into_iter()
            .map(str::parse::<SubmissionState>)
            .collect::<Result<Vec<_>, _>>()?;
        let limit = limit(&params)?;
        let filter = ListFilter {
            partner: params.get("partner").map(str::to_owned),
            states,
            kind: params.get("kind").map(str::to_owned),
            idempotency_key: params.get("key").map(str::to_owned),
            after: params.parsed::<SubmissionId>("after")?,
            limit: Some(limit),
            ..ListFilter::default()
        }
        .without_payload();
        let found = state.liaison.store().list(&filter).await?;
        let next_after = (found.len() == limit)
            .then(|| found.last().map(|s| s.id))
            .flatten();
        Ok::<_, Failure>(json!({
            "submissions": found.iter().map(submission_json).collect::<Vec<_>>(),
            "next_after": next_after,
        }))
    };
    respond(result.await)
}

/// `GET /api/submissions/{id}`
pub(super) async fn submission(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let result = async {
        let id: SubmissionId = id.parse()?;
        let store = state.liaison.store();
        let submission = store.get(id).await?;
        let timeline = store.timeline(id).await?;
        let attempts = store.attempts(id).await?;
        Ok::<_, Failure>(json!({
            "submission": submission_json(&submission),
            "timeline": timeline,
            "attempts": attempts,
        }))
    };
    respond(result.await)
}

/// `GET /api/callbacks?quarantined=true&partner=&limit=&after=`
pub(super) async fn callbacks(State(state): State<Shared>, uri: Uri) -> Response {
    let result = async {
        let params = Params::from_query(&uri);
        let mut filter = if params.flag("quarantined", false)? {
            CallbackFilter::quarantined()
        } else {
            CallbackFilter::default()
        };
        filter.partner = params.get("partner").map(str::to_owned);
        filter.limit = Some(limit(&params)?);
        filter.after = params.parsed::<CallbackId>("after")?;
        let filter = filter.without_body();
        let found = state.liaison.store().list_callbacks(&filter).await?;
        Ok::<_, Failure>(json!({
            "callbacks": found.iter().map(CallbackView::from).collect::<Vec<_>>(),
        }))
    };
    respond(result.await)
}

/// `GET /api/deliveries?state=parked&partner=&submission=&limit=&after=`: result
/// deliveries to the host, oldest first (no result documents: a delivery
/// row holds none).
pub(super) async fn deliveries(State(state): State<Shared>, uri: Uri) -> Response {
    let result = async {
        let params = Params::from_query(&uri);
        let filter = DeliveryFilter {
            partner: params.get("partner").map(str::to_owned),
            state: params.parsed::<DeliveryState>("state")?,
            submission: params.parsed::<SubmissionId>("submission")?,
            limit: Some(limit(&params)?),
            after: params.parsed("after")?,
        };
        let found = state.liaison.deliveries(&filter).await?;
        Ok::<_, Failure>(json!({ "deliveries": found }))
    };
    respond(result.await)
}

/// `POST /api/deliveries/{id}/rerun` with `Authorization: Bearer <token>`
/// and `{"actor", "reason"}`: hand a parked delivery to the host's handler
/// again.
pub(super) async fn rerun_delivery(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorize(&state, &headers) {
        return *response;
    }
    let result = async {
        let request = Request::from_json(&body)?;
        let done = rerun(&state.liaison, &id, None, &request).await?;
        Ok::<_, Failure>(json!({ "delivery": done }))
    };
    respond(result.await)
}

/// `POST /api/callbacks/{id}/dismiss` with `Authorization: Bearer <token>`
/// and `{"actor", "reason"}`: take a quarantined callback out of the
/// quarantine, journaled.
pub(super) async fn dismiss_callback(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorize(&state, &headers) {
        return *response;
    }
    let result = async {
        let request = Request::from_json(&body)?;
        let done = dismiss(&state.liaison, &id, &request).await?;
        Ok::<_, Failure>(json!({ "callback": CallbackView::from(&done) }))
    };
    respond(result.await)
}

/// `POST /api/forget` with `Authorization: Bearer <token>` and `{"actor",
/// "reason"}` plus `"id"`, or `"partner"` and `"key"`: erase a finished
/// submission's personal data (409 for unfinished work).
pub(super) async fn forget_submission(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(response) = authorize(&state, &headers) {
        return *response;
    }
    let result = async {
        let request = Request::from_json(&body)?;
        let done = forget(&state.liaison, &request).await?;
        Ok::<_, Failure>(json!({ "submission": submission_json(&done) }))
    };
    respond(result.await)
}

/// The action token from `Authorization`, or the refusal to answer with.
fn authorize(state: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    state.authorize(headers, bearer(headers)).map_err(|denied| {
        let mut response = Failure::new(denied.status(), denied.message()).json();
        if denied == Denied::BadToken {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Box::new(response)
    })
}

/// `POST /api/submissions/{id}/{replay|resolve|cancel}` with
/// `Authorization: Bearer <token>` and `{"actor", "reason", "outcome"?, "fresh_key"?}`.
pub(super) async fn act(
    State(state): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return Failure::not_found(format!(
            "no action {action:?}: use replay, resolve or cancel"
        ))
        .json();
    };
    if let Err(response) = authorize(&state, &headers) {
        return *response;
    }
    let result = async {
        let request = Request::from_json(&body)?;
        let done = perform(&state.liaison, &id, action, &request).await?;
        Ok::<_, Failure>(json!({ "submission": submission_json(&done) }))
    };
    respond(result.await)
}

fn respond(result: Result<Value, Failure>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(failure) => failure.json(),
    }
}
