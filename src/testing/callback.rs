//! Callbacks from the mock partner to the host's webhook.
//!
//! A [`CallbackPlan`] is decided when the effect happens and carried out by a
//! spawned task. Every way a partner's callbacks can misbehave is a plan (see
//! [`CallbackMode`]): never sending one is an empty plan, a duplicate is the
//! same delivery twice, a conflicting result is a second delivery with another
//! body, a malformed one is a delivery whose body is not the documented JSON,
//! a wrong signature is a delivery signed with another secret, and an early
//! one is a plan the handler waits for before answering the submit. New
//! behaviours build plans; the sending code stays as it is.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use uuid::Uuid;

use super::behavior::{CallbackMode, MockOutcome};
use super::records::SentCallback;
use crate::callback::StandardWebhooks;

/// What delivering callbacks needs of the mock partner's state: where to
/// send them, how to sign them, and a log of what was sent.
pub(crate) trait CallbackHost: Send + Sync + 'static {
    /// The host's callback URL, if a test has set one.
    fn callback_url(&self) -> Option<String>;
    /// The signer, when callbacks are signed.
    fn callback_signer(&self) -> Option<StandardWebhooks>;
    /// The HTTP client callbacks go out on.
    fn callback_client(&self) -> &reqwest::Client;
    /// Note that a delivery starts; its place in the order of deliveries.
    fn callback_started(&self) -> u64;
    /// Record a delivery that was made.
    fn record_callback(&self, order: u64, sent: SentCallback);
}

/// Longest wait for the host's answer to an early callback: the submitter
/// waits for it.
const EARLY_CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason a [`CallbackMode::Conflicting`] second delivery gives when it
/// reports a failure.
const CONFLICTING_REASON: &str = "conflicting report";

/// The callbacks to send about one effect.
#[derive(Debug, Clone)]
pub(crate) struct CallbackPlan {
    /// Wait this long after the effect before the first delivery.
    delay: Duration,
    /// Sent one after the other, each one attempt.
    deliveries: Vec<Delivery>,
    /// Sent before the submit is answered ([`CallbackMode::Early`],
    /// [`CallbackMode::EarlyDuplicate`]).
    early: bool,
}

/// One POST to the callback URL.
#[derive(Debug, Clone)]
struct Delivery {
    /// The `webhook-id` when signed: the body's `event_id`, or a fresh
    /// `msg_<uuid>` for a body without one.
    id: String,
    body: Vec<u8>,
    signing: Signing,
}

/// Which secret signs a delivery.
#[derive(Debug, Clone)]
enum Signing {
    /// The partner's signer, if one is set when the delivery is sent.
    Configured,
    /// This one, whatever is configured.
    Forged(StandardWebhooks),
}

impl CallbackPlan {
    /// The deliveries `mode` makes of the result `outcome` about `reference`.
    pub(crate) fn new(
        delay: Duration,
        reference: &str,
        idempotency_key: &str,
        outcome: &MockOutcome,
        mode: &CallbackMode,
    ) -> CallbackPlan {
        let event_id = Uuid::new_v4().to_string();
        let result = |outcome: &MockOutcome| Delivery {
            id: event_id.clone(),
            body: result_body(&event_id, reference, idempotency_key, outcome),
            signing: Signing::Configured,
        };
        let deliveries = match mode {
            CallbackMode::Normal | CallbackMode::Early => vec![result(outcome)],
            CallbackMode::Never => Vec::new(),
            CallbackMode::Malformed => vec![Delivery {
                id: format!("msg_{}", Uuid::new_v4().simple()),
                body: malformed_body(reference, outcome),
                signing: Signing::Configured,
            }],
            CallbackMode::Duplicate | CallbackMode::EarlyDuplicate => vec![result(outcome); 2],
            CallbackMode::Conflicting => vec![result(outcome), result(&opposite(outcome))],
            CallbackMode::Revised(revised) => {
                // A new event: its own id.
                let event_id = Uuid::new_v4().to_string();
                let second = Delivery {
                    id: event_id.clone(),
                    body: result_body(&event_id, reference, idempotency_key, revised),
                    signing: Signing::Configured,
                };
                vec![result(outcome), second]
            }
            CallbackMode::WrongSignature => vec![Delivery {
                signing: Signing::Forged(unknown_signer()),
                ..result(outcome)
            }],
        };
        CallbackPlan {
            delay,
            deliveries,
            early: matches!(mode, CallbackMode::Early | CallbackMode::EarlyDuplicate),
        }
    }

