//! `Duration::MAX` in any setting means "for ever": the engine saturates at
//! the far future where it adds the setting to a time, never panics.

use std::time::Duration;

use chrono::{Datelike, Utc};
use liaison::SubmissionState;
use liaison::engine::{
    AlertSettings, AlertThresholds, CircuitSettings, CircuitState, EngineSettings, Liaison,
};
use liaison::ops::alerts::{AlertEvent, ChannelSink, ProblemClass};
use liaison::retry::{Exponential, Fixed, RetryLimits};
use liaison::testing::{Behavior, MockPartner};

use super::{all, claim, count_in, drain, engine, eventually, partner, quick_settings};
use crate::support;

const FOR_EVER: Duration = Duration::MAX;

/// The only submission of `lab`.
async fn only(store: &liaison::store::SqliteStore) -> liaison::Submission {
    let mut all = all(store, "lab").await;
    assert_eq!(all.len(), 1);
    all.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_open_for_ever_stays_open_and_the_attempt_is_recorded() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let liaison = engine(
        &store,
        partner("lab", &mock)
            .concurrency(1)
            .circuit(CircuitSettings::new(1, FOR_EVER).unwrap()),
    );
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    liaison.enqueue(claim("lab", 2)).await.unwrap();
    let handle = liaison.start();
    // The failed attempt is recorded (its task did not die) and the
    // circuit stays open: nothing more reaches the partner.
    eventually("the attempt recorded", Duration::from_secs(10), || async {
        count_in(&store, "lab", SubmissionState::Queued).await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(liaison.circuit_state("lab"), Some(CircuitState::Open));
    assert_eq!(mock.stats().requests, 1);
    assert_eq!(count_in(&store, "lab", SubmissionState::InFlight).await, 0);
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_timeout_and_lease_margin_of_for_ever_deliver() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    let liaison = Liaison::builder(store.clone())
        .partner(partner("lab", &mock).attempt_timeout(FOR_EVER))
        .settings(quick_settings().lease_margin(FOR_EVER))
        .build()
        .unwrap();
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    drain(&liaison).await;
    assert_eq!(only(&store).await.state, SubmissionState::AwaitingResult);
    assert_eq!(mock.stats().side_effects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_timeout_of_for_ever_waits_for_ever() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    let liaison = engine(&store, partner("lab", &mock).result_timeout(FOR_EVER));
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    let handle = liaison.start();
    eventually("accepted", Duration::from_secs(10), || async {
        count_in(&store, "lab", SubmissionState::AwaitingResult).await == 1
    })
    .await;
    // Deadline rounds run (every 50 ms) and find nothing overdue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = only(&store).await;
    assert_eq!(s.state, SubmissionState::AwaitingResult);
    let deadline = s.result_deadline.expect("a deadline");
    assert!(deadline.year() > Utc::now().year() + 1000, "{deadline}");
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_budget_of_for_ever_reports_and_alerts_nothing() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    for warning in [0.8, 1.0] {
        let liaison = engine(
            &store,
            partner("lab", &mock)
                .delay_budget(FOR_EVER)
                .alert_thresholds(AlertThresholds::default().delay_budget_warning(warning)),
        );
        liaison.enqueue(claim("lab", 1)).await.unwrap();
        let report = liaison.health(Duration::from_secs(60)).await.unwrap();
        assert_eq!(report.partners[0].past_delay_budget.count, 0);
        liaison.evaluate_alerts().await.unwrap();
        assert!(
            !liaison
                .alerts(true)
                .await
                .unwrap()
                .iter()
                .any(|a| a.class == ProblemClass::DelayBudgetExceeded)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_intervals_of_for_ever_open_once_and_never_renotify() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    let (sink, mut events) = ChannelSink::new(100);
    let liaison = Liaison::builder(store.clone())
        .partner(
            partner("lab", &mock)
                .alert_thresholds(AlertThresholds::default().consecutive_failures(1)),
        )
        .settings(quick_settings())
        .alert_sink(sink)
        .alert_settings(
            AlertSettings::default()
                .interval(FOR_EVER)
                .window(FOR_EVER)
                .renotify_every(FOR_EVER)
                .sink_timeout(FOR_EVER),
        )
        .build()
        .unwrap();
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    let handle = liaison.start();
    eventually("a failed attempt", Duration::from_secs(10), || async {
        mock.stats().requests >= 1
    })
    .await;
    eventually("the alert open", Duration::from_secs(10), || async {
        liaison.evaluate_alerts().await.unwrap();
        !liaison.alerts(true).await.unwrap().is_empty()
    })
    .await;
    for _ in 0..3 {
        liaison.evaluate_alerts().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    while let Ok((event, _)) = events.try_recv() {
        got.push(event);
    }
    assert!(got.contains(&AlertEvent::Opened), "{got:?}");
    assert!(!got.contains(&AlertEvent::Renotified), "{got:?}");
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_delays_of_for_ever_schedule_the_retry_at_the_far_future() {
    let mock = MockPartner::start_with(Behavior::Failing).await.unwrap();
    for fixed in [true, false] {
        let (_dir, store) = support::store();
        let lab = partner("lab", &mock).limits(RetryLimits::new(5, FOR_EVER).unwrap());
        let lab = if fixed {
            lab.retry(Fixed::new(FOR_EVER).unwrap())
        } else {
            lab.retry(Exponential::new(FOR_EVER, FOR_EVER).unwrap())
        };
        let liaison = Liaison::builder(store.clone())
            .partner(lab)
            .settings(EngineSettings::default().poll_interval(Duration::from_millis(20)))
            .build()
            .unwrap();
        liaison.enqueue(claim("lab", 1)).await.unwrap();
        let handle = liaison.start();
        eventually("the retry scheduled", Duration::from_secs(10), || async {
            let s = only(&store).await;
            s.state == SubmissionState::Queued && s.attempts == 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle.shutdown(Duration::from_secs(5)).await.unwrap();
        let s = only(&store).await;
        assert_eq!(s.state, SubmissionState::Queued);
        assert_eq!(s.attempts, 1, "the retry is not due");
        if fixed {
            assert!(s.due_at.year() > Utc::now().year() + 1000, "{}", s.due_at);
        }
    }
}
