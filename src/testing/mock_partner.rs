//! [`MockPartner`]: the handle, and starting and stopping its server.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio_util::sync::CancellationToken;

use super::behavior::Behavior;
use super::handler::router;
use super::listener::{TrackedListener, bind, bind_patiently};
use super::records::{MockStats, ReceivedRequest, SentCallback, SideEffect};
use super::state::Shared;
use crate::callback::StandardWebhooks;

/// How long [`MockPartner::come_back`] keeps trying to bind its port.
const REBIND_PATIENCE: Duration = Duration::from_secs(2);
/// How long [`MockPartner::go_down`] waits for idle connections to close.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(2);
/// Longest wait for the host to answer a callback.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// A partner over real HTTP on `127.0.0.1`, with scripted [`Behavior`]s, for
/// tests and examples.
///
/// It answers `POST /submit` (see [`Behavior`] for what it answers), honours
/// `Idempotency-Key` like a careful partner (one effect per key, the stored
/// answer replayed for retries, 409 while the key is in progress, 422 for a
/// key reused with another payload), and records what it saw
/// ([`received`](MockPartner::received)) and did
/// ([`side_effects`](MockPartner::side_effects)) so a test can assert
/// "exactly one effect at the partner". Bodies above 1 MiB are answered 413.
///
/// It also answers `GET /status/{reference}` ([`status_url`](MockPartner::status_url))
/// for the references it gave, the way partners that can be polled do:
///
/// | the reference was | the answer (200) |
/// |---|---|
/// | completed at once ([`Behavior::Complete`] and the like) | the result, as the submit was answered |
/// | accepted with [`Behavior::CallbackLater`] (any [`CallbackMode`](super::CallbackMode), `Never` included) | `{"reference": "MP-1", "status": "pending"}` until the first delivery is due (`delay` after the 202), then the result: `{"reference", "status", "reason" (if failed)}` plus the outcome's fields; for `Conflicting` and `Revised`, the second result |
/// | accepted with [`Behavior::Healthy`] | `pending`, for good |
///
/// An unknown reference is answered 404. Polls are not counted in
/// [`stats`](MockPartner::stats) nor listed in [`received`](MockPartner::received).
///
/// The handle is cheap to clone; all clones drive the same partner. The server
/// runs on the Tokio runtime that started it and stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct MockPartner {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bound at the first start; [`MockPartner::come_back`] binds it again.
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// `Some` while the partner is up.
    serving: Mutex<Option<Serving>>,
}

/// One period of being up, from a bind to [`MockPartner::go_down`].
struct Serving {
    stop: CancellationToken,
    /// Resolves once the listening socket is closed.
    closed: oneshot::Receiver<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.get_mut() {
            serving.stop.cancel();
        }
    }
}

impl fmt::Debug for MockPartner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPartner")
            .field("url", &self.url())
            .field("behavior", &self.behavior())
            .finish_non_exhaustive()
    }
}

impl MockPartner {
    /// Start a [`Behavior::Healthy`] partner on a free port of `127.0.0.1`.
    pub async fn start() -> io::Result<MockPartner> {
        MockPartner::start_with(Behavior::Healthy).await
    }

