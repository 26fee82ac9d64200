//! The ops page (feature `http`): is it working, what is at risk, and the
//! buttons to recover — for support and business staff, in plain words.
//!
//! [`router`] serves, server-rendered and working without JavaScript:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | per-partner health (verdict and reasons, the last 24 hours as a chart), open alerts with their owners, stuck and failed work with its value at risk |
//! | `GET /submissions/{id}` | one submission: details, timeline, attempts, and forms to replay, resolve or cancel it |
//! | `POST /submissions/{id}/replay` \| `resolve` \| `cancel` | the forms' actions (fields `actor`, `reason`, `token`; `outcome` for resolve) |
//! | `GET /api/health` | [`crate::ops::HealthReport`] as JSON |
//! | `GET /api/alerts?open=true` | alerts (`open=false`: all, newest first) |
//! | `GET /api/submissions?state=&partner=&limit=&after=` | submissions, oldest first |
//! | `GET /api/submissions/{id}` | one submission with its `timeline` and `attempts` |
//! | `GET /api/callbacks?quarantined=true&partner=&limit=` | stored callbacks, newest first |
//! | `POST /api/submissions/{id}/replay` \| `resolve` \| `cancel` | JSON actions (`Authorization: Bearer <token>`) |
//!
//! Reading needs no token: put the page behind your own network controls.
//! Payloads and raw callback bodies are never shown (they may hold personal
//! data). Every action needs the token the router was built with (compared
//! in constant time; at least [`MIN_TOKEN_BYTES`], or building the router
//! fails); without one the page is read-only and actions answer 403.
//! Refused token attempts are counted and logged at most once a minute. A form post whose `Origin` is another host than its `Host` header is
//! refused (403; behind a reverse proxy, forward `Host` unchanged), and no
//! cookies are used, so another site cannot act through an operator's
//! browser. Each action names its actor and reason, which go on the
//! submission's timeline.
//!
//! The routes are absolute: serve the router at the root of its listener,
//! alone or merged with others (`Router::merge`).
//!
//! ```no_run
//! use liaison::Liaison;
//! use liaison::http::ops::{OpsState, router};
//!
//! # async fn run(liaison: Liaison) -> Result<(), Box<dyn std::error::Error>> {
//! let state = OpsState::new(liaison.clone()).token("a-long-random-secret");
//! let app = router(state)?.merge(liaison::http::callback_router(liaison));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! See `docs/operations.md` for the runbook.

mod actions;
mod api;
mod auth;

pub use auth::MIN_TOKEN_BYTES;
mod chart;
mod detail;
mod failure;
mod html;
mod overview;
mod params;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

use crate::engine::Liaison;

/// The health window used when none (or zero) is given: one hour.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// What the ops router serves from.
#[derive(Clone)]
#[non_exhaustive]
pub struct OpsState {
    /// The hub whose health, alerts and submissions are shown.
    pub liaison: Liaison,
    /// The bearer token every action needs. `None` (or empty) makes the page
    /// read-only: actions are refused with 403.
    pub token: Option<String>,
    /// The window health is computed over (rates, outcomes, trend). A zero
    /// window is replaced by [`DEFAULT_WINDOW`].
    pub window: Duration,
    /// Refused token attempts, logged at most once a minute.
    failed_tokens: Arc<auth::FailedTokens>,
}

impl OpsState {
    /// Read-only, over [`DEFAULT_WINDOW`].
    pub fn new(liaison: Liaison) -> Self {
        OpsState {
            liaison,
            token: None,
            window: DEFAULT_WINDOW,
            failed_tokens: Arc::new(auth::FailedTokens::new(auth::FAILURE_LOG_INTERVAL)),
        }
    }

    /// Allow actions to whoever presents `token`. Use a long random secret:
    /// [`router`] refuses one shorter than [`MIN_TOKEN_BYTES`] (16 bytes).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The health window.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The configured token, if actions are allowed.
    fn action_token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }

    /// [`auth::authorize`], counting (and now and then logging) refused tokens.
    fn authorize(
        &self,
        headers: &axum::http::HeaderMap,
        given: Option<&str>,
    ) -> Result<(), auth::Denied> {
        let verdict = auth::authorize(self.action_token(), headers, given);
        if verdict == Err(auth::Denied::BadToken) {
            self.failed_tokens.record();
        }
        verdict
    }
}

impl fmt::Debug for OpsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsState")
            .field("liaison", &self.liaison)
            .field("token", &self.action_token().map(|_| "<redacted>"))
            .field("window", &self.window)
            .finish()
    }
}

type Shared = Arc<OpsState>;

// The runbook's code must keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/operations.md")]
struct OperationsRunbook;

/// The ops page and its JSON API (see the [module docs](self)).
///
/// Refuses (`InvalidInput`) a token shorter than [`MIN_TOKEN_BYTES`];
/// without a token (or with an empty one) the page is read-only.
pub fn router(mut state: OpsState) -> crate::Result<Router> {
    auth::check_token(state.token.as_deref())?;
    if state.window.is_zero() {
        tracing::warn!("ops page: a zero health window was given; using one hour");
        state.window = DEFAULT_WINDOW;
    }
    Ok(Router::new()
        .route("/", get(overview::page))
        .route("/submissions/{id}", get(detail::page))
        .route("/submissions/{id}/{action}", post(detail::act))
        .route("/api/health", get(api::health))
        .route("/api/alerts", get(api::alerts))
        .route("/api/submissions", get(api::submissions))
        .route("/api/submissions/{id}", get(api::submission))
        .route("/api/submissions/{id}/{action}", post(api::act))
        .route("/api/callbacks", get(api::callbacks))
        .route("/metrics", get(api::metrics))
        .with_state(Arc::new(state)))
}
