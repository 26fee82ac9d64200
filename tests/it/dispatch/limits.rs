//! Concurrency limit and circuit breaker.

use std::time::Duration;

use liaison::SubmissionState;
use liaison::engine::{CircuitSettings, CircuitState};
use liaison::testing::{Behavior, MockPartner};

use super::{claim, count_in, drain, engine, eventually, partner};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_is_never_exceeded() {
    let (_dir, store) = support::store();
    let mock =
        MockPartner::start_with(Behavior::slow(Duration::from_millis(60), Behavior::Healthy))
            .await
            .unwrap();
    let liaison = engine(&store, partner("lab", &mock).concurrency(3));
    for i in 0..30 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    drain(&liaison).await;
    assert_eq!(
        count_in(&store, "lab", SubmissionState::AwaitingResult).await,
        30
    );
    let max = mock.stats().max_concurrent;
    assert!(
        max <= 3,
        "partner saw {max} concurrent requests with a limit of 3"
    );
    assert!(max >= 2, "attempts did run in parallel ({max})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_sends_nothing_probes_once_and_closes_on_success() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let open_for = Duration::from_millis(1500);
    let liaison = engine(
        &store,
        partner("lab", &mock)
            .concurrency(1)
            .circuit(CircuitSettings::new(3, open_for).unwrap()),
    );
    for i in 0..5 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    assert_eq!(liaison.circuit_state("lab"), Some(CircuitState::Closed));
    let handle = liaison.start();

    eventually("circuit open", Duration::from_secs(10), || async {
        liaison.circuit_state("lab") == Some(CircuitState::Open)
    })
    .await;
    assert_eq!(mock.stats().requests, 3, "it opened after the threshold");
    // While open nothing reaches the partner (well inside the open period).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().requests, 3);
    assert_eq!(liaison.circuit_state("lab"), Some(CircuitState::Open));

    // After the period, exactly one probe; it fails and the circuit re-opens.
    eventually("one probe", Duration::from_secs(10), || async {
        mock.stats().requests >= 4
    })
    .await;
    eventually("open again", Duration::from_secs(10), || async {
        liaison.circuit_state("lab") == Some(CircuitState::Open)
    })
    .await;
    assert_eq!(
        mock.stats().requests,
        4,
        "a half-open circuit lets one probe through"
    );

    // The partner recovers: the next probe succeeds, the circuit closes, all goes.
    mock.set_behavior(Behavior::Healthy);
    eventually("closed", Duration::from_secs(10), || async {
        liaison.circuit_state("lab") == Some(CircuitState::Closed)
    })
    .await;
    eventually("all delivered", Duration::from_secs(10), || async {
        count_in(&store, "lab", SubmissionState::AwaitingResult).await == 5
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        count_in(&store, "lab", SubmissionState::DeadLettered).await,
        0,
        "nothing lost"
    );
    assert_eq!(mock.stats().side_effects, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_wakes_the_dispatcher_without_waiting_for_the_poll() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    let mut settings = super::quick_settings();
    settings.poll_interval = Duration::from_secs(600);
    let liaison = liaison::Liaison::builder(store.clone())
        .partner(partner("lab", &mock))
        .settings(settings)
        .build()
        .unwrap();
    let handle = liaison.start();
    // Let the dispatcher find nothing and go to sleep for its (long) poll.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = liaison
        .enqueue(claim("lab", 1))
        .await
        .unwrap()
        .submission
        .id;
    // Well before the 10-minute poll could pick it up.
    eventually(
        "delivered after the wake-up",
        Duration::from_secs(30),
        || async {
            use liaison::store::OutboxStore;
            store.get(id).await.unwrap().state == SubmissionState::AwaitingResult
        },
    )
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_attempts() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    // 5 per second: a burst of 5, then one every 200 ms.
    let liaison = engine(
        &store,
        partner("lab", &mock)
            .concurrency(8)
            .rate_limit_per_second(5),
    );
    for i in 0..10 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    drain(&liaison).await;
    let received = mock.received();
    assert_eq!(received.len(), 10);
    // The limiter releases the 10th a full second after the first; the
    // receiver's clock sees that minus the first request's extra delay
    // (connection setup on a loaded machine), so allow a margin. Without a
    // limit the ten arrive within a few milliseconds.
    let span = received[9].at - received[0].at;
    assert!(
        span >= chrono::Duration::milliseconds(700),
        "10 requests within {span:?}"
    );
    assert_eq!(
        count_in(&store, "lab", SubmissionState::AwaitingResult).await,
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_partner_gets_nothing_and_everything_after_resume() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    let liaison = engine(&store, partner("lab", &mock));
    let ops = liaison::Actor::person("ops");
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    liaison
        .pause("lab", until, ops.clone(), "partner maintenance window")
        .await
        .unwrap();
    for i in 0..5 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    // Another instance on the same store sees the pause when it starts.
    let other = engine(&store, partner("lab", &mock));
    let handles = [liaison.start(), other.start()];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.stats().requests, 0, "nothing is sent while paused");
    assert_eq!(
        count_in(&store, "lab", SubmissionState::Queued).await,
        5,
        "nothing is lost"
    );
    let health = liaison.health(Duration::from_secs(3600)).await.unwrap();
    let lab = &health.partners[0];
    assert_eq!(
        lab.paused.as_ref().map(|p| p.until.timestamp()),
        Some(until.timestamp())
    );
    assert!(
        lab.reasons
            .iter()
            .any(|r| r.contains("partner maintenance window"))
    );

    liaison
        .resume("lab", ops, "maintenance over")
        .await
        .unwrap();
    eventually(
        "all delivered after resume",
        Duration::from_secs(20),
        || async { count_in(&store, "lab", SubmissionState::AwaitingResult).await == 5 },
    )
    .await;
    for handle in handles {
        handle.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    assert_eq!(mock.stats().side_effects, 5);
    let err = liaison
        .pause(
            "lab",
            chrono::Utc::now() - chrono::Duration::seconds(1),
            liaison::Actor::person("x"),
            "past",
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_input());
}
