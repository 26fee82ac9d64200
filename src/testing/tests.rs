//! The mock partner over real HTTP, with reqwest as the client.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::handler::MAX_BODY_BYTES;
use super::*;
use crate::PartnerError;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(5);

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Fails the test instead of hanging it.
pub(super) async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {PATIENCE:?}"))
}

/// POST `body` to the partner; the status and the JSON answer (`Null` if none).
pub(super) async fn submit(
    client: &reqwest::Client,
    partner: &MockPartner,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut request = client.post(partner.submit_url()).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = bounded("submit", request.send()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Wait until `condition` holds (polling), failing after [`PATIENCE`].
pub(super) async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn healthy_partner_performs_one_effect_per_key() {
    let partner = MockPartner::start().await.unwrap();
    let client = client();
    let body = json!({"claim": "C-7", "amount": 120});

    let first = submit(&client, &partner, Some("k-1"), &body).await;
    assert_eq!(first, (202, json!({"reference": "MP-1"})));
    let retry = submit(&client, &partner, Some("k-1"), &body).await;
    assert_eq!(retry, first, "a retry gets the stored answer");
    let other = submit(&client, &partner, Some("k-2"), &body).await;
    assert_eq!(other, (202, json!({"reference": "MP-2"})));

    let stats = partner.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.distinct_keys, 2);
    assert_eq!(stats.side_effects, 2);
    assert_eq!(stats.max_concurrent, 1);

    let effects = partner.side_effects();
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[0].idempotency_key, "k-1");
    assert_eq!(effects[0].reference, "MP-1");
    assert_eq!(effects[0].body, body);
    assert!(effects[0].at <= effects[1].at);

    let received = partner.received();
    let seen: Vec<_> = received
        .iter()
        .map(|r| (r.idempotency_key.as_deref(), r.status))
        .collect();
    assert_eq!(
        seen,
        [(Some("k-1"), 202), (Some("k-1"), 202), (Some("k-2"), 202)]
    );
    assert_eq!(received[0].body, body);
}

#[tokio::test]
async fn a_key_reused_with_another_payload_is_refused() {
    let partner = MockPartner::start().await.unwrap();
    let client = client();
    let post_raw = |text: &'static str| {
        client
            .post(partner.submit_url())
            .header("idempotency-key", "k") // header names are case-insensitive
            .header("content-type", "application/json")
            .body(text)
            .send()
    };

    let first = bounded("first", post_raw(r#"{"a": 1, "b": 2}"#))
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    // The same JSON, written differently, is the same payload.
    let same = bounded("same", post_raw(r#"{"b":2,"a":1}"#)).await.unwrap();
    assert_eq!(same.status(), 202);

    let (status, body) = submit(&client, &partner, Some("k"), &json!({"a": 2})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"error": "idempotency key reused with a different payload"})
    );
    assert_eq!(partner.stats().side_effects, 1);
}

#[tokio::test]
async fn synchronous_behaviours_report_their_result() {
    let partner = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();
    let client = client();
    let answer = submit(&client, &partner, Some("a"), &json!({})).await;
    assert_eq!(
        answer,
        (200, json!({"reference": "MP-1", "status": "succeeded"}))
    );

    partner.set_behavior(Behavior::complete_with_failure("member not found"));
    let answer = submit(&client, &partner, Some("b"), &json!({})).await;
    assert_eq!(
        answer,
        (
            200,
            json!({"reference": "MP-2", "status": "failed", "reason": "member not found"})
        )
    );
    // The partner processed both: both are effects.
    assert_eq!(partner.stats().side_effects, 2);
    assert_eq!(
        partner.behavior(),
        Behavior::complete_with_failure("member not found")
    );
}

#[tokio::test]
async fn requests_without_a_key_or_to_other_paths_are_refused() {
    let partner = MockPartner::start().await.unwrap();
    let client = client();
    let (status, body) = submit(&client, &partner, None, &json!({"a": 1})).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "Idempotency-Key required"}));

    let elsewhere = bounded(
        "other path",
        client.post(format!("{}/other", partner.url())).send(),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let wrong_method = bounded("get", client.get(partner.submit_url()).send())
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    let stats = partner.stats();
    assert_eq!((stats.requests, stats.side_effects), (1, 0));
    assert_eq!(partner.received()[0].idempotency_key, None);
}

#[tokio::test]
async fn the_same_key_twice_at_once_has_one_effect() {
    let partner = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(200),
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let client = client();
    let body = json!({"n": 1});
    let (a, b) = tokio::join!(
        submit(&client, &partner, Some("same"), &body),
        submit(&client, &partner, Some("same"), &body),
    );

    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    if statuses == [202, 202] {
        // The second arrived after the first was answered: a replay.
        assert_eq!(a.1, b.1);
    } else {
        assert_eq!(statuses, [202, 409]);
        let conflict = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_eq!(
            *conflict,
            json!({"error": "request with this key in progress"})
        );
    }
    assert_eq!(partner.stats().side_effects, 1);
    assert_eq!(partner.stats().distinct_keys, 1);

    // The mark is gone once the first is answered.
    partner.set_behavior(Behavior::Healthy);
    let later = submit(&client, &partner, Some("same"), &body).await;
    assert_eq!(later, (202, json!({"reference": "MP-1"})));
}

