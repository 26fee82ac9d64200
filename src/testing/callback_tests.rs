//! Callbacks over real HTTP: a small axum webhook records what the mock
//! partner sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::tests::{bounded, client, eventually, submit};
use super::{Behavior, CallbackMode, MockOutcome, MockPartner};
use crate::callback::{InboundCallback, SignatureError, SignatureVerifier, StandardWebhooks};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the webhook received.
#[derive(Debug)]
pub(super) struct Call {
    /// Taken from [`Webhook::sequence`] when the request arrived.
    seq: u64,
    headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Call {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub(super) fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }

    fn inbound(&self) -> InboundCallback {
        InboundCallback::new("mock", self.headers.clone(), self.body.to_vec())
    }
}

/// A webhook answering `status` to every POST, and what it received.
pub(super) struct Webhook {
    pub(super) url: String,
    calls: mpsc::UnboundedReceiver<Call>,
    /// Shared with the test, to order the webhook's calls and the test's
    /// own observations.
    sequence: Arc<AtomicU64>,
}

impl Webhook {
    pub(super) async fn start(status: StatusCode) -> Webhook {
        let (tx, calls) = mpsc::unbounded_channel();
        let sequence = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sequence);
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| async move {
                // Recorded before answering: the partner sees the answer
                // only after this.
                let seq = counter.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Call { seq, headers, body });
                status
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Webhook {
            url,
            calls,
            sequence,
        }
    }

    pub(super) async fn next(&mut self) -> Call {
        bounded("callback", self.calls.recv()).await.unwrap()
    }

    /// Nothing more arrives within `wait`.
    pub(super) async fn nothing_within(&mut self, wait: Duration) {
        tokio::time::sleep(wait).await;
        if let Ok(call) = self.calls.try_recv() {
            panic!("unexpected callback: {call:?}");
        }
    }
}

/// A partner calling back to `webhook` at once, the way `mode` says.
async fn partner(webhook: &Webhook, outcome: MockOutcome, mode: CallbackMode) -> MockPartner {
    let behavior = Behavior::callback_later_with(Duration::ZERO, outcome, mode);
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    partner
}

fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).unwrap()
}

/// `callback_log` and the counters agree once `count` callbacks are done.
async fn logged(partner: &MockPartner, count: u64) {
    eventually("callbacks logged", || {
        partner.stats().callbacks_sent == count
    })
    .await;
    let log = partner.callback_log();
    assert_eq!(log.len() as u64, count);
    let failed = log.iter().filter(|sent| !sent.delivered()).count();
    assert_eq!(partner.stats().callbacks_failed, failed as u64);
}

#[tokio::test]
async fn callback_later_reports_the_result_to_the_webhook() {
    let mut webhook = Webhook::start(StatusCode::NO_CONTENT).await;
    let partner = MockPartner::start_with(Behavior::callback_later(
        Duration::from_millis(50),
        MockOutcome::Succeeded,
    ))
    .await
    .unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    let client = client();

    let answer = submit(&client, &partner, Some("k-9"), &json!({"n": 9})).await;
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));
    let call = webhook.next().await;
    assert_eq!(call.header("content-type"), "application/json");
    // Unsigned by default.
    assert!(!call.headers.contains_key("webhook-signature"));
    let body = call.json();
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
    logged(&partner, 1).await;
    let sent = &partner.callback_log()[0];
    assert_eq!(sent.body, call.body);
    assert_eq!(sent.status, Some(204));
    assert_eq!(
        sent.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );

    // A replay is not a new effect and sends no second callback.
    let replay = submit(&client, &partner, Some("k-9"), &json!({"n": 9})).await;
    assert_eq!(replay, answer);
    webhook.nothing_within(Duration::from_millis(150)).await;
    assert_eq!(partner.stats().callbacks_sent, 1);
}

