//! Scripted result documents over real HTTP: in the synchronous answer, the
//! callback and the status endpoint, and a partner scripted per request.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::callback_tests::Webhook;
use super::tests::{client, submit};
use super::{Behavior, CallbackMode, MockOutcome, MockPartner};

fn approved(paid: i64) -> MockOutcome {
    MockOutcome::Succeeded.with_field(
        "adjudication",
        json!({"decision": "approved", "paid": paid, "claim_no": "CH-000123"}),
    )
}

fn denied() -> MockOutcome {
    MockOutcome::failed("claim lacks information").with_field(
        "adjudication",
        json!({"decision": "denied", "codes": ["CO-16"]}),
    )
}

/// `GET /status/{reference}`: the status and the JSON answer.
async fn poll(client: &reqwest::Client, partner: &MockPartner, reference: &str) -> (u16, Value) {
    let url = partner.status_url().replace("{ref}", reference);
    let response = client.get(url).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[test]
fn fields_accumulate_and_documented_members_are_kept_apart() {
    let outcome = MockOutcome::Succeeded
        .with_field("a", json!(1))
        .with_field("b", json!(2))
        .with_field("a", json!(3));
    assert!(outcome.is_success());
    assert_eq!(outcome.reason(), None);
    assert_eq!(Value::Object(outcome.fields()), json!({"a": 3, "b": 2}));
    assert_eq!(denied().reason(), Some("claim lacks information"));
    assert!(MockOutcome::Succeeded.fields().is_empty());
}

#[tokio::test]
async fn synchronous_answers_carry_the_document() {
    let partner = MockPartner::start_with(Behavior::complete(approved(12500)))
        .await
        .unwrap();
    let client = client();
    let answer = submit(&client, &partner, Some("C-1"), &json!({"claim": 1})).await;
    let want = json!({
        "reference": "MP-1",
        "status": "succeeded",
        "adjudication": {"decision": "approved", "paid": 12500, "claim_no": "CH-000123"},
    });
    assert_eq!(answer, (200, want.clone()));
    // Known at once on the status endpoint too, and replayed for a retry.
    assert_eq!(poll(&client, &partner, "MP-1").await, (200, want.clone()));
    assert_eq!(
        submit(&client, &partner, Some("C-1"), &json!({"claim": 1})).await,
        (200, want)
    );

    partner.set_behavior(Behavior::complete(denied()));
    let answer = submit(&client, &partner, Some("C-2"), &json!({"claim": 2})).await;
    assert_eq!(
        answer,
        (
            200,
            json!({
                "reference": "MP-2",
                "status": "failed",
                "reason": "claim lacks information",
                "adjudication": {"decision": "denied", "codes": ["CO-16"]},
            })
        )
    );
    assert_eq!(partner.stats().side_effects, 2);
}

#[tokio::test]
async fn the_old_synchronous_behaviours_answer_as_before() {
    let partner = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let client = client();
    let done = json!({"reference": "MP-1", "status": "succeeded"});
    assert_eq!(
        submit(&client, &partner, Some("k"), &json!({})).await,
        (200, done.clone())
    );
    assert_eq!(poll(&client, &partner, "MP-1").await, (200, done));
    // Healthy accepts and never knows the result; unknown references are 404.
    partner.set_behavior(Behavior::Healthy);
    submit(&client, &partner, Some("k-2"), &json!({})).await;
    assert_eq!(
        poll(&client, &partner, "MP-2").await,
        (200, json!({"reference": "MP-2", "status": "pending"}))
    );
    assert_eq!(poll(&client, &partner, "MP-9").await.0, 404);
    assert_eq!(partner.stats().requests, 2, "polls are not submits");
}

#[tokio::test]
async fn callbacks_carry_the_document() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let behavior = Behavior::callback_later(Duration::ZERO, denied());
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    let client = client();

    submit(&client, &partner, Some("C-7"), &json!({"claim": 7})).await;
    let body = webhook.next().await.json();
    let event_id = body["event_id"].clone();
    assert_eq!(
        body,
        json!({
            "event_id": event_id,
            "reference": "MP-1",
            "idempotency_key": "C-7",
            "status": "failed",
            "reason": "claim lacks information",
            "adjudication": {"decision": "denied", "codes": ["CO-16"]},
        })
    );
}

