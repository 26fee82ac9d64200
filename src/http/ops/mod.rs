//! The ops page (feature `http`): is it working, what is at risk, and the
//! buttons to recover — for support and business staff, in plain words.
//!
//! [`router`] serves, server-rendered and working without JavaScript:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the four questions (working, noticed, impact, recoverable: yes or no, why, and a link), per-partner health (verdict and reasons, the last 24 hours as a chart), open alerts with their owners, the first page of each list to recover, results not delivered to the host, the quarantine per partner |
//! | `GET /search?q=` | submissions by idempotency key, correlation value (`name=value` for one field), partner reference, or submission or callback id |
//! | `GET /lists/{stuck\|failed\|deadlines}`, `/deliveries`, `/quarantine` | each list page by page (`after=` cursor, `limit=`, `partner=`; `disposition=` for the quarantine) with its count |
//! | `GET /export/{stuck\|failed\|deadlines\|deliveries\|quarantine}` | the list as filtered, as CSV, streamed a page at a time |
//! | `GET /callbacks/{id}` | one callback: why it is quarantined, and the first 8 KiB of its body, escaped |
//! | `POST /callbacks/{id}/reprocess` \| `dismiss` | reprocess (after a fix) or dismiss it (fields `actor`, `reason`, `token`) |
//! | `POST /quarantine/reprocess` \| `dismiss` | every quarantined callback the filter (`partner`, `disposition`) matches: a count first, then with `confirm` and `expected` (the count) the action |
//! | `GET /partners/{name}`, `POST /partners/{name}/pause` \| `resume` | a partner's pause (until, who, why) and the forms (`until`, `actor`, `reason`, `token`) |
//! | `GET /alerts`, `/alerts/{id}`, `POST /alerts/{id}/acknowledge` | alerts, one alert's notification history, acknowledging it (`actor`, `token`) |
//! | `GET /submissions/{id}` | one submission: details, timeline, attempts, its result deliveries to the host, and forms to replay, resolve or cancel it (and to re-run a parked delivery) |
//! | `POST /submissions/{id}/replay` \| `resolve` \| `cancel` | the forms' actions (fields `actor`, `reason`, `token`; `outcome` for resolve) |
//! | `POST /submissions/{id}/deliveries/{delivery}/rerun` | the re-run form's action (fields `actor`, `reason`, `token`) |
//! | `GET /api/health` | [`crate::ops::HealthReport`] as JSON |
//! | `GET /api/alerts?open=true` | alerts (`open=false`: all, newest first) |
//! | `GET /api/submissions?state=&partner=&limit=&after=` | submissions, oldest first |
//! | `GET /api/submissions/{id}` | one submission with its `timeline` and `attempts` |
//! | `GET /api/callbacks?quarantined=true&partner=&limit=&after=` | stored callbacks, newest first |
//! | `GET /api/deliveries?state=parked&partner=&submission=&limit=&after=` | result deliveries to the host, oldest first |
//! | `POST /api/submissions/{id}/replay` \| `resolve` \| `cancel` | JSON actions (`Authorization: Bearer <token>`) |
//! | `POST /api/deliveries/{id}/rerun` | re-run a parked result delivery (`Authorization: Bearer <token>`, `{"actor", "reason"}`) |
//! | `POST /api/callbacks/{id}/dismiss` | dismiss a quarantined callback (`Authorization: Bearer <token>`, `{"actor", "reason"}`); 409 when it is not quarantined |
//!
//! Reading needs no token unless [`OpsState::read_token()`] sets one; then
//! every read (the page, `/api/*`, `/metrics`, and the page's form posts)
//! needs it, as `Authorization: Bearer <token>` or, from a browser,
//! `?token=<token>` (the page carries it on in its own links and forms), and
//! is otherwise answered 401 with nothing read. It is compared in constant
//! time like the action token and needs at least [`MIN_TOKEN_BYTES`]; the
//! query form lands in browser history, so give operators a read token you
//! can rotate. [`OpsState::allowed_hosts()`] lists the `Host` names the router
//! answers; any other gets 421 Misdirected Request, reads and actions alike.
//! Set it whenever a browser can reach the page: it stops DNS rebinding,
//! where another site's page is served under a name that resolves to your
//! listener and reads it from an operator's browser.
//!
//! Payloads are never shown (they may hold personal data); a callback's
//! body only on its own page, at most its first 8 KiB. Pages are built with
//! compile-time templates (maud) that escape every value from data; text
//! from data is also cut to a bounded length, with control and
//! bidirectional-override characters shown as escapes. No scripts run (a
//! strict content security policy), nothing is loaded from elsewhere.
//!
//! Every action needs the token the router was built with (compared
//! in constant time; at least [`MIN_TOKEN_BYTES`], or building the router
//! fails); without one the page is read-only and actions answer 403.
//! Refused token attempts are counted and logged at most once a minute. A form post whose `Origin` is another host than its `Host` header is
//! refused (403; behind a reverse proxy, forward `Host` unchanged), and no
//! cookies are used, so another site cannot act through an operator's
//! browser. Each action names its actor and reason, which are journaled
//! (on the submission's timeline, with the dismissed callback, with the
//! pause) and logged; the answer is a page saying what was done, or why
//! it was refused with nothing changed.
//!
//! Serve the router on its own listener, bound to an address only operators
//! reach, not merged with [`callback_router`](crate::http::callback_router)
//! (which partners, usually the internet, must reach). The routes are
//! absolute: serve the router at the root of its listener.
//!
//! ```no_run
//! use liaison::Liaison;
//! use liaison::http::ops::{OpsState, router};
//!
//! # async fn run(liaison: Liaison) -> Result<(), Box<dyn std::error::Error>> {
//! let state = OpsState::new(liaison.clone())
//!     .token("a-long-random-secret")
//!     .read_token("another-long-random-secret")
//!     .allowed_hosts(["127.0.0.1:8081"]);
//! let ops = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//! let callbacks = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! tokio::try_join!(
//!     axum::serve(ops, router(state)?).into_future(),
//!     axum::serve(callbacks, liaison::http::callback_router(liaison)).into_future(),
//! )?;
//! # Ok(()) }
//! ```
//!
//! See `docs/operations.md` for the runbook.

