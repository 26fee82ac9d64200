//! HTTP routes (feature `http`): the callback endpoint partners post to,
//! behind the limits a public endpoint needs ([`EdgeLimits`]: a timeout, a
//! concurrency limit, a body limit).
//!
//! ```no_run
//! use liaison::http::{EdgeLimits, callback_router_with};
//! use liaison::Liaison;
//!
//! # async fn run(liaison: Liaison) -> std::io::Result<()> {
//! let app = callback_router_with(liaison, EdgeLimits::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod limits;
pub mod ops;

pub use self::limits::EdgeLimits;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::CONTENT_LENGTH};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::json;

use crate::callback::Disposition;
use crate::engine::Liaison;
use crate::error::ErrorKind;
use crate::model::submission::validate_partner;

/// A router with `POST /callbacks/{partner}`: each request is handed to
/// [`Liaison::ingest_callback`] and answered with the receipt's status and a
/// small JSON body (`callback_id`, `disposition`). A rejected callback (bad
/// signature, a partner name that is unknown, not configured for callbacks,
/// or not a valid partner name at all) is answered alike: 401 with
/// `{"disposition":"rejected"}` and no callback id, so that probing cannot
/// tell configured partners from others. The partner's size cap is
/// enforced before the body is read in full: a declared `Content-Length` above
/// it is refused at once, and reading stops one byte past it. A storage
/// failure answers 503, so the partner retries later.
///
/// Mount it under your own prefix with `Router::nest`, behind whatever
/// transport security your deployment uses; the callbacks themselves are
/// authenticated by the partner's signature verifier.
///
/// This router has no timeout and no limit on concurrent requests: serve
/// [`callback_router_with`] instead (or put your own layers in front), so
/// that whoever can reach the endpoint cannot hold connections open or
/// pile up requests.
pub fn callback_router(liaison: Liaison) -> Router {
    Router::new()
        .route("/callbacks/{partner}", post(receive))
        .with_state(liaison)
}

/// [`callback_router`] behind `limits`: a timeout per request (`408`), at
/// most [`EdgeLimits::concurrency`] callbacks at once (more are answered
/// `503` with `Retry-After` at once, so partners retry), and a body limit
/// (`413` before the body is read) that is, unless set, the largest
/// callback cap of the configured partners — each partner's own cap still
/// applies below it, and a callback above it is recorded as too large.
///
/// ```no_run
/// use std::time::Duration;
/// use liaison::http::{EdgeLimits, callback_router_with};
/// use liaison::Liaison;
///
/// # async fn run(liaison: Liaison) -> std::io::Result<()> {
/// let limits = EdgeLimits::default()
///     .timeout(Duration::from_secs(10))
///     .concurrency(32);
/// let app = callback_router_with(liaison, limits);
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub fn callback_router_with(liaison: Liaison, limits: EdgeLimits) -> Router {
    let limits = limits.for_callbacks(&liaison);
    limits.apply(callback_router(liaison))
}

async fn receive(
    State(liaison): State<Liaison>,
    Path(partner): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Not a partner name at all (control characters, spaces, too long):
    // nothing is stored, and it is answered like an unknown partner.
    if validate_partner(&partner).is_err() {
        return rejected();
    }
    let cap = liaison.callback_cap(&partner);
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let receipt = match declared {
        Some(size) if size > cap as u64 => liaison.refuse_oversized(&partner, &headers, size).await,
        _ => match read_capped(body, cap).await {
            Read::Whole(bytes) => liaison.ingest_callback(&partner, &headers, &bytes).await,
            Read::TooLarge => {
                let size = declared.unwrap_or(cap as u64 + 1);
                liaison.refuse_oversized(&partner, &headers, size).await
            }
            Read::Broken { received } => {
                liaison
                    .record_incomplete(&partner, &headers, received as u64, declared)
                    .await
            }
        },
    };
    match receipt {
        Ok(receipt) if receipt.disposition == Disposition::Rejected => rejected(),
        Ok(receipt) => {
            let status = StatusCode::from_u16(receipt.http_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({
                "callback_id": receipt.callback_id.to_string(),
                "disposition": receipt.disposition.as_str(),
            });
            (status, axum::Json(body)).into_response()
        }
        Err(error) if error.kind() == ErrorKind::InvalidInput => rejected(),
        Err(error) => {
            tracing::error!(%error, partner = ?partner, "callback could not be stored");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "error": "temporarily unable to accept callbacks" })),
            )
                .into_response()
        }
    }
}

/// What reading a callback's body came to.
enum Read {
    /// The whole body, at most the cap.
    Whole(Vec<u8>),
    /// More than the cap: reading stopped there.
    TooLarge,
    /// The client stopped sending before the body ended (it disconnected,
    /// or the connection broke) after `received` bytes.
    Broken { received: usize },
}

/// Read a body frame by frame, at most `cap` bytes, telling a body above
/// the cap from one the client never finished.
async fn read_capped(mut body: Body, cap: usize) -> Read {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    if bytes.len() + data.len() > cap {
                        return Read::TooLarge;
                    }
                    bytes.extend_from_slice(data);
                }
            }
            // A body limit in front (`EdgeLimits`) ends the body with its
            // own error once the limit is passed: too large, not broken.
            Err(e) if is_length_limit(&e) => return Read::TooLarge,
            Err(_) => {
                return Read::Broken {
                    received: bytes.len(),
                };
            }
        }
    }
    Read::Whole(bytes)
}

/// Whether a body error is a body limit's (tower-http's, through
/// http-body-util's `Limited`), anywhere in its chain of causes.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The one answer for every rejected callback, whatever the reason: the
/// same status and bytes for an unknown partner as for a bad signature.
fn rejected() -> Response {
    (
        StatusCode::from_u16(Disposition::Rejected.http_status())
            .unwrap_or(StatusCode::UNAUTHORIZED),
        axum::Json(json!({ "disposition": Disposition::Rejected.as_str() })),
    )
        .into_response()
}
