//! Callbacks from the mock partner to the host's webhook.
//!
//! A [`CallbackPlan`] is decided when the effect happens and carried out by a
//! spawned task, so the answer to the submit request is never held up. Every
//! way a partner's callbacks can misbehave is a plan: never sending one is an
//! empty plan, a duplicate is the same delivery twice, a conflicting result is
//! a second delivery with another body, a malformed one is a delivery whose
//! body is not the documented JSON, a wrong signature is a header on the
//! delivery. New behaviours build plans; the sending code stays as it is.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde_json::json;

use super::behavior::MockOutcome;
use super::state::Shared;

/// The callbacks to send about one effect.
#[derive(Debug, Clone)]
pub(crate) struct CallbackPlan {
    /// Wait this long after the effect before the first delivery.
    delay: Duration,
    /// Sent one after the other, each one attempt.
    deliveries: Vec<Delivery>,
}

/// One POST to the callback URL.
#[derive(Debug, Clone)]
struct Delivery {
    body: Vec<u8>,
}

impl CallbackPlan {
    /// The documented result callback, once:
    /// `{"event_id", "reference", "idempotency_key", "status", "reason"}`.
    pub(crate) fn result(
        delay: Duration,
        reference: &str,
        idempotency_key: &str,
        outcome: &MockOutcome,
    ) -> CallbackPlan {
        let (status, reason) = match outcome {
            MockOutcome::Succeeded => ("succeeded", None),
            MockOutcome::Failed { reason } => ("failed", Some(reason.as_str())),
        };
        let body = json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "reference": reference,
            "idempotency_key": idempotency_key,
            "status": status,
            "reason": reason,
        });
        CallbackPlan {
            delay,
            deliveries: vec![Delivery {
                body: body.to_string().into_bytes(),
            }],
        }
    }

    /// Carry the plan out in the background.
    pub(crate) fn spawn(self, shared: Arc<Shared>) {
        tokio::spawn(self.run(shared));
    }

    async fn run(self, shared: Arc<Shared>) {
        tokio::time::sleep(self.delay).await;
        for delivery in self.deliveries {
            // Read when due, so a test may set the URL after the submit.
            let Some(url) = shared.callback_url() else {
                return;
            };
            let sent = shared
                .callback_client
                .post(url)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(delivery.body)
                .send()
                .await;
            let delivered = matches!(&sent, Ok(response) if response.status().is_success());
            shared.record_callback(delivered);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Json;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use crate::testing::tests::{bounded, client, eventually, submit};
    use crate::testing::{Behavior, MockOutcome, MockPartner};

    /// A webhook answering `status`, and what it received.
    async fn webhook(status: StatusCode) -> (String, mpsc::UnboundedReceiver<(HeaderMap, Value)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hook",
            post(
                move |headers: HeaderMap, Json(body): Json<Value>| async move {
                    let _ = tx.send((headers, body));
                    status
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    #[tokio::test]
    async fn callback_later_reports_the_result_to_the_webhook() {
        let (url, mut calls) = webhook(StatusCode::NO_CONTENT).await;
        let partner = MockPartner::start_with(Behavior::callback_later(
            Duration::from_millis(50),
            MockOutcome::Succeeded,
        ))
        .await
        .unwrap();
        partner.set_callback_url(Some(url));
        let client = client();

        let answer = submit(&client, &partner, Some("k-9"), &json!({"n": 9})).await;
        assert_eq!(answer, (202, json!({"reference": "MP-1"})));
        let (headers, body) = bounded("callback", calls.recv()).await.unwrap();
        assert_eq!(headers["content-type"], "application/json");
        let event_id = body["event_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(event_id).is_ok(), "{event_id}");
        assert_eq!(
            body,
            json!({
                "event_id": event_id,
                "reference": "MP-1",
                "idempotency_key": "k-9",
                "status": "succeeded",
                "reason": null,
            })
        );
        eventually("counted", || partner.stats().callbacks_sent == 1).await;
        assert_eq!(partner.stats().callbacks_failed, 0);

        // A replay is not a new effect and sends no second callback.
        let replay = submit(&client, &partner, Some("k-9"), &json!({"n": 9})).await;
        assert_eq!(replay, answer);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(calls.try_recv().is_err());
        assert_eq!(partner.stats().callbacks_sent, 1);
    }

    #[tokio::test]
    async fn callbacks_the_host_refuses_are_counted_as_failed() {
        let (url, mut calls) = webhook(StatusCode::INTERNAL_SERVER_ERROR).await;
        let partner = MockPartner::start_with(Behavior::callback_later(
            Duration::ZERO,
            MockOutcome::failed("card declined"),
        ))
        .await
        .unwrap();
        partner.set_callback_url(Some(url));
        let client = client();

        assert_eq!(
            submit(&client, &partner, Some("k"), &json!({})).await.0,
            202
        );
        let (_, body) = bounded("callback", calls.recv()).await.unwrap();
        assert_eq!(body["status"], "failed");
        assert_eq!(body["reason"], "card declined");
        eventually("counted", || partner.stats().callbacks_sent == 1).await;
        assert_eq!(partner.stats().callbacks_failed, 1);

        // Nobody listening at all: also a failed callback.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        partner.set_callback_url(Some(nobody));
        assert_eq!(
            submit(&client, &partner, Some("k2"), &json!({})).await.0,
            202
        );
        eventually("counted", || partner.stats().callbacks_sent == 2).await;
        assert_eq!(partner.stats().callbacks_failed, 2);
    }
}