mod actions;
mod alerts;
mod api;
mod auth;

pub use auth::MIN_TOKEN_BYTES;
mod callbacks;
mod chart;
mod csv;
mod detail;
mod failure;
mod forms;
mod html;
mod journal;
mod lists;
mod overview;
mod params;
mod partners;
mod questions;
mod search;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
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
    /// The token every read (the page, `/api/*` and `/metrics`) needs, as
    /// `Authorization: Bearer <token>` or, from a browser, `?token=<token>`.
    /// `None` (or empty): reads need no token.
    pub read_token: Option<String>,
    /// The `Host` names (`host` or `host:port`; without a port, any port) the
    /// router answers; any other is refused with 421 Misdirected Request.
    /// `None`: no check. Set it whenever the page is reachable from a
    /// browser: it is what stops DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
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
            read_token: None,
            allowed_hosts: None,
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

    /// Require `token` for every read: the page, `/api/*` and `/metrics`.
    /// Like the action token it needs at least [`MIN_TOKEN_BYTES`]; it is
    /// a different secret (the action token does not open the reads).
    pub fn read_token(mut self, token: impl Into<String>) -> Self {
        self.read_token = Some(token.into());
        self
    }

    /// Answer only requests whose `Host` is one of `hosts` (`host` or
    /// `host:port`, e.g. `127.0.0.1:8081`); others get 421. Set it whenever
    /// a browser can reach the page, against DNS rebinding.
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_hosts = Some(hosts.into_iter().map(Into::into).collect());
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

    /// The configured read token, if reads need one.
    fn reading_token(&self) -> Option<&str> {
        self.read_token.as_deref().filter(|t| !t.is_empty())
    }

    /// `path` with the read token appended as `token=` (before a
    /// `#fragment`), for the page's own links and forms (the browser has no
    /// other way to carry it). Not HTML-escaped (the templates escape it).
    fn link(&self, path: &str) -> String {
        match self.reading_token() {
            None => path.to_owned(),
            Some(token) => {
                let (path, fragment) = match path.split_once('#') {
                    Some((path, fragment)) => (path, format!("#{fragment}")),
                    None => (path, String::new()),
                };
                let sep = if path.contains('?') { '&' } else { '?' };
                let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
                format!("{path}{sep}token={token}{fragment}")
            }
        }
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
            .field("read_token", &self.reading_token().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
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
    auth::check_token(state.read_token.as_deref())?;
    auth::check_hosts(state.allowed_hosts.as_deref())?;
    if state.window.is_zero() {
        tracing::warn!("ops page: a zero health window was given; using one hour");
        state.window = DEFAULT_WINDOW;
    }
    let state = Arc::new(state);
    Ok(Router::new()
        .route("/", get(overview::page))
        .route("/search", get(search::page))
        .route("/lists/{list}", get(lists::page))
        .route("/export/{list}", get(csv::export))
        .route("/deliveries", get(lists::deliveries))
        .route("/quarantine", get(callbacks::quarantine))
        .route("/quarantine/{action}", post(callbacks::act_where))
        .route("/callbacks/{id}", get(callbacks::page))
        .route("/callbacks/{id}/{action}", post(callbacks::act))
        .route("/partners/{partner}", get(partners::page))
        .route("/partners/{partner}/{action}", post(partners::act))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}", get(alerts::page))
        .route("/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/submissions/{id}", get(detail::page))
        .route("/submissions/{id}/{action}", post(detail::act))
        .route(
            "/submissions/{id}/deliveries/{delivery}/rerun",
            post(detail::rerun),
        )
        .route("/api/health", get(api::health))
        .route("/api/alerts", get(api::alerts))
        .route("/api/submissions", get(api::submissions))
        .route("/api/submissions/{id}", get(api::submission))
        .route("/api/submissions/{id}/{action}", post(api::act))
        .route("/api/forget", post(api::forget_submission))
        .route("/api/callbacks", get(api::callbacks))
        .route("/api/callbacks/{id}/dismiss", post(api::dismiss_callback))
        .route("/api/deliveries", get(api::deliveries))
        .route("/api/deliveries/{id}/rerun", post(api::rerun_delivery))
        .route("/metrics", get(api::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state))
}

/// The top bar's links, on every page.
const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/lists/stuck", "Stuck"),
    ("/lists/failed", "Failed"),
    ("/quarantine", "Quarantine"),
    ("/deliveries", "Results not delivered"),
    ("/lists/deadlines", "Deadlines"),
    ("/alerts", "Alerts"),
];

/// Before every route: the allowed hosts (421), then, except for the JSON
/// actions (which carry the action token in `Authorization`), the read token
/// (401, with nothing read).
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/") || request.uri().path() == "/metrics";
    let refuse = |status: StatusCode, message: &str| {
        if api {
            let mut response = failure::Failure::new(status, message).json();
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        } else {
            // Not the read token: the request has not shown it.
            html::error_page(status, message, "/")
        }
    };
    if let Some(allowed) = &state.allowed_hosts
        && !auth::host_allowed(allowed, request.headers(), request.uri())
    {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this ops page does not answer for that host name",
        );
    }
    let json_action = request.method() == Method::POST && api;
    if !json_action && let Some(configured) = state.reading_token() {
        let query = params::Params::from_query(request.uri());
        let given = auth::bearer(request.headers()).or_else(|| query.get("token"));
        if !auth::may_read(Some(configured), given) {
            state.failed_tokens.record();
            return refuse(
                StatusCode::UNAUTHORIZED,
                "the ops read token is missing or wrong",
            );
        }
    }
    next.run(request).await
}