#[tokio::test]
async fn callbacks_the_host_refuses_are_counted_as_failed() {
    let mut webhook = Webhook::start(StatusCode::INTERNAL_SERVER_ERROR).await;
    let partner = partner(
        &webhook,
        MockOutcome::failed("card declined"),
        CallbackMode::Normal,
    )
    .await;
    let client = client();

    assert_eq!(
        submit(&client, &partner, Some("k"), &json!({})).await.0,
        202
    );
    let body = webhook.next().await.json();
    assert_eq!(body["status"], "failed");
    assert_eq!(body["reason"], "card declined");
    logged(&partner, 1).await;
    assert_eq!(partner.stats().callbacks_failed, 1);

    // Nobody listening at all: also a failed callback, and no retry.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nobody = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    partner.set_callback_url(Some(nobody));
    assert_eq!(
        submit(&client, &partner, Some("k2"), &json!({})).await.0,
        202
    );
    logged(&partner, 2).await;
    assert_eq!(partner.stats().callbacks_failed, 2);
    let statuses: Vec<_> = partner.callback_log().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [Some(500), None]);

    partner.reset_stats();
    assert!(partner.callback_log().is_empty());
}

#[tokio::test]
async fn never_accepts_and_does_not_call_back() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let partner = partner(&webhook, MockOutcome::Succeeded, CallbackMode::Never).await;
    let client = client();

    let answer = submit(&client, &partner, Some("k-1"), &json!({})).await;
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));
    // The bound: the 202 has arrived and 300 ms more have passed (a Normal
    // callback with this zero delay arrives within a few milliseconds).
    webhook.nothing_within(Duration::from_millis(300)).await;
    assert_eq!(partner.stats().callbacks_sent, 0);
    assert!(partner.callback_log().is_empty());
    assert_eq!(partner.stats().side_effects, 1);

    // The webhook is reachable: a Normal partner's callback does arrive.
    partner.set_behavior(Behavior::callback_later(
        Duration::ZERO,
        MockOutcome::Succeeded,
    ));
    submit(&client, &partner, Some("k-2"), &json!({})).await;
    assert_eq!(webhook.next().await.json()["idempotency_key"], "k-2");
}

