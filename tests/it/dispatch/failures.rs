//! Each partner failure mode: unavailable, flaky, rate limited, permanent
//! refusal, slow, and retries that must end.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use liaison::engine::Partner;
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::OutboxStore;
use liaison::testing::{Behavior, MockPartner};
use liaison::{AttemptOutcome, EventKind, SubmissionState};

use super::{all, claim, count_in, drain, engine, eventually, partner};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_partner_gets_everything_once_it_is_back() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    mock.go_down().await;
    let liaison = engine(
        &store,
        partner("lab", &mock).retry(Fixed::new(Duration::from_millis(100)).unwrap()),
    );
    for i in 0..40 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    let handle = liaison.start();
    // Every submission fails at least twice while the partner is down...
    eventually(
        "two failed attempts each",
        Duration::from_secs(30),
        || async { all(&store, "lab").await.iter().all(|s| s.attempts >= 2) },
    )
    .await;
    assert_eq!(
        mock.stats().requests,
        0,
        "nothing can reach a partner that is down"
    );
    // ...and nothing is lost: it is all still queued (or being tried).
    assert_eq!(
        count_in(&store, "lab", SubmissionState::DeadLettered).await,
        0
    );
    mock.come_back().await.unwrap();
    eventually("all accepted", Duration::from_secs(30), || async {
        count_in(&store, "lab", SubmissionState::AwaitingResult).await == 40
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let stats = mock.stats();
    assert_eq!(stats.side_effects, 40);
    assert_eq!(stats.distinct_keys, 40);
    // Retries were spaced by the policy: each retry started no earlier than
    // 100 ms after the previous attempt finished.
    for s in all(&store, "lab").await {
        let attempts = store.attempts(s.id).await.unwrap();
        for pair in attempts.windows(2) {
            let gap = pair[1].started_at - pair[0].finished_at.unwrap();
            assert!(
                gap >= chrono::Duration::milliseconds(99),
                "retry after {gap:?}"
            );
        }
        assert_eq!(
            attempts.last().unwrap().outcome,
            Some(AttemptOutcome::Accepted)
        );
        assert!(
            attempts[..attempts.len() - 1]
                .iter()
                .all(|a| a.outcome == Some(AttemptOutcome::Transient))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_partner_sees_the_same_key_on_every_retry_and_one_side_effect() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::flaky(3, Behavior::Healthy))
        .await
        .unwrap();
    let liaison = engine(&store, partner("lab", &mock).concurrency(4));
    for i in 0..60 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    drain(&liaison).await;

    assert_eq!(
        count_in(&store, "lab", SubmissionState::AwaitingResult).await,
        60
    );
    let stats = mock.stats();
    assert_eq!(stats.side_effects, 60);
    assert_eq!(stats.distinct_keys, 60);
    assert!(stats.requests > 60, "some requests failed and were retried");
    let mut per_key: HashMap<String, u32> = HashMap::new();
    for r in mock.received() {
        *per_key
            .entry(r.idempotency_key.expect("key sent"))
            .or_default() += 1;
    }
    let mut retried = 0;
    for s in all(&store, "lab").await {
        assert_eq!(
            per_key[&s.idempotency_key], s.attempts,
            "{}",
            s.idempotency_key
        );
        retried += usize::from(s.attempts > 1);
    }
    assert!(retried > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_over_the_policy() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::rate_limited(
        Duration::from_secs(1),
        1,
        Behavior::Healthy,
    ))
    .await
    .unwrap();
    // The policy alone would retry after 20 ms.
    let liaison = engine(&store, partner("lab", &mock));
    liaison.enqueue(claim("lab", 1)).await.unwrap();
    drain(&liaison).await;

    let received = mock.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].status, 429);
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(990),
        "retried after {waited:?}"
    );
    let s = &all(&store, "lab").await[0];
    assert_eq!(s.state, SubmissionState::AwaitingResult);
    let attempts = store.attempts(s.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::RateLimited));
    assert_eq!(attempts[0].http_status, Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_partner_times_out_and_is_retried_with_the_same_key() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::slow(Duration::from_secs(2), Behavior::Healthy))
        .await
        .unwrap();
    let liaison = engine(
        &store,
        partner("lab", &mock).attempt_timeout(Duration::from_millis(150)),
    );
    let id = liaison
        .enqueue(claim("lab", 1))
        .await
        .unwrap()
        .submission
        .id;
    let handle = liaison.start();
    eventually("a timed-out attempt", Duration::from_secs(20), || async {
        store
            .attempts(id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.outcome == Some(AttemptOutcome::Timeout))
    })
    .await;
    mock.set_behavior(Behavior::Healthy);
    eventually("accepted", Duration::from_secs(20), || async {
        store.get(id).await.unwrap().state == SubmissionState::AwaitingResult
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();

    let keys: Vec<_> = mock
        .received()
        .into_iter()
        .map(|r| r.idempotency_key)
        .collect();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.as_deref() == Some("C-1")), "{keys:?}");
    assert_eq!(
        mock.stats().side_effects,
        1,
        "timed-out requests had no effect"
    );
}

