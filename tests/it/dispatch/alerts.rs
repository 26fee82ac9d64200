//! Alerts: one per (partner, class), routed to its owner, re-notified,
//! resolved when the condition clears; a failing sink holds nothing up.

use std::time::Duration;

use async_trait::async_trait;
use liaison::engine::{AlertSettings, CircuitSettings, CircuitState, Liaison};
use liaison::ops::alerts::{
    Alert, AlertEvent, AlertSink, ChannelSink, Owner, Ownership, ProblemClass, SinkError,
};
use liaison::testing::{Behavior, MockPartner};
use liaison::{Actor, SubmissionState};

use super::{claim, count_in, eventually, partner, quick_settings};
use crate::support;

fn settings() -> AlertSettings {
    AlertSettings::default()
        .interval(Duration::from_secs(3600)) // evaluated by hand in these tests
        .window(Duration::from_secs(600))
        .renotify_every(Duration::from_millis(150))
        .sink_timeout(Duration::from_millis(500))
}

fn ownership() -> Ownership {
    Ownership::new(Owner::new("integrations", "#integrations")).route(
        ProblemClass::PartnerUnavailable,
        Owner::new("lab vendor desk", "vendor-desk@lab.example")
            .runbook("https://runbooks.example/lab-down"),
    )
}

fn drain(
    receiver: &mut tokio::sync::mpsc::Receiver<(AlertEvent, Alert)>,
) -> Vec<(AlertEvent, Alert)> {
    let mut got = Vec::new();
    while let Ok(item) = receiver.try_recv() {
        got.push(item);
    }
    got
}