#[tokio::test]
async fn malformed_sends_a_body_that_is_not_json() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let partner = partner(&webhook, MockOutcome::Succeeded, CallbackMode::Malformed).await;
    partner.set_callback_signing(Some(signer()));
    let client = client();

    submit(&client, &partner, Some("k"), &json!({})).await;
    let call = webhook.next().await;
    assert!(serde_json::from_slice::<Value>(&call.body).is_err());
    assert_eq!(
        call.body.as_ref(),
        br#"<result reference="MP-1" status="succeeded"/>"#
    );
    assert_eq!(call.header("content-type"), "application/json");
    // Still signed, with an id of its own since the body has no event id.
    assert!(call.header("webhook-id").starts_with("msg_"));
    assert_eq!(signer().verify(&call.inbound(), SystemTime::now()), Ok(()));
    logged(&partner, 1).await;
    webhook.nothing_within(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn duplicate_sends_the_same_delivery_twice() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let partner = partner(&webhook, MockOutcome::Succeeded, CallbackMode::Duplicate).await;
    partner.set_callback_signing(Some(signer()));
    let client = client();

    submit(&client, &partner, Some("k"), &json!({})).await;
    let first = webhook.next().await;
    let second = webhook.next().await;
    assert_eq!(first.body, second.body);
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    assert_eq!(first.header("webhook-id"), first.json()["event_id"]);
    assert!(first.seq < second.seq);
    // Each is signed when sent; both verify.
    for call in [&first, &second] {
        assert_eq!(signer().verify(&call.inbound(), SystemTime::now()), Ok(()));
    }
    logged(&partner, 2).await;
    let log = partner.callback_log();
    assert_eq!(log[0].body, log[1].body);
    assert!(log[0].at <= log[1].at);
    webhook.nothing_within(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn conflicting_reports_the_opposite_status_for_the_same_event() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let partner = partner(&webhook, MockOutcome::Succeeded, CallbackMode::Conflicting).await;
    partner.set_callback_signing(Some(signer()));
    let client = client();

    submit(&client, &partner, Some("k-1"), &json!({})).await;
    let (first, second) = (webhook.next().await, webhook.next().await);
    let (a, b) = (first.json(), second.json());
    assert_eq!(a["event_id"], b["event_id"]);
    assert_eq!(first.header("webhook-id"), second.header("webhook-id"));
    assert_eq!(
        (&a["status"], &a["reason"]),
        (&json!("succeeded"), &Value::Null)
    );
    assert_eq!(
        (&b["status"], &b["reason"]),
        (&json!("failed"), &json!("conflicting report"))
    );
    assert_eq!(
        (&b["reference"], &b["idempotency_key"]),
        (&json!("MP-1"), &json!("k-1"))
    );

    // And the other way round.
    partner.set_behavior(Behavior::callback_later_with(
        Duration::ZERO,
        MockOutcome::failed("card declined"),
        CallbackMode::Conflicting,
    ));
    submit(&client, &partner, Some("k-2"), &json!({})).await;
    let (a, b) = (webhook.next().await.json(), webhook.next().await.json());
    assert_eq!(a["event_id"], b["event_id"]);
    assert_eq!(
        (&a["status"], &a["reason"]),
        (&json!("failed"), &json!("card declined"))
    );
    assert_eq!(
        (&b["status"], &b["reason"]),
        (&json!("succeeded"), &Value::Null)
    );
    logged(&partner, 4).await;
}

#[tokio::test]
async fn signed_callbacks_verify_and_wrong_signatures_do_not() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let partner = partner(&webhook, MockOutcome::Succeeded, CallbackMode::Normal).await;
    partner.set_callback_signing(Some(signer()));
    let client = client();

    submit(&client, &partner, Some("normal"), &json!({})).await;
    let call = webhook.next().await;
    assert_eq!(call.header("webhook-id"), call.json()["event_id"]);
    let timestamp: i64 = call.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - chrono::Utc::now().timestamp()).abs() <= 5);
    assert_eq!(signer().verify(&call.inbound(), SystemTime::now()), Ok(()));

    partner.set_behavior(Behavior::callback_later_with(
        Duration::ZERO,
        MockOutcome::Succeeded,
        CallbackMode::WrongSignature,
    ));
    submit(&client, &partner, Some("wrong"), &json!({})).await;
    let call = webhook.next().await;
    assert_eq!(call.json()["idempotency_key"], "wrong");
    assert_eq!(
        signer().verify(&call.inbound(), SystemTime::now()),
        Err(SignatureError::NoMatch)
    );

    // Without signing configured, the headers are there and still wrong.
    partner.set_callback_signing(None);
    submit(&client, &partner, Some("unsigned"), &json!({})).await;
    let call = webhook.next().await;
    assert_eq!(call.header("webhook-id"), call.json()["event_id"]);
    assert_eq!(
        signer().verify(&call.inbound(), SystemTime::now()),
        Err(SignatureError::NoMatch)
    );

    logged(&partner, 3).await;
    let log = partner.callback_log();
    let signature = log[2].header("Webhook-Signature").unwrap();
    assert_eq!(signature, call.header("webhook-signature"));
}

#[tokio::test]
async fn early_callback_arrives_before_the_submit_is_answered() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    // A delay, so that a callback sent after the answer would lose the race
    // by far; the ordering itself does not depend on it.
    let behavior = Behavior::callback_later_with(
        Duration::from_millis(100),
        MockOutcome::Succeeded,
        CallbackMode::Early,
    );
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    let client = client();

    let answer = submit(&client, &partner, Some("k"), &json!({})).await;
    // The webhook took its number before answering, and the partner waits
    // for that answer before answering the submit.
    let answered = webhook.sequence.fetch_add(1, Ordering::SeqCst);
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));
    let call = bounded("callback", webhook.calls.recv()).await.unwrap();
    assert!(
        call.seq < answered,
        "callback {} answer {answered}",
        call.seq
    );
    assert_eq!(call.json()["reference"], "MP-1");
    // Logged before the answer, too.
    assert_eq!(partner.callback_log().len(), 1);
    assert_eq!(partner.stats().callbacks_sent, 1);
    webhook.nothing_within(Duration::from_millis(100)).await;
}