    /// Carry the plan out in a task of its own; an early plan is waited for.
    ///
    /// Even an early plan runs in its own task, so a submitter that gives up
    /// while the callback is on its way does not cut the callback short.
    pub(crate) async fn start(self, shared: Arc<dyn CallbackHost>) {
        if self.deliveries.is_empty() {
            return;
        }
        let early = self.early;
        let task = tokio::spawn(self.run(shared));
        if early {
            // A panic in the task is not the submitter's concern.
            let _ = task.await;
        }
    }

    async fn run(self, shared: Arc<dyn CallbackHost>) {
        tokio::time::sleep(self.delay).await;
        let timeout = self.early.then_some(EARLY_CALLBACK_TIMEOUT);
        for delivery in self.deliveries {
            // Read when due, so a test may set the URL after the submit.
            let Some(url) = shared.callback_url() else {
                return;
            };
            delivery.send(shared.as_ref(), url, timeout).await;
        }
    }
}

impl Delivery {
    /// POST once (signed if there is a signer), and log the attempt.
    async fn send(self, shared: &dyn CallbackHost, url: String, timeout: Option<Duration>) {
        let order = shared.callback_started();
        let at = Utc::now();
        let mut headers = vec![(
            CONTENT_TYPE.as_str().to_owned(),
            "application/json".to_owned(),
        )];
        let signer = match self.signing {
            Signing::Configured => shared.callback_signer(),
            Signing::Forged(signer) => Some(signer),
        };
        if let Some(signer) = signer {
            let timestamp = at.timestamp();
            let signature = signer.sign(&self.id, timestamp, &self.body);
            headers.extend([
                (StandardWebhooks::ID_HEADER.to_owned(), self.id),
                (
                    StandardWebhooks::TIMESTAMP_HEADER.to_owned(),
                    timestamp.to_string(),
                ),
                (StandardWebhooks::SIGNATURE_HEADER.to_owned(), signature),
            ]);
        }

        let mut request = shared.callback_client().post(url).body(self.body.clone());
        for (name, value) in &headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let status = request
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16());
        let sent = SentCallback {
            body: self.body,
            headers,
            status,
            at,
        };
        shared.record_callback(order, sent);
    }
}

/// The result a [`CallbackMode::Conflicting`] second delivery reports: the
/// opposite status, without the fields.
fn opposite(outcome: &MockOutcome) -> MockOutcome {
    if outcome.is_success() {
        MockOutcome::failed(CONFLICTING_REASON)
    } else {
        MockOutcome::Succeeded
    }
}

/// The result the partner holds last for a plan: what its status endpoint
/// answers once the result is known.
pub(crate) fn final_outcome(outcome: &MockOutcome, mode: &CallbackMode) -> MockOutcome {
    match mode {
        CallbackMode::Conflicting => opposite(outcome),
        CallbackMode::Revised(revised) => revised.clone(),
        _ => outcome.clone(),
    }
}

/// The documented result callback:
/// `{"event_id", "reference", "idempotency_key", "status", "reason"}`, plus
/// the outcome's fields.
fn result_body(
    event_id: &str,
    reference: &str,
    idempotency_key: &str,
    outcome: &MockOutcome,
) -> Vec<u8> {
    let mut body = outcome.fields();
    body.extend([
        ("event_id".to_owned(), json!(event_id)),
        ("reference".to_owned(), json!(reference)),
        ("idempotency_key".to_owned(), json!(idempotency_key)),
        ("status".to_owned(), json!(outcome.status())),
        ("reason".to_owned(), json!(outcome.reason())),
    ]);
    Value::Object(body).to_string().into_bytes()
}

/// A body no JSON parser accepts: `<result reference="MP-1" status="succeeded"/>`.
fn malformed_body(reference: &str, outcome: &MockOutcome) -> Vec<u8> {
    let status = outcome.status();
    format!(r#"<result reference="{reference}" status="{status}"/>"#).into_bytes()
}

/// A signer with a fresh random secret, which no host is configured with.
fn unknown_signer() -> StandardWebhooks {
    let secret = format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()));
    StandardWebhooks::new(&secret).expect("32 random bytes in padded base64 are a valid secret")
}