async fn settle() {
    // Sinks run in their own tasks; give them a moment to deliver.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_one_alert_renotifies_and_resolves() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let (sink, mut events) = ChannelSink::new(100);
    let liaison = Liaison::builder(store.clone())
        .partner(
            partner("lab", &mock)
                .circuit(CircuitSettings::new(3, Duration::from_millis(400)).unwrap())
                .concurrency(1),
        )
        .settings(quick_settings())
        .ownership(ownership())
        .alert_sink(sink)
        .alert_settings(settings())
        .build()
        .unwrap();
    for i in 0..5 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    let handle = liaison.start();
    eventually("circuit open", Duration::from_secs(10), || async {
        liaison.circuit_state("lab") == Some(CircuitState::Open)
    })
    .await;

    for _ in 0..3 {
        liaison.evaluate_alerts().await.unwrap();
    }
    settle().await;
    let got = drain(&mut events);
    let opened: Vec<_> = got
        .iter()
        .filter(|(e, _)| *e == AlertEvent::Opened)
        .collect();
    assert_eq!(
        opened.len(),
        1,
        "one alert however often it is evaluated: {got:?}"
    );
    let alert = &opened[0].1;
    assert_eq!(alert.class, ProblemClass::PartnerUnavailable);
    assert_eq!(alert.owner.name, "lab vendor desk");
    assert_eq!(
        alert.owner.runbook.as_deref(),
        Some("https://runbooks.example/lab-down")
    );
    let open = liaison.alerts(true).await.unwrap();
    assert_eq!(
        open.iter()
            .filter(|a| a.class == ProblemClass::PartnerUnavailable)
            .count(),
        1
    );

    // Still open after the re-notify period: a reminder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    liaison.evaluate_alerts().await.unwrap();
    settle().await;
    let got = drain(&mut events);
    assert!(
        got.iter()
            .any(|(e, a)| *e == AlertEvent::Renotified && a.id == alert.id),
        "{got:?}"
    );

    // Acknowledged: no more reminders.
    liaison
        .acknowledge_alert(alert.id, Actor::person("dana"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    liaison.evaluate_alerts().await.unwrap();
    settle().await;
    assert!(
        drain(&mut events)
            .iter()
            .all(|(e, _)| *e != AlertEvent::Renotified)
    );

    // The partner recovers: the condition clears and the alert resolves.
    mock.set_behavior(Behavior::Healthy);
    eventually("delivered", Duration::from_secs(20), || async {
        count_in(&store, "lab", SubmissionState::AwaitingResult).await == 5
    })
    .await;
    liaison.evaluate_alerts().await.unwrap();
    settle().await;
    let got = drain(&mut events);
    assert!(
        got.iter()
            .any(|(e, a)| *e == AlertEvent::Resolved && a.id == alert.id),
        "{got:?}"
    );
    assert!(
        liaison
            .alerts(true)
            .await
            .unwrap()
            .iter()
            .all(|a| a.class != ProblemClass::PartnerUnavailable)
    );
    let all = liaison.alerts(false).await.unwrap();
    let resolved = all.iter().find(|a| a.id == alert.id).unwrap();
    assert!(resolved.resolved_at.is_some());
    assert_eq!(
        resolved.acknowledged_by.as_ref().map(|a| a.as_str()),
        Some("dana")
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[derive(Debug)]
struct Hanging;

#[async_trait]
impl AlertSink for Hanging {
    async fn notify(&self, _: AlertEvent, _: &Alert) -> Result<(), SinkError> {
        std::future::pending().await
    }
    fn name(&self) -> &'static str {
        "hanging"
    }
}

#[derive(Debug)]
struct Failing;

#[async_trait]
impl AlertSink for Failing {
    async fn notify(&self, _: AlertEvent, _: &Alert) -> Result<(), SinkError> {
        Err(SinkError::new("failing", "always"))
    }
    fn name(&self) -> &'static str {
        "failing"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_sink_stalls_nothing() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Reject { status: 422 })
        .await
        .unwrap();
    let (sink, mut events) = ChannelSink::new(100);
    let liaison = Liaison::builder(store.clone())
        .partner(partner("lab", &mock))
        .settings(quick_settings())
        .alert_sink(Hanging)
        .alert_sink(Failing)
        .alert_sink(sink)
        .alert_settings(settings().interval(Duration::from_millis(50)))
        .build()
        .unwrap();
    let handle = liaison.start();
    for i in 0..3 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    eventually(
        "a rejected-by-partner alert",
        Duration::from_secs(10),
        || async {
            liaison
                .alerts(true)
                .await
                .unwrap()
                .iter()
                .any(|a| a.class == ProblemClass::RejectedByPartner)
        },
    )
    .await;
    // Dispatch goes on while sinks hang and fail.
    mock.set_behavior(Behavior::Healthy);
    for i in 10..30 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    eventually("new work delivered", Duration::from_secs(20), || async {
        count_in(&store, "lab", SubmissionState::AwaitingResult).await == 20
    })
    .await;
    // An evaluation returns promptly too, and the working sink still hears.
    tokio::time::timeout(Duration::from_secs(5), liaison.evaluate_alerts())
        .await
        .expect("evaluation is not held up by sinks")
        .unwrap();
    settle().await;
    assert!(
        drain(&mut events)
            .iter()
            .any(|(e, a)| *e == AlertEvent::Opened && a.class == ProblemClass::RejectedByPartner)
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_sink_posts_signed_json_one_try_per_call() {
    use axum::http::{HeaderMap, StatusCode};
    use liaison::callback::{InboundCallback, SignatureVerifier, StandardWebhooks};
    use liaison::ops::alerts::WebhookSink;
    use std::sync::{Arc, Mutex};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/alerts",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((headers, body.to_vec()));
                    // The first delivery fails: the sink must retry.
                    if seen.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (_dir, store) = support::store();
    let (alert, _) = store_alert(&store).await;
    // Plain http needs the explicit opt-in, on loopback only.
    assert!(
        WebhookSink::new(&url, SECRET)
            .unwrap_err()
            .is_invalid_input()
    );
    let sink = WebhookSink::builder(&url, SECRET)
        .allow_plain_http_on_loopback()
        .build()
        .unwrap();
    // One try per call (the engine retries): the first fails, saying why.
    let failed = sink.notify(AlertEvent::Opened, &alert).await.unwrap_err();
    assert!(failed.reason.contains("HTTP 503"), "{failed}");
    assert!(!failed.to_string().contains("/alerts"), "{failed}");
    sink.notify(AlertEvent::Opened, &alert).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failure, one retry");
    assert_eq!(
        seen[0].0["webhook-id"], seen[1].0["webhook-id"],
        "every try of a notification has one id"
    );
    let (headers, body) = &seen[1];
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["type"], "alert.opened");
    assert_eq!(json["alert"]["class"], "result_overdue");
    assert_eq!(json["alert"]["owner"]["name"], "billing ops");
    let delivered = InboundCallback::new("alerts", headers.clone(), body.clone());
    StandardWebhooks::new(SECRET)
        .unwrap()
        .verify(&delivered, std::time::SystemTime::now())
        .expect("signed Standard-Webhooks style");
    assert!(!format!("{sink:?}").contains("whsec_"));
}

async fn store_alert(store: &liaison::store::SqliteStore) -> (Alert, bool) {
    use liaison::store::{NewAlert, OutboxStore};
    store
        .open_alert(NewAlert::new(
            "lab",
            ProblemClass::ResultOverdue,
            Owner::new("billing ops", "billing@clinic.example"),
            "1 submission(s) stuck without a result",
        ))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delay_budget_alerts_before_the_breach_and_pauses_mark_alerts_expected() {
    let (_dir, store) = support::store();
    // Accepted but never reported: the work stays unfinished.
    let mock = MockPartner::start().await.unwrap();
    let liaison = Liaison::builder(store.clone())
        .partner(partner("lab", &mock).delay_budget(Duration::from_secs(1)))
        .settings(quick_settings())
        .alert_settings(settings())
        .build()
        .unwrap();
    let handle = liaison.start();
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    // 80% of the budget: the warning opens before the breach.
    tokio::time::sleep(Duration::from_millis(850)).await;
    liaison.evaluate_alerts().await.unwrap();
    let open = liaison.alerts(true).await.unwrap();
    let budget = open
        .iter()
        .find(|a| a.class == ProblemClass::DelayBudgetExceeded)
        .expect("a delay-budget alert before the breach");
    assert!(
        budget
            .details
            .contains("0 past the delay budget, 1 approaching"),
        "{}",
        budget.details
    );
    assert!(!budget.expected);
    // Past the budget: the same alert, its details updated.
    tokio::time::sleep(Duration::from_millis(300)).await;
    liaison.evaluate_alerts().await.unwrap();
    let open = liaison.alerts(true).await.unwrap();
    let same = open
        .iter()
        .find(|a| a.class == ProblemClass::DelayBudgetExceeded)
        .unwrap();
    assert_eq!(same.id, budget.id);
    assert!(
        same.details.starts_with("1 past the delay budget"),
        "{}",
        same.details
    );

    // During an announced pause, new alerts are marked expected.
    liaison
        .pause(
            "lab",
            chrono::Utc::now() + chrono::Duration::hours(1),
            Actor::person("ops"),
            "maintenance",
        )
        .await
        .unwrap();
    // The accepted submission's result is overdue: a new alert, expected.
    let waiting = liaison
        .store()
        .list(&liaison::store::ListFilter::default().state(SubmissionState::AwaitingResult))
        .await
        .unwrap()
        .remove(0);
    liaison
        .store()
        .transition(
            waiting.id,
            liaison::store::StateChange::to(SubmissionState::Stuck),
        )
        .await
        .unwrap();
    liaison.evaluate_alerts().await.unwrap();
    let open = liaison.alerts(true).await.unwrap();
    let overdue = open
        .iter()
        .find(|a| a.class == ProblemClass::ResultOverdue)
        .expect("an overdue-result alert");
    assert!(overdue.expected, "raised during an announced pause");
    assert!(
        !open.iter().find(|a| a.id == budget.id).unwrap().expected,
        "opened before it"
    );
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn a_sink_for_an_owner_the_ownership_does_not_name_is_refused() {
    let (_dir, store) = support::store();
    let (sink, _rx) = ChannelSink::new(1);
    let refused = Liaison::builder(store.clone())
        .ownership(ownership())
        .owner_sink("lab vendr desk", sink.clone())
        .build()
        .unwrap_err();
    assert!(refused.is_invalid_input(), "{refused:?}");
    let text = refused.to_string();
    assert!(
        text.contains("owner_sink") && text.contains("lab vendr desk"),
        "{text}"
    );
    // Spelled as the ownership names it, it is accepted.
    Liaison::builder(store)
        .ownership(ownership())
        .owner_sink("lab vendor desk", sink)
        .build()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_sink_posts_plain_words_and_never_the_payload() {
    use axum::http::{HeaderMap, StatusCode};
    use liaison::ops::alerts::{ChatWebhookSink, NotificationState};
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route(
            "/services/T0/B0/SECRET-TOKEN",
            axum::routing::post(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    seen.lock().unwrap().push((headers, body.to_vec()));
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("{base}/services/T0/B0/SECRET-TOKEN");
    assert!(
        ChatWebhookSink::new(&url).unwrap_err().is_invalid_input(),
        "plain http needs the loopback opt-in"
    );
    let chat = || {
        ChatWebhookSink::builder(&url)
            .allow_plain_http_on_loopback()
            .build()
            .unwrap()
    };
    // A second chat sink whose webhook is gone: its error never shows the URL.
    let gone = ChatWebhookSink::builder(&format!("{base}/services/T0/B0/OTHER-SECRET"))
        .allow_plain_http_on_loopback()
        .build()
        .unwrap();

    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Reject { status: 422 })
        .await
        .unwrap();
    let liaison = Liaison::builder(store.clone())
        .partner(partner("lab", &mock))
        .settings(quick_settings())
        .ownership(
            ownership().route(
                ProblemClass::RejectedByPartner,
                Owner::new("lab vendor desk", "vendor-desk@lab.example")
                    .runbook("https://runbooks.example/lab-refused"),
            ),
        )
        .owner_sink("lab vendor desk", chat())
        .alert_sink(gone)
        .alert_settings(settings().sink_attempts(1))
        .build()
        .unwrap();
    liaison
        .enqueue(liaison::NewSubmission::new(
            "lab",
            "order",
            serde_json::json!({"patient": "PATIENT-SECRET-123", "test": "HbA1c"}),
        ))
        .await
        .unwrap();
    super::drain(&liaison).await;
    liaison.evaluate_alerts().await.unwrap();
    eventually("both tries journaled", Duration::from_secs(10), || async {
        let alerts = liaison.alerts(true).await.unwrap();
        let Some(alert) = alerts.first() else {
            return false;
        };
        let n = liaison.alert_notifications(alert.id).await.unwrap();
        n.len() == 2 && n.iter().all(|n| n.state != NotificationState::Pending)
    })
    .await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one post to the chat webhook");
    let (headers, body) = &seen[0];
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    let fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(fields, ["text"], "the shape chat tools accept");
    let text = json["text"].as_str().unwrap();
    for words in [
        "Alert opened: rejected by partner at partner lab",
        "Owner: lab vendor desk (vendor-desk@lab.example)",
        "Details: ",
        "Runbook: https://runbooks.example/lab-refused",
        "Opened ",
    ] {
        assert!(text.contains(words), "{words:?} in {text}");
    }
    let raw = String::from_utf8_lossy(body);
    assert!(
        !raw.contains("PATIENT-SECRET-123") && !raw.contains("HbA1c"),
        "{raw}"
    );

    let alert = liaison.alerts(true).await.unwrap().remove(0);
    let journal = liaison.alert_notifications(alert.id).await.unwrap();
    // Catch-all sinks are named first: the gone one is "chat", the owner's "chat#2".
    let delivered = journal.iter().find(|n| n.sink == "chat#2").unwrap();
    assert_eq!(delivered.state, NotificationState::Delivered);
    assert_eq!(delivered.owner, "lab vendor desk");
    let failed = journal.iter().find(|n| n.sink == "chat").unwrap();
    assert_eq!(failed.state, NotificationState::Failed);
    let error = failed.last_error.as_deref().unwrap();
    assert!(error.contains("HTTP 404"), "{error}");
    let report = liaison.health(Duration::from_secs(600)).await.unwrap();
    let everything = format!("{journal:?} {report:?}");
    assert!(
        !everything.contains("SECRET-TOKEN") && !everything.contains("OTHER-SECRET"),
        "the webhook URL is a secret: {everything}"
    );
}
