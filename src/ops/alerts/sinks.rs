//! Where alerts go.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;

use crate::callback::StandardWebhooks;
use crate::error::{Error, Result};
use crate::model::alert::{Alert, AlertEvent};

/// A sink could not deliver a notification.
#[derive(Debug, thiserror::Error)]
#[error("alert sink {sink} failed: {reason}")]
#[non_exhaustive]
pub struct SinkError {
    /// The sink.
    pub sink: &'static str,
    /// What went wrong.
    pub reason: String,
}

impl SinkError {
    /// `sink` could not deliver, because of `reason`.
    pub fn new(sink: &'static str, reason: impl Into<String>) -> Self {
        SinkError {
            sink,
            reason: reason.into(),
        }
    }
}

/// Receives alert notifications. Called off the dispatch path with a
/// timeout, so a slow or failing sink never holds up work.
#[async_trait]
pub trait AlertSink: Send + Sync + fmt::Debug {
    /// Deliver one notification.
    async fn notify(&self, event: AlertEvent, alert: &Alert) -> Result<(), SinkError>;

    /// A short name for logs.
    fn name(&self) -> &'static str;
}

/// Logs alerts with `tracing` (warn when opened or re-notified, info when resolved).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait]
impl AlertSink for TracingSink {
    async fn notify(&self, event: AlertEvent, alert: &Alert) -> Result<(), SinkError> {
        match event {
            AlertEvent::Resolved => tracing::info!(
                alert_id = %alert.id, partner = %alert.partner, class = alert.class.as_str(),
                owner = %alert.owner.name, "alert resolved"
            ),
            _ => tracing::warn!(
                alert_id = %alert.id, partner = %alert.partner, class = alert.class.as_str(),
                owner = %alert.owner.name, contact = %alert.owner.contact, expected = alert.expected,
                event = event.as_str(), details = ?alert.details, "alert"
            ),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "tracing"
    }
}

/// Hands alerts to the host through a channel.
///
/// ```
/// use liaison::ops::alerts::ChannelSink;
///
/// let (sink, mut receiver) = ChannelSink::new(64);
/// # drop((sink, receiver.try_recv()));
/// ```
#[derive(Debug, Clone)]
pub struct ChannelSink {
    sender: mpsc::Sender<(AlertEvent, Alert)>,
}

impl ChannelSink {
    /// A sink and the receiver the host reads from; when the buffer is full
    /// the notification fails rather than waits.
    pub fn new(buffer: usize) -> (Self, mpsc::Receiver<(AlertEvent, Alert)>) {
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        (ChannelSink { sender }, receiver)
    }
}

#[async_trait]
impl AlertSink for ChannelSink {
    async fn notify(&self, event: AlertEvent, alert: &Alert) -> Result<(), SinkError> {
        self.sender
            .try_send((event, alert.clone()))
            .map_err(|e| SinkError {
                sink: "channel",
                reason: e.to_string(),
            })
    }

    fn name(&self) -> &'static str {
        "channel"
    }
}

/// POSTs alerts as JSON to a URL, signed Standard-Webhooks style
/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`). One try per
/// call: the engine retries a failed notification with backoff and journals
/// each try ([`crate::engine::AlertSettings::sink_attempts`]); every try of
/// one notification carries the same `webhook-id`.
#[derive(Clone)]
pub struct WebhookSink {
    url: reqwest::Url,
    signer: StandardWebhooks,
    client: reqwest::Client,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path of a chat webhook's URL is its secret: scheme, host and
        // port only.
        f.debug_struct("WebhookSink")
            .field("url", &crate::http_adapter::url_origin(&self.url))
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Post to `url`, signing with `secret` (`whsec_…`). The URL must be
    /// `https://`; plain `http://` is refused (`InvalidInput`) unless allowed
    /// for a loopback host with
    /// [`WebhookSinkBuilder::allow_plain_http_on_loopback`].
    pub fn new(url: &str, secret: &str) -> Result<Self> {
        Self::builder(url, secret).build()
    }

    /// A sink to configure before [`WebhookSinkBuilder::build`].
    pub fn builder(url: &str, secret: &str) -> WebhookSinkBuilder {
        WebhookSinkBuilder {
            url: url.to_owned(),
            secret: secret.to_owned(),
            plain_http_on_loopback: false,
        }
    }
}

/// Builds a [`WebhookSink`] (see [`WebhookSink::builder`]).
#[derive(Clone)]
#[must_use]
pub struct WebhookSinkBuilder {
    url: String,
    secret: String,
    plain_http_on_loopback: bool,
}

impl fmt::Debug for WebhookSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSinkBuilder")
            .field("plain_http_on_loopback", &self.plain_http_on_loopback)
            .finish_non_exhaustive()
    }
}