/// The ways retries end in a dead letter: a permanent refusal at once, the
/// attempt budget, the age budget. The cases run side by side, each on a
/// store and a partner of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_end_in_a_dead_letter() {
    struct Case {
        name: &'static str,
        behavior: Behavior,
        partner: fn(Partner) -> Partner,
        attempts: RangeInclusive<u32>,
        /// Each must be in the dead-letter event's reason.
        reason: &'static [&'static str],
        /// The first attempt's HTTP status and outcome.
        first: Option<(u16, AttemptOutcome)>,
    }
    let cases = [
        Case {
            name: "a permanent refusal dead-letters after one attempt",
            behavior: Behavior::Reject { status: 422 },
            partner: |p| p,
            attempts: 1..=1,
            reason: &["422", "refused"],
            first: Some((422, AttemptOutcome::Permanent)),
        },
        Case {
            name: "max attempts end retries",
            behavior: Behavior::Failing,
            partner: |p| p.limits(RetryLimits::new(3, Duration::from_secs(60)).unwrap()),
            attempts: 3..=3,
            reason: &["max attempts"],
            first: None,
        },
        Case {
            name: "max age ends retries",
            behavior: Behavior::Failing,
            partner: |p| {
                p.retry(Fixed::new(Duration::from_millis(100)).unwrap())
                    .limits(RetryLimits::new(1000, Duration::from_millis(350)).unwrap())
            },
            attempts: 0..=4,
            reason: &["max age"],
            first: None,
        },
    ];
    let mut runs = tokio::task::JoinSet::new();
    for case in cases {
        runs.spawn(async move {
            let name = case.name;
            let (_dir, store) = support::store();
            let mock = MockPartner::start_with(case.behavior).await.unwrap();
            let liaison = engine(&store, (case.partner)(partner("lab", &mock)));
            let id = liaison
                .enqueue(claim("lab", 1))
                .await
                .unwrap()
                .submission
                .id;
            drain(&liaison).await;

            let s = store.get(id).await.unwrap();
            assert_eq!(s.state, SubmissionState::DeadLettered, "{name}");
            assert!(
                case.attempts.contains(&s.attempts),
                "{name}: attempts {}",
                s.attempts
            );
            assert_eq!(mock.stats().requests, u64::from(s.attempts), "{name}");
            if let Some((status, outcome)) = case.first {
                let attempts = store.attempts(id).await.unwrap();
                assert_eq!(attempts[0].http_status, Some(status), "{name}");
                assert_eq!(attempts[0].outcome, Some(outcome), "{name}");
            }
            let last = store.timeline(id).await.unwrap().pop().unwrap();
            assert_eq!(last.kind, EventKind::DeadLettered, "{name}");
            let reason = last.reason.unwrap();
            for part in case.reason {
                assert!(reason.contains(part), "{name}: {reason}");
            }
        });
    }
    while let Some(run) = runs.join_next().await {
        if let Err(err) = run {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_gets_a_fresh_budget_and_key_and_is_delivered() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Reject { status: 422 })
        .await
        .unwrap();
    let liaison = engine(
        &store,
        partner("lab", &mock).limits(RetryLimits::new(2, Duration::from_secs(60)).unwrap()),
    );
    let id = liaison
        .enqueue(claim("lab", 1))
        .await
        .unwrap()
        .submission
        .id;
    drain(&liaison).await;
    assert_eq!(
        store.get(id).await.unwrap().state,
        SubmissionState::DeadLettered
    );

    // The partner fixes its side; an operator replays. It refused the
    // original, so the replay goes under a fresh key the partner has not seen.
    mock.set_behavior(Behavior::Failing);
    liaison
        .replay(
            id,
            liaison::Actor::person("ops"),
            "partner fixed the member mapping",
        )
        .await
        .unwrap();
    drain(&liaison).await;
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::DeadLettered);
    assert_eq!(s.attempts, 3, "the replay had its own budget of 2 attempts");
    assert_eq!(s.idempotency_key, "C-1~replay1");

    mock.set_behavior(Behavior::Healthy);
    liaison
        .replay(id, liaison::Actor::person("ops"), "partner is back")
        .await
        .unwrap();
    drain(&liaison).await;
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::AwaitingResult);
    assert_eq!(s.replays, 2);
    assert_eq!(mock.stats().side_effects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::flaky(3, Behavior::Healthy))
        .await
        .unwrap();
    let liaison = engine(&store, partner("lab", &mock));
    for i in 0..12 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    drain(&liaison).await;
    let failed = mock.stats().requests - 12;
    let text = liaison
        .render_metrics(Duration::from_secs(3600))
        .await
        .unwrap();
    let sample = |line: &str| {
        text.lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        sample(r#"liaison_submissions_enqueued_total{partner="lab"}"#),
        Some(12.0),
        "{text}"
    );
    assert_eq!(
        sample(r#"liaison_attempts_total{partner="lab",outcome="accepted"}"#),
        Some(12.0)
    );
    assert_eq!(
        sample(r#"liaison_attempts_total{partner="lab",outcome="transient"}"#),
        Some(failed as f64)
    );
    assert_eq!(
        sample(r#"liaison_submissions{partner="lab",state="awaiting_result"}"#),
        Some(12.0)
    );
    assert_eq!(text.lines().last(), Some("# EOF"));
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("liaison_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

/// A partner that answers every acceptance with the same reference: the
/// first submission keeps it, the others are recorded as accepted without
/// it (a reference correlates callbacks, so it belongs to one submission),
/// and none is lost or retried for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_the_partner_gives_twice_is_kept_by_the_first_submission_only() {
    use async_trait::async_trait;
    use liaison::{AttemptContext, HttpJsonAdapter, PartnerAdapter, PartnerError, SubmitOutcome};

    #[derive(Debug)]
    struct SameReference(HttpJsonAdapter);

    #[async_trait]
    impl PartnerAdapter for SameReference {
        async fn submit(
            &self,
            ctx: &AttemptContext,
            submission: &liaison::Submission,
        ) -> Result<SubmitOutcome, PartnerError> {
            // The request goes to the partner over HTTP; its answer is
            // rewritten to carry a reference it already gave.
            match self.0.submit(ctx, submission).await? {
                SubmitOutcome::AwaitResult { .. } => Ok(SubmitOutcome::AwaitResult {
                    external_ref: Some("DUP-1".into()),
                }),
                other => Ok(other),
            }
        }
    }

    let (_dir, store) = support::store();
    let mock = MockPartner::start().await.unwrap();
    let adapter = SameReference(HttpJsonAdapter::new(&mock.submit_url()).unwrap());
    let liaison = engine(
        &store,
        Partner::new("lab", adapter)
            .retry(Fixed::new(Duration::from_millis(20)).unwrap())
            .without_circuit(),
    );
    for i in 0..3 {
        liaison.enqueue(claim("lab", i)).await.unwrap();
    }
    drain(&liaison).await;
    let done = all(&store, "lab").await;
    assert_eq!(done.len(), 3);
    assert!(
        done.iter()
            .all(|s| s.state == SubmissionState::AwaitingResult && s.attempts == 1),
        "{done:#?}"
    );
    let holders: Vec<_> = done
        .iter()
        .filter(|s| s.external_ref.as_deref() == Some("DUP-1"))
        .collect();
    assert_eq!(holders.len(), 1, "one submission holds the reference");
    for other in done.iter().filter(|s| s.external_ref.is_none()) {
        let timeline = store.timeline(other.id).await.unwrap();
        let accepted = timeline
            .iter()
            .find(|e| e.to_state == Some(SubmissionState::AwaitingResult))
            .expect("accepted");
        let rejected = accepted.data.as_ref().unwrap()["rejected_external_ref"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            rejected.contains("DUP-1") && rejected.contains(&holders[0].id.to_string()),
            "{rejected}"
        );
    }
    assert_eq!(mock.side_effects().len(), 3);
}