#[tokio::test]
async fn a_result_only_on_poll_is_pending_until_due() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let behavior = Behavior::callback_later_with(
        Duration::from_millis(300),
        approved(900),
        CallbackMode::Never,
    );
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    let client = client();

    let answer = submit(&client, &partner, Some("C-3"), &json!({"claim": 3})).await;
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));
    assert_eq!(
        poll(&client, &partner, "MP-1").await,
        (200, json!({"reference": "MP-1", "status": "pending"}))
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        poll(&client, &partner, "MP-1").await,
        (
            200,
            json!({
                "reference": "MP-1",
                "status": "succeeded",
                "adjudication": {"decision": "approved", "paid": 900, "claim_no": "CH-000123"},
            })
        )
    );
    webhook.nothing_within(Duration::from_millis(100)).await;
    assert_eq!(partner.stats().callbacks_sent, 0);
}

#[tokio::test]
async fn the_same_result_twice_is_the_same_document() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let behavior =
        Behavior::callback_later_with(Duration::ZERO, approved(100), CallbackMode::Duplicate);
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));

    submit(&client(), &partner, Some("C-4"), &json!({})).await;
    let (first, second) = (webhook.next().await, webhook.next().await);
    assert_eq!(first.body, second.body);
    assert_eq!(first.json()["adjudication"]["paid"], 100);
}

#[tokio::test]
async fn a_revised_result_is_a_new_event_with_another_document() {
    let mut webhook = Webhook::start(StatusCode::OK).await;
    let behavior = Behavior::callback_later_with(
        Duration::ZERO,
        approved(100),
        CallbackMode::Revised(approved(80)),
    );
    let partner = MockPartner::start_with(behavior).await.unwrap();
    partner.set_callback_url(Some(webhook.url.clone()));
    let client = client();

    submit(&client, &partner, Some("C-5"), &json!({})).await;
    let (a, b) = (webhook.next().await.json(), webhook.next().await.json());
    assert_ne!(a["event_id"], b["event_id"]);
    assert_eq!(
        (&a["reference"], &b["reference"]),
        (&json!("MP-1"), &json!("MP-1"))
    );
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("succeeded"), &json!("succeeded"))
    );
    assert_eq!(
        (&a["adjudication"]["paid"], &b["adjudication"]["paid"]),
        (&json!(100), &json!(80))
    );
    // The status endpoint answers the partner's last word.
    assert_eq!(
        poll(&client, &partner, "MP-1").await.1["adjudication"]["paid"],
        80
    );
}

#[tokio::test]
async fn a_scripted_partner_answers_each_request_its_own_way() {
    let behavior = Behavior::scripted(|body| match body["claim"].as_i64() {
        Some(n) if n % 2 == 0 => Behavior::complete(approved(n * 100)),
        Some(_) => Behavior::complete(denied()),
        None => Behavior::reject(422),
    });
    let partner = MockPartner::start_with(Behavior::flaky(0, behavior))
        .await
        .unwrap();
    let client = client();

    let (status, even) = submit(&client, &partner, Some("C-2"), &json!({"claim": 2})).await;
    assert_eq!((status, &even["adjudication"]["paid"]), (200, &json!(200)));
    let (status, odd) = submit(&client, &partner, Some("C-3"), &json!({"claim": 3})).await;
    assert_eq!((status, &odd["status"]), (200, &json!("failed")));
    let (status, _) = submit(&client, &partner, Some("C-x"), &json!({"other": 1})).await;
    assert_eq!(status, 422);
    assert_eq!(partner.stats().side_effects, 2);

    // A script must end in a behaviour, not another script.
    let looping = Behavior::scripted(|_| Behavior::scripted(|_| Behavior::Healthy));
    partner.set_behavior(looping);
    assert_eq!(
        submit(&client, &partner, Some("C-4"), &json!({})).await.0,
        500
    );
}