#[tokio::test]
async fn a_flaky_partner_fails_every_nth_request() {
    let partner = MockPartner::start_with(Behavior::flaky(3, Behavior::Healthy))
        .await
        .unwrap();
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let key = format!("k-{i}");
        statuses.push(
            submit(&client, &partner, Some(&key), &json!({"i": i}))
                .await
                .0,
        );
    }
    assert_eq!(statuses, [202, 202, 503, 202, 202, 503]);
    assert_eq!(partner.stats().side_effects, 4);

    // A 503 is not remembered: the retry of k-2 is processed.
    let retry = submit(&client, &partner, Some("k-2"), &json!({"i": 2})).await;
    assert_eq!(retry, (202, json!({"reference": "MP-5"})));

    // Setting a behaviour starts counting again.
    partner.set_behavior(Behavior::flaky(2, Behavior::Healthy));
    let first = submit(&client, &partner, Some("x"), &json!({})).await.0;
    let second = submit(&client, &partner, Some("y"), &json!({})).await.0;
    assert_eq!((first, second), (202, 503));
}

#[tokio::test]
async fn a_rate_limited_partner_says_when_to_retry() {
    let partner = MockPartner::start_with(Behavior::rate_limited(
        Duration::from_millis(1500),
        2,
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let client = client();
    for _ in 0..2 {
        let response = bounded(
            "limited",
            client
                .post(partner.submit_url())
                .header("Idempotency-Key", "k")
                .json(&json!({}))
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2"); // rounded up
        let err =
            PartnerError::classify_http(response.status(), response.headers(), "").unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    }
    let (status, _) = submit(&client, &partner, Some("k"), &json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(partner.stats().side_effects, 1);
    assert_eq!(partner.stats().requests, 3);
}

#[tokio::test]
async fn rejecting_and_failing_partners_have_no_effect() {
    let partner = MockPartner::start_with(Behavior::reject(422))
        .await
        .unwrap();
    let client = client();
    let (status, body) = submit(&client, &partner, Some("k"), &json!({})).await;
    assert_eq!(status, 422);
    assert!(body["error"].is_string(), "{body}");

    partner.set_behavior(Behavior::Failing);
    let (status, body) = submit(&client, &partner, Some("k"), &json!({})).await;
    assert_eq!(status, 500);
    assert!(body["error"].is_string(), "{body}");
    // Failing needs no key: the server is broken before it looks.
    assert_eq!(submit(&client, &partner, None, &json!({})).await.0, 500);
    assert_eq!(partner.stats().side_effects, 0);

    // Nothing was stored for the key: once healthy, it is processed.
    partner.set_behavior(Behavior::Healthy);
    let (status, _) = submit(&client, &partner, Some("k"), &json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(partner.stats().side_effects, 1);

    let statuses: Vec<_> = partner.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [422, 500, 500, 202]);
}

#[tokio::test]
async fn max_concurrent_counts_requests_in_progress_together() {
    let partner = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(200),
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (client, partner) = (client.clone(), partner.clone());
        tasks.spawn(async move {
            let key = format!("k-{i}");
            submit(&client, &partner, Some(&key), &json!({"i": i}))
                .await
                .0
        });
    }
    let statuses = bounded("all eight", tasks.join_all()).await;
    assert_eq!(statuses, [202; 8]);

    // Eight sleeps of 200 ms overlap unless the machine is very slow; never
    // more than eight were sent.
    let peak = partner.stats().max_concurrent;
    assert!((2..=8).contains(&peak), "max_concurrent = {peak}");
    assert_eq!(partner.stats().side_effects, 8);

    partner.reset_stats();
    assert_eq!(partner.stats(), MockStats::default());
    submit(&client, &partner, Some("alone"), &json!({})).await;
    assert_eq!(partner.stats().max_concurrent, 1);
}

// Multi-threaded, like most hosts: the connections close on other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_goes_down_refuses_connections_until_it_comes_back() {
    let partner = MockPartner::start().await.unwrap();
    let url = partner.url();
    // This client keeps its connection open in its pool.
    let pooled = client();
    assert_eq!(
        submit(&pooled, &partner, Some("a"), &json!({})).await.0,
        202
    );

    for round in 0..2 {
        bounded("go_down", partner.go_down()).await;
        partner.go_down().await; // already down: nothing to do

        let fresh = client();
        let err = bounded("fresh client", fresh.post(partner.submit_url()).send())
            .await
            .unwrap_err();
        assert!(err.is_connect(), "round {round}: {err:?}");
        // The pooled connection was closed too: no answer, and no hang.
        let err = bounded("pooled client", pooled.post(partner.submit_url()).send())
            .await
            .unwrap_err();
        assert!(
            err.is_connect() || err.is_request(),
            "round {round}: {err:?}"
        );

        bounded("come_back", partner.come_back()).await.unwrap();
        partner.come_back().await.unwrap(); // already up: nothing to do
        assert_eq!(partner.url(), url, "the same port");
        let key = format!("after-{round}");
        assert_eq!(
            submit(&fresh, &partner, Some(&key), &json!({})).await.0,
            202
        );
        assert_eq!(
            submit(&pooled, &partner, Some(&key), &json!({})).await.0,
            202
        );
    }
    // What the partner remembers survives.
    assert_eq!(
        submit(&pooled, &partner, Some("a"), &json!({})).await.1["reference"],
        "MP-1"
    );
    assert_eq!(partner.stats().side_effects, 3);
}

#[tokio::test]
async fn a_request_in_progress_is_answered_when_the_partner_goes_down() {
    let partner = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(200),
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let client = client();
    let in_flight = tokio::spawn({
        let (client, partner) = (client.clone(), partner.clone());
        async move { submit(&client, &partner, Some("k"), &json!({})).await }
    });
    eventually("the request arrives", || partner.stats().requests == 1).await;
    bounded("go_down", partner.go_down()).await;

    let fresh = self::client();
    let err = bounded("new request", fresh.post(partner.submit_url()).send())
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let answer = bounded("in-flight request", in_flight).await.unwrap();
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));
    assert_eq!(partner.stats().side_effects, 1);
}