impl WebhookSinkBuilder {
    /// Accept a plain `http://` URL when its host is a loopback address
    /// (`127.0.0.0/8`, `::1`) or `localhost`: a relay on the same machine,
    /// or a test. Any other host still needs `https://`.
    pub fn allow_plain_http_on_loopback(mut self) -> Self {
        self.plain_http_on_loopback = true;
        self
    }

    /// The sink, or `InvalidInput` for a URL that is not `https://` (nor
    /// allowed plain `http://` on loopback) or a bad secret.
    pub fn build(self) -> Result<WebhookSink> {
        Ok(WebhookSink {
            url: checked_url(&self.url, self.plain_http_on_loopback)?,
            signer: StandardWebhooks::new(&self.secret)?,
            client: sink_client()?,
        })
    }
}

/// A sink's URL: `https://`, or plain `http://` to a loopback host when
/// allowed; `InvalidInput` otherwise.
pub(super) fn checked_url(url: &str, plain_http_on_loopback: bool) -> Result<reqwest::Url> {
    let url = reqwest::Url::parse(url).map_err(|e| Error::invalid("url", e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if plain_http_on_loopback && is_loopback(&url) => {}
        "http" if plain_http_on_loopback => {
            return Err(Error::invalid(
                "url",
                "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https",
            ));
        }
        "http" => {
            return Err(Error::invalid(
                "url",
                "plain http is refused: alerts would travel unencrypted; use https \
                 (or allow_plain_http_on_loopback() for a loopback host)",
            ));
        }
        _ => {
            return Err(Error::invalid(
                "url",
                "only https (and http on loopback) are supported",
            ));
        }
    }
    Ok(url)
}

/// The HTTP client of the sinks that post: a 10 s timeout, no redirects
/// (a redirect could carry an alert somewhere else).
pub(super) fn sink_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::invalid("client", e.to_string()))
}

/// The URL's host is a loopback address or `localhost`.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser normalized the host: `[::1]`, `127.0.0.1`, lowercase names.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.trim_end_matches('.') == "localhost",
    }
}

#[async_trait]
impl AlertSink for WebhookSink {
    async fn notify(&self, event: AlertEvent, alert: &Alert) -> Result<(), SinkError> {
        let body =
            json!({ "type": format!("alert.{}", event.as_str()), "alert": alert }).to_string();
        // The same id for every try of one notification (the count moves
        // only once a round is delivered), so a receiver can deduplicate.
        let msg_id = format!(
            "msg_{}_{}_{}",
            alert.id,
            event.as_str(),
            alert.notify_count + 1
        );
        let timestamp = chrono::Utc::now().timestamp();
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                self.signer.sign(&msg_id, timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SinkError::new(
                "webhook",
                format!("the webhook answered HTTP {}", r.status().as_u16()),
            )),
            // Never the URL: a webhook's path can be its secret.
            Err(e) => Err(SinkError::new("webhook", e.without_url().to_string())),
        }
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_webhook_url_as_scheme_host_and_port_only() {
        for url in [
            "https://u:p@h/services/SECRET?k=v",
            "https://u@h:8443/services/SECRET#k=v",
        ] {
            let sink = WebhookSink::new(url, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
            for shown in [format!("{sink:?}"), format!("{sink:#?}")] {
                for secret in ["SECRET", "u:p", "u@", "k=v", "services", "whsec_"] {
                    assert!(!shown.contains(secret), "{secret} in {shown}");
                }
                assert!(shown.contains("https://h"), "{shown}");
            }
        }
    }
}

#[cfg(test)]
mod webhook_url_tests {
    use super::WebhookSink;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn plain_http_is_refused_unless_allowed_on_loopback() {
        assert!(WebhookSink::new("https://alerts.example/hook", SECRET).is_ok());
        for url in [
            "http://alerts.example/hook",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
        ] {
            let refused = WebhookSink::new(url, SECRET).unwrap_err();
            assert!(refused.is_invalid_input(), "{url}: {refused:?}");
        }
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://127.9.8.7/hook",
            "http://[::1]:9000/hook",
            "http://localhost:9000/hook",
            "http://LOCALHOST./hook",
            "https://alerts.example/hook",
        ] {
            let sink = WebhookSink::builder(url, SECRET).allow_plain_http_on_loopback();
            assert!(sink.build().is_ok(), "{url}");
        }
        for url in [
            "http://alerts.example/hook",
            "http://10.0.0.1/hook",
            "http://[::2]/hook",
            "http://localhost.evil.example/hook",
            "http://127.0.0.1.nip.io/hook",
            "ftp://127.0.0.1/hook",
        ] {
            let sink = WebhookSink::builder(url, SECRET).allow_plain_http_on_loopback();
            let refused = sink.build().unwrap_err();
            assert!(refused.is_invalid_input(), "{url}: {refused:?}");
        }
    }
}
