//! `POST /submit`: the router and the request handler.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::behavior::{Behavior, Failure, Step};
use super::callback::CallbackHost;
use super::state::{Answer, Payload, Shared, Visit};

/// Largest request body accepted; above it the answer is 413.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The partner's routes: `POST /submit` and `GET /status/{reference}`;
/// anything else is 404 (405 for another method on these paths).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/submit", post(submit))
        .route("/status/{reference}", get(status))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// The `Idempotency-Key` header (header names are case-insensitive); a blank
/// or non-text value counts as missing.
fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("idempotency-key")?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Handle one submit. If the client goes away before the answer, axum drops
/// this future wherever it is waiting (in a [`Behavior::Slow`] sleep): the
/// guards then clear the key's in-progress mark and the concurrency count, and
/// since the effect only happens after the sleep, a request abandoned by its
/// client has no effect (and is not listed in `received`).
///
/// [`Behavior::Slow`]: super::Behavior::Slow
async fn submit(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let key = idempotency_key(request.headers());
    let visit = shared.arrive(key.clone());

    // Read inside the handler (rather than as an extractor) so that a 413 is
    // counted and logged like any other answer.
    let payload = match Bytes::from_request(request, &()).await {
        Ok(bytes) => Payload::new(bytes),
        Err(rejection) => {
            let answer = Answer::error(rejection.status(), &rejection.body_text());
            return respond(&visit, serde_json::Value::Null, answer);
        }
    };

    // In progress from here (before any Slow sleep) until the answer.
    let _mark = match &key {
        Some(key) => match shared.mark_in_progress(key) {
            Some(mark) => Some(mark),
            None => {
                let answer =
                    Answer::error(StatusCode::CONFLICT, "request with this key in progress");
                return respond(&visit, payload.value, answer);
            }
        },
        None => None,
    };

    let mut behavior = visit.behavior.clone();
    let terminal = loop {
        match behavior.step(visit.number) {
            Step::Sleep(delay, then) => {
                tokio::time::sleep(delay).await;
                behavior = *then;
            }
            Step::Fail(failure) => return respond(&visit, payload.value, failure_answer(failure)),
            Step::Process(terminal) => break terminal,
            Step::Script(script) => {
                behavior = script.decide(&payload.value);
                if matches!(behavior, Behavior::Scripted(_)) {
                    let answer = Answer::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the script returned another script",
                    );
                    return respond(&visit, payload.value, answer);
                }
            }
        }
    };

    let Some(key) = key else {
        let answer = Answer::error(StatusCode::BAD_REQUEST, "Idempotency-Key required");
        return respond(&visit, payload.value, answer);
    };
    let (answer, callback) = shared.process(&key, &payload, terminal);
    if let Some(plan) = callback {
        // Returns at once, except for an early callback, which is sent (and
        // answered by the host) before the submit is answered.
        plan.start(Arc::clone(&shared) as Arc<dyn CallbackHost>)
            .await;
    }
    respond(&visit, payload.value, answer)
}

/// `GET /status/{reference}`: the result of a reference, once the partner
/// knows it (see [`MockPartner`](super::MockPartner)). Not counted in the
/// stats nor listed in `received`, which are about submits.
async fn status(State(shared): State<Arc<Shared>>, Path(reference): Path<String>) -> Response {
    let answer = shared.status(&reference);
    (answer.status, axum::Json(answer.body)).into_response()
}

fn failure_answer(failure: Failure) -> Answer {
    match failure {
        Failure::Unavailable => Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service temporarily unavailable",
        ),
        Failure::RateLimited { retry_after_secs } => Answer {
            retry_after_secs: Some(retry_after_secs),
            ..Answer::error(StatusCode::TOO_MANY_REQUESTS, "rate limited")
        },
        Failure::Reject { status } => Answer::error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "request rejected by the partner",
        ),
        Failure::Broken => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

/// Log the answer for `received` and turn it into a response.
fn respond(visit: &Visit, body: serde_json::Value, answer: Answer) -> Response {
    visit.log(body, answer.status);
    let mut response = (answer.status, axum::Json(answer.body)).into_response();
    if let Some(seconds) = answer.retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