#[tokio::test]
async fn a_request_abandoned_by_its_client_has_no_effect() {
    let partner = MockPartner::start_with(Behavior::slow(
        Duration::from_millis(300),
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let body = json!({"claim": 1});
    let err = bounded(
        "impatient",
        impatient
            .post(partner.submit_url())
            .header("Idempotency-Key", "k")
            .json(&body)
            .send(),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // The partner notices the closed connection and drops the handler, which
    // clears the key's in-progress mark; until then the key answers 409.
    partner.set_behavior(Behavior::Healthy);
    let client = client();
    let start = Instant::now();
    let answer = loop {
        let answer = submit(&client, &partner, Some("k"), &body).await;
        if answer.0 != 409 {
            break answer;
        }
        assert!(start.elapsed() < PATIENCE, "the key stayed in progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer, (202, json!({"reference": "MP-1"})));

    // Past the moment the abandoned request would have finished its sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let effects = partner.side_effects();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].reference, "MP-1");
    let received = partner.received();
    assert_eq!(received.iter().filter(|r| r.status == 202).count(), 1);
    assert!(received.iter().all(|r| r.status == 202 || r.status == 409));
    // Counted as a request, but never answered, so not listed.
    assert_eq!(partner.stats().requests, received.len() as u64 + 1);
}

#[tokio::test]
async fn bodies_above_one_mib_are_refused() {
    let partner = MockPartner::start().await.unwrap();
    let client = client();
    let post_bytes = |len: usize, key: &'static str| {
        client
            .post(partner.submit_url())
            .header("Idempotency-Key", key)
            .body(vec![b'x'; len])
            .send()
    };
    let at_limit = bounded("1 MiB", post_bytes(MAX_BODY_BYTES, "fits"))
        .await
        .unwrap();
    assert_eq!(at_limit.status(), 202);
    let above = bounded("1 MiB + 1", post_bytes(MAX_BODY_BYTES + 1, "too-big"))
        .await
        .unwrap();
    assert_eq!(above.status(), 413);

    let received = partner.received();
    assert_eq!(received.len(), 2);
    assert_eq!((received[0].status, &received[0].body), (202, &Value::Null));
    assert_eq!(received[1].status, 413);
    assert_eq!(partner.stats().side_effects, 1);
}

#[tokio::test]
async fn reset_stats_keeps_what_the_partner_remembers() {
    let partner = MockPartner::start().await.unwrap();
    let client = client();
    submit(&client, &partner, Some("k"), &json!({})).await;
    partner.reset_stats();
    assert_eq!(partner.stats(), MockStats::default());
    assert!(partner.received().is_empty() && partner.side_effects().is_empty());

    let replay = submit(&client, &partner, Some("k"), &json!({})).await;
    assert_eq!(replay, (202, json!({"reference": "MP-1"})));
    let stats = partner.stats();
    assert_eq!(
        (stats.requests, stats.distinct_keys, stats.side_effects),
        (1, 1, 0)
    );
    assert!(format!("{partner:?}").contains(&partner.url()));
}
