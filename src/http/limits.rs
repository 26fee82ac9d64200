//! [`EdgeLimits`]: the tower layers a host puts in front of liaison's
//! routers, so that a flood of requests, a client that never finishes, or a
//! huge body is turned away at the edge instead of holding connections and
//! memory.
//!
//! Built from tower-http's `TimeoutLayer` and `RequestBodyLimitLayer` and
//! tower's global concurrency limit with load shedding: well-kept,
//! widely used layers, rather than hand-rolled ones.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::engine::Liaison;

/// Limits for the requests a router serves: a timeout per request, at most
/// so many requests at once (more are answered `503` at once, with
/// `Retry-After: 1`), and a largest request body (above it `413` before the
/// body is read). `Default` is what we recommend for the callback endpoint.
///
/// Use [`super::callback_router_with`] for the callback endpoint (its body
/// limit follows the partners' callback caps), or [`EdgeLimits::apply`] for
/// any other router, such as the ops page:
///
/// ```no_run
/// use std::time::Duration;
/// use liaison::http::ops::{OpsState, router};
/// use liaison::http::{EdgeLimits, callback_router_with};
/// use liaison::Liaison;
///
/// # async fn run(liaison: Liaison) -> Result<(), Box<dyn std::error::Error>> {
/// // Partners post here: at most 64 callbacks at once, 30 s each.
/// let callbacks = callback_router_with(liaison.clone(), EdgeLimits::default());
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
/// tokio::spawn(async move { axum::serve(listener, callbacks).await });
///
/// // The ops page, for operators only: on its own listener, on localhost.
/// let ops = EdgeLimits::default()
///     .concurrency(16)
///     .timeout(Duration::from_secs(60))
///     .max_body_bytes(64 * 1024)
///     .apply(router(OpsState::new(liaison.clone()).allowed_hosts(["127.0.0.1:8081"]))?);
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
/// axum::serve(listener, ops).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeLimits {
    /// How long one request may take, reading its body included; past it
    /// the client is answered `408` (a partner retries the callback; one
    /// that was stored meanwhile is recognised as a duplicate). Default
    /// 30 s.
    pub timeout: Duration,
    /// How many requests are served at once, across all of the router's
    /// routes; one more is answered `503` with `Retry-After: 1` at once,
    /// holding nothing. At least 1. Default 64.
    pub concurrency: usize,
    /// The largest request body accepted; a larger one is answered `413`
    /// before it is read (a declared `Content-Length`) or as soon as it
    /// passes the limit. `None`: for [`super::callback_router_with`], the
    /// largest callback cap of the configured partners (so each partner's
    /// own cap still decides, and records a too-large callback); for
    /// [`EdgeLimits::apply`], no limit. Default `None`.
    pub max_body_bytes: Option<usize>,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            timeout: Duration::from_secs(30),
            concurrency: 64,
            max_body_bytes: None,
        }
    }
}

impl EdgeLimits {
    /// Set [`EdgeLimits::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set [`EdgeLimits::concurrency`] (0 counts as 1).
    pub fn concurrency(mut self, requests: usize) -> Self {
        self.concurrency = requests.max(1);
        self
    }

    /// Set [`EdgeLimits::max_body_bytes`].
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = Some(bytes);
        self
    }

    /// `router` behind these limits. One concurrency budget is shared by
    /// all of its routes (and its fallback).
    pub fn apply<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let router = router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(self.concurrency.max(1)))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    self.timeout,
                )),
        );
        match self.max_body_bytes {
            Some(bytes) => router.layer(RequestBodyLimitLayer::new(bytes)),
            None => router,
        }
    }

    /// The body limit for the callback endpoint: the one set, or the
    /// largest callback cap of `liaison`'s partners.
    pub(super) fn for_callbacks(&self, liaison: &Liaison) -> EdgeLimits {
        let mut limits = self.clone();
        limits.max_body_bytes = Some(
            self.max_body_bytes
                .unwrap_or_else(|| liaison.largest_callback_cap()),
        );
        limits
    }
}

/// The answer to a request above the concurrency limit: `503` at once,
/// with `Retry-After`, so the partner retries shortly.
async fn overloaded(_: tower::BoxError) -> Result<Response, Infallible> {
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, "1")],
        axum::Json(json!({ "error": "too many requests at once; retry shortly" })),
    )
        .into_response())
}