    /// Start a partner with `behavior` on a free port of `127.0.0.1`.
    pub async fn start_with(behavior: Behavior) -> io::Result<MockPartner> {
        // Callbacks go to the host's local webhook: never through a proxy.
        let callback_client = reqwest::Client::builder()
            .no_proxy()
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .map_err(io::Error::other)?;
        let shared = Arc::new(Shared::new(behavior, callback_client));
        let listener = bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let serving = serve(listener, &shared);
        Ok(MockPartner {
            inner: Arc::new(Inner {
                addr,
                shared,
                serving: Mutex::new(Some(serving)),
            }),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`; the port stays the same across
    /// [`go_down`](MockPartner::go_down) and [`come_back`](MockPartner::come_back).
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The submit endpoint: [`url`](MockPartner::url) + `/submit`.
    pub fn submit_url(&self) -> String {
        format!("{}/submit", self.url())
    }

    /// The status endpoint as an [`HttpJsonAdapter::status_url`](crate::HttpJsonAdapter::status_url)
    /// template: [`url`](MockPartner::url) + `/status/{ref}`.
    pub fn status_url(&self) -> String {
        format!("{}/status/{{ref}}", self.url())
    }

    /// Change the behaviour for requests arriving from now on (requests in
    /// progress keep theirs). Request counting for
    /// [`Behavior::Flaky`] and [`Behavior::RateLimited`] starts again at 1.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.inner.shared.set_behavior(behavior);
    }

    /// The current behaviour.
    pub fn behavior(&self) -> Behavior {
        self.inner.shared.behavior()
    }

    /// Stop accepting: close the listening socket and the idle keep-alive
    /// connections, so a new request, on a new or a pooled connection, fails
    /// instead of being answered (on a new connection: "connection refused").
    /// Requests already in progress are answered, on a connection that then
    /// closes. Returns once the socket and the idle connections are closed. Does
    /// nothing if the partner is already down.
    pub async fn go_down(&self) {
        let mut serving = self.inner.serving.lock().await;
        let Some(Serving { stop, closed }) = serving.take() else {
            return;
        };
        // axum's graceful shutdown: stop accepting and drop the listener, and
        // tell every connection to finish. hyper closes an idle HTTP/1
        // connection at once and one with a request in progress after
        // answering it. (Aborting the serve task instead would close the
        // listener but not the keep-alive connections: axum serves each
        // connection in a task of its own.)
        stop.cancel();
        // The sender lives in the listener: an error here means it is dropped.
        let _ = closed.await;
        // The connections react in their own tasks: wait for them, so that
        // nothing can still be answered on an idle connection once we return.
        self.inner
            .shared
            .idle_connections_closed(SHUTDOWN_PATIENCE)
            .await;
    }

    /// Serve again on the same port after [`go_down`](MockPartner::go_down),
    /// trying for up to 2 s if the port is briefly in use. Everything the
    /// partner remembers (keys, stored answers, counters) is kept. Does nothing
    /// if the partner is up.
    pub async fn come_back(&self) -> io::Result<()> {
        let mut serving = self.inner.serving.lock().await;
        if serving.is_none() {
            let listener = bind_patiently(self.inner.addr, REBIND_PATIENCE).await?;
            *serving = Some(serve(listener, &self.inner.shared));
        }
        Ok(())
    }

    /// Where [`Behavior::CallbackLater`] posts results (the host's webhook);
    /// `None` sends none.
    pub fn set_callback_url(&self, url: Option<String>) {
        self.inner.shared.set_callback_url(url);
    }

    /// Sign callbacks with `signer` from now on (`None`, the default: send
    /// them unsigned). A signed delivery carries the
    /// [Standard Webhooks](https://www.standardwebhooks.com) headers:
    /// `webhook-id` (the body's `event_id`, or a fresh `msg_<uuid>` for a body
    /// without one), `webhook-timestamp` (Unix seconds when it is sent) and
    /// `webhook-signature` ([`StandardWebhooks::sign`] of the exact body bytes
    /// sent). Read when each delivery is sent.
    ///
    /// ```
    /// use liaison::callback::StandardWebhooks;
    /// use liaison::testing::MockPartner;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let partner = MockPartner::start().await?;
    /// // The host verifies with the same secret.
    /// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    /// partner.set_callback_signing(Some(StandardWebhooks::new(secret)?));
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_callback_signing(&self, signer: Option<StandardWebhooks>) {
        self.inner.shared.set_callback_signer(signer);
    }

    /// Every callback POST made to the host and finished (answered or not),
    /// in the order they were started; a POST still waiting for the host's
    /// answer is not listed yet. As many as
    /// [`MockStats::callbacks_sent`], of which those not answered 2xx are
    /// [`MockStats::callbacks_failed`].
    pub fn callback_log(&self) -> Vec<SentCallback> {
        self.inner.shared.callback_log()
    }

    /// The counters, as of now.
    pub fn stats(&self) -> MockStats {
        self.inner.shared.stats()
    }

    /// Every request that reached the handler and was answered, in arrival
    /// order. A request abandoned by its client before its answer is not
    /// listed (it is counted in [`MockStats::requests`]).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.inner.shared.received()
    }

    /// The effects the partner performed, in the order they happened.
    pub fn side_effects(&self) -> Vec<SideEffect> {
        self.inner.shared.side_effects()
    }

    /// Zero the counters (`max_concurrent` restarts from the requests in
    /// progress now) and clear [`received`](MockPartner::received),
    /// [`side_effects`](MockPartner::side_effects) and
    /// [`callback_log`](MockPartner::callback_log). The partner's memory of
    /// keys (stored answers, keys in progress), its reference numbering, its
    /// behaviour and its callback URL and signing are kept.
    pub fn reset_stats(&self) {
        self.inner.shared.reset_stats();
    }
}

/// Serve the partner on `listener` until the returned token is cancelled.
fn serve(listener: TcpListener, shared: &Arc<Shared>) -> Serving {
    let (listener, closed) = TrackedListener::new(listener, Arc::clone(shared));
    let stop = CancellationToken::new();
    let server = axum::serve(listener, router(Arc::clone(shared)))
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    // Never fails; ends once the last connection is closed after `stop`.
    tokio::spawn(async move {
        let _ = server.await;
    });
    Serving { stop, closed }
}
