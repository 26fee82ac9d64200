//! A sink for chat tools' incoming webhooks.

use std::fmt;

use async_trait::async_trait;
use serde_json::json;

use super::sinks::{AlertSink, SinkError, checked_url, sink_client};
use crate::error::Result;
use crate::model::alert::{Alert, AlertEvent};

/// Posts alerts to a Slack-compatible incoming webhook as `{"text": "..."}`,
/// the JSON shape Slack, Mattermost, Rocket.Chat and Teams workflows accept.
///
/// The message says in plain words what happened: the event (opened, a
/// reminder, resolved), the partner, the class of problem, the owner and how
/// to reach them, the details, the runbook link and the times. It carries
/// no payload: alert details are counts and states, never submission data.
///
/// The webhook URL is a secret (whoever has it can post to the channel): it
/// never appears in logs, errors or `Debug` output (scheme, host and port
/// only). One try per notification; the engine retries failures with
/// backoff and journals each try
/// ([`crate::engine::AlertSettings::sink_attempts`]).
///
/// ```
/// use liaison::ops::alerts::ChatWebhookSink;
///
/// let sink = ChatWebhookSink::new("https://hooks.slack.com/services/T000/B000/XXXX")?;
/// assert!(!format!("{sink:?}").contains("XXXX"));
/// // Plain http is refused, except to a loopback host when allowed.
/// assert!(ChatWebhookSink::new("http://chat.example/hook").is_err());
/// # Ok::<(), liaison::Error>(())
/// ```
#[derive(Clone)]
pub struct ChatWebhookSink {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl fmt::Debug for ChatWebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatWebhookSink")
            .field("url", &crate::http_adapter::url_origin(&self.url))
            .finish_non_exhaustive()
    }
}

impl ChatWebhookSink {
    /// Post to `url`, which must be `https://` (`InvalidInput` otherwise;
    /// see [`ChatWebhookSinkBuilder::allow_plain_http_on_loopback`]).
    pub fn new(url: &str) -> Result<Self> {
        Self::builder(url).build()
    }

    /// A sink to configure before [`ChatWebhookSinkBuilder::build`].
    pub fn builder(url: &str) -> ChatWebhookSinkBuilder {
        ChatWebhookSinkBuilder {
            url: url.to_owned(),
            plain_http_on_loopback: false,
        }
    }
}

/// Builds a [`ChatWebhookSink`] (see [`ChatWebhookSink::builder`]).
#[derive(Clone)]
#[must_use]
pub struct ChatWebhookSinkBuilder {
    url: String,
    plain_http_on_loopback: bool,
}

impl fmt::Debug for ChatWebhookSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatWebhookSinkBuilder")
            .field("plain_http_on_loopback", &self.plain_http_on_loopback)
            .finish_non_exhaustive()
    }
}

impl ChatWebhookSinkBuilder {
    /// Accept a plain `http://` URL when its host is a loopback address
    /// (`127.0.0.0/8`, `::1`) or `localhost`: a relay on the same machine,
    /// or a test. Any other host still needs `https://`.
    pub fn allow_plain_http_on_loopback(mut self) -> Self {
        self.plain_http_on_loopback = true;
        self
    }

    /// The sink, or `InvalidInput` for a URL that is not `https://` (nor
    /// allowed plain `http://` on loopback).
    pub fn build(self) -> Result<ChatWebhookSink> {
        Ok(ChatWebhookSink {
            url: checked_url(&self.url, self.plain_http_on_loopback)?,
            client: sink_client()?,
        })
    }
}

/// `&`, `<` and `>` as Slack's message format needs them, so nothing in an
/// alert turns into a link or a mention.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The message, in plain words.
pub(crate) fn message(event: AlertEvent, alert: &Alert) -> String {
    let class = alert.class.as_str().replace('_', " ");
    let headline = match event {
        AlertEvent::Opened => "Alert opened",
        AlertEvent::Renotified => "Reminder: alert still open and not acknowledged",
        AlertEvent::Resolved => "Alert resolved",
    };
    let mut lines = vec![format!(
        "{headline}: {} at partner {}",
        escape(&class),
        escape(&alert.partner)
    )];
    lines.push(format!(
        "Owner: {} ({})",
        escape(&alert.owner.name),
        escape(&alert.owner.contact)
    ));
    if !alert.details.is_empty() {
        lines.push(format!("Details: {}", escape(&alert.details)));
    }
    if alert.expected {
        lines.push("Expected: the partner is paused for announced maintenance".into());
    }
    let mut times = format!("Opened {}", when(alert.opened_at));
    if let Some(at) = alert.resolved_at {
        times.push_str(&format!(", resolved {}", when(at)));
    }
    lines.push(times);
    if let Some(runbook) = &alert.owner.runbook {
        lines.push(format!("Runbook: {}", escape(runbook)));
    }
    lines.push(format!("Alert id: {}", alert.id));
    lines.join("\n")
}

#[async_trait]
impl AlertSink for ChatWebhookSink {
    async fn notify(&self, event: AlertEvent, alert: &Alert) -> Result<(), SinkError> {
        let body = json!({ "text": message(event, alert) }).to_string();
        let sent = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(SinkError::new(
                "chat",
                format!("the chat webhook answered HTTP {}", r.status().as_u16()),
            )),
            // Never the URL: it is the secret.
            Err(e) => Err(SinkError::new("chat", e.without_url().to_string())),
        }
    }

    fn name(&self) -> &'static str {
        "chat"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alert::{AlertId, Owner, ProblemClass};

    #[test]
    fn the_message_says_it_in_plain_words_and_escapes() {
        let alert = Alert {
            id: AlertId::new(),
            partner: "clearinghouse".into(),
            class: ProblemClass::PartnerUnavailable,
            owner: Owner::new("revenue cycle", "<!channel> #rev")
                .runbook("https://runbooks.example/ch"),
            opened_at: chrono::Utc::now(),
            last_notified_at: None,
            notify_count: 0,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_at: None,
            expected: false,
            details: "its circuit is open".into(),
        };
        let text = message(AlertEvent::Opened, &alert);
        assert!(text.starts_with("Alert opened: partner unavailable at partner clearinghouse"));
        assert!(text.contains("Owner: revenue cycle (&lt;!channel&gt; #rev)"));
        assert!(text.contains("Details: its circuit is open"));
        assert!(text.contains("Runbook: https://runbooks.example/ch"));
        let resolved = Alert {
            resolved_at: Some(chrono::Utc::now()),
            ..alert
        };
        assert!(message(AlertEvent::Resolved, &resolved).contains(", resolved "));
    }

    #[test]
    fn debug_never_shows_the_webhook_path() {
        let sink = ChatWebhookSink::new("https://hooks.example/services/SECRET?k=v").unwrap();
        let shown = format!("{sink:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("k=v"),
            "{shown}"
        );
    }
}
