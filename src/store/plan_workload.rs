//! The workload both stores' query-plan tests record their statements
//! from: every hot path driven once through an engine (enqueue, dispatch,
//! callbacks, health, lists and lookups, deliveries, the reaper, retention),
//! so each hot statement is run at least once.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::HeaderMap;
use serde_json::json;

use crate::callback::{Disposition, JsonMatcher, Unverified};
use crate::engine::ExpectedTraffic;
use crate::engine::{EngineSettings, Liaison, Partner};
use crate::model::delivery::DeliveryState;
use crate::store::{
    AttemptReport, CallbackFilter, ClaimRequest, DeliveryClaim, DeliveryEnd, DeliveryFilter,
    FinishedAttempt, HourlyQuery, ListFilter, OutboxStore, StateChange, StatsQuery,
};
use crate::{
    AttemptContext, AttemptOutcome, NewSubmission, PartnerAdapter, PartnerError, Submission,
    SubmissionState, SubmitOutcome,
};

/// The workload reached the statement that contains `needle`: a plan test
/// that records fewer statements than it checks would pass for nothing.
pub(crate) fn assert_reached<'a>(statements: impl IntoIterator<Item = &'a String>, needle: &str) {
    assert!(
        statements.into_iter().any(|s| s.contains(needle)),
        "no recorded statement contains {needle:?}"
    );
}

/// An engine on `store` with one partner, `lab`, whose callbacks are
/// matched by their `reference`.
pub(crate) fn engine(store: impl OutboxStore + 'static) -> Liaison {
    let partner = Partner::new("lab", Accepts)
        .callbacks(JsonMatcher::builder(Unverified).build().unwrap())
        .rate_limit_per_second(1000);
    Liaison::builder(store)
        .partner(partner)
        .settings(EngineSettings {
            poll_interval: Duration::from_millis(10),
            ..EngineSettings::default()
        })
        .build()
        .unwrap()
}

/// Accepts everything with a reference derived from the key.
#[derive(Debug)]
struct Accepts;

#[async_trait]
impl PartnerAdapter for Accepts {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        _: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        Ok(SubmitOutcome::AwaitResult {
            external_ref: Some(format!("R-{}", ctx.idempotency_key)),
        })
    }
}

/// Drive every hot path once, so each hot statement is recorded.
pub(crate) async fn workload(liaison: &Liaison) {
    let store = liaison.store().clone();
    // Results go to the host: finishing records deliveries.
    store.set_result_delivery("lab", true).await.unwrap();
    let one = NewSubmission::new("lab", "order", json!({"n": 0})).idempotency_key("k-0");
    liaison.enqueue(one.clone()).await.unwrap();
    liaison.enqueue(one).await.unwrap(); // deduplicated
    let batch = (1..10)
        .map(|i| {
            NewSubmission::new("lab", "order", json!({ "n": i }))
                .idempotency_key(format!("k-{i}"))
                .ordering_key(format!("o-{}", i % 2))
                .correlation("order_no", format!("SO-{}", i % 3))
                .correlation("patient", format!("P-{i}"))
                .business_value_in(100 * i, "EUR")
                .business_deadline(Utc::now() + chrono::Duration::hours(i))
        })
        .collect();
    liaison.enqueue_batch(batch).await.unwrap();
    liaison.run_until_idle().await.unwrap();
    // Callbacks: matched by the partner's reference, a duplicate, and
    // one for nobody (kept unmatched).
    for (key, event) in [("k-1", "e-1"), ("k-1", "e-1"), ("nobody", "e-2")] {
        let body =
            json!({"event_id": event, "reference": format!("R-{key}"), "status": "succeeded"});
        let receipt = liaison
            .ingest_callback("lab", &HeaderMap::new(), body.to_string().as_bytes())
            .await
            .unwrap();
        assert_ne!(receipt.disposition, Disposition::Malformed);
    }
    // Callbacks that arrive before their acceptances, then both
    // acceptances in one batch: the batch settles them together.
    for key in ["k-early-1", "k-early-2"] {
        let body = json!({"event_id": format!("e-{key}"), "reference": format!("R-{key}"), "status": "succeeded"});
        let receipt = liaison
            .ingest_callback("lab", &HeaderMap::new(), body.to_string().as_bytes())
            .await
            .unwrap();
        assert_eq!(receipt.disposition, Disposition::Unmatched);
    }
    let early = ["k-early-1", "k-early-2"]
        .map(|key| NewSubmission::new("lab", "order", json!({ "key": key })).idempotency_key(key));
    store.enqueue_batch(early.to_vec()).await.unwrap();
    let leases = store
        .claim(ClaimRequest::new("lab", 2, Duration::from_secs(60)).at(store.now()))
        .await
        .unwrap();
    let finished = leases
        .into_iter()
        .map(|lease| {
            let reference = format!("R-{}", lease.submission.idempotency_key);
            FinishedAttempt::new(
                lease,
                AttemptReport::new(AttemptOutcome::Accepted),
                StateChange::to(SubmissionState::AwaitingResult).external_ref(reference),
            )
        })
        .collect();
    for answer in store.complete_batch(finished).await.unwrap() {
        assert_eq!(answer.unwrap().state, SubmissionState::Succeeded);
    }
    let now = Utc::now();
    liaison.health(Duration::from_secs(3600)).await.unwrap();
    // Expected traffic of both kinds is counted.
    for expected in [
        ExpectedTraffic::finished(1000),
        ExpectedTraffic::callbacks(1000),
    ] {
        store
            .stats(&StatsQuery::new(Duration::from_secs(3600)).expected_traffic("lab", expected))
            .await
            .unwrap();
    }
    store
        .stats(&StatsQuery {
            now,
            window: Duration::from_secs(3600),
            partners: vec!["lab".into()],
            delay_budgets: [("lab".to_owned(), Duration::from_secs(60))].into(),
            expected_traffic: BTreeMap::new(),
            deadline_lead_times: [("lab".to_owned(), Duration::from_secs(3600))].into(),
        })
        .await
        .unwrap();
    for filter in [
        ListFilter::default().limit(50),
        ListFilter::default()
            .partner("lab")
            .state(SubmissionState::AwaitingResult)
            .limit(50),
        ListFilter::default()
            .state(SubmissionState::DeadLettered)
            .limit(50),
        // Several states, with and without a partner (the ops page's
        // problems: failed and dead-lettered).
        ListFilter::default()
            .partner("lab")
            .state(SubmissionState::Failed)
            .state(SubmissionState::DeadLettered)
            .limit(50),
        ListFilter::default()
            .state(SubmissionState::Failed)
            .state(SubmissionState::DeadLettered)
            .limit(50)
            .without_payload(),
        // The ops page's lists, without payloads.
        ListFilter::default()
            .state(SubmissionState::Stuck)
            .limit(50)
            .without_payload(),
        // The host's own keys, alone and with the other filters.
        ListFilter::default()
            .correlation("order_no", "SO-1")
            .limit(2),
        ListFilter::default()
            .partner("lab")
            .state(SubmissionState::AwaitingResult)
            .correlation("order_no", "SO-1")
            .limit(2),
        // The ops page's search: a key, the partner's reference or a
        // correlation value under any field name, with no partner.
        ListFilter::default()
            .idempotency_key("k-1")
            .without_payload()
            .limit(100),
        ListFilter::default()
            .external_ref("R-k-1")
            .without_payload()
            .limit(100),
        ListFilter::default()
            .correlation_value("SO-1")
            .without_payload()
            .limit(100),
        // A partner's submissions created in a window (8g).
        ListFilter::default()
            .partner("lab")
            .created_from(Utc::now() - chrono::Duration::hours(1))
            .without_payload()
            .limit(50),
        // Changes since a time, alone and with the other filters.
        ListFilter::default()
            .updated_since(Utc::now() - chrono::Duration::minutes(5))
            .limit(3),
        ListFilter::default()
            .partner("lab")
            .state(SubmissionState::AwaitingResult)
            .updated_since(Utc::now() - chrono::Duration::minutes(5))
            .without_payload()
            .limit(3),
    ] {
        let page = store.list(&filter).await.unwrap();
        if let Some(last) = page.last() {
            store
                .list(&ListFilter {
                    after: Some(last.id),
                    ..filter.clone()
                })
                .await
                .unwrap();
        }
    }
    // Open work by nearest business deadline (no paging by enqueue order).
    for filter in [
        ListFilter::default().by_deadline().limit(10),
        ListFilter::default()
            .partner("lab")
            .by_deadline()
            .without_payload()
            .limit(10),
    ] {
        store.list(&filter).await.unwrap();
    }
    let any = store.list(&ListFilter::default().limit(1)).await.unwrap()[0].id;
    store.get(any).await.unwrap();
    store.get_by_key("lab", "k-1").await.unwrap();
    assert!(
        store
            .get_by_key("lab", "nobody")
            .await
            .unwrap_err()
            .is_not_found()
    );
    store.timeline(any).await.unwrap();
    store.attempts(any).await.unwrap();
    store
        .list_callbacks(&CallbackFilter::quarantined())
        .await
        .unwrap();
    store
        .list_callbacks(&CallbackFilter::default())
        .await
        .unwrap();
    store
        .list_callbacks(&CallbackFilter::default().without_body())
        .await
        .unwrap();
    // A submission's callbacks (its page on the ops desk).
    store
        .list_callbacks(&CallbackFilter::default().submission_id(any))
        .await
        .unwrap();
    // The ops page's chart.
    store
        .hourly_counts(&HourlyQuery::new(
            "lab",
            now - chrono::Duration::hours(23),
            24,
            now,
        ))
        .await
        .unwrap();
    store
        .reap_expired_leases(now, &crate::store::ReapPolicy::default())
        .await
        .unwrap();
    store.overdue_results(now, 100).await.unwrap();
    store.expire_unmatched(now).await.unwrap();
    store.alerts(true, 100).await.unwrap();
    // Result deliveries: claimed, ended, listed.
    let leases = store
        .claim_deliveries(DeliveryClaim::new(
            vec!["lab".into()],
            10,
            Duration::from_secs(30),
        ))
        .await
        .unwrap();
    assert!(!leases.is_empty(), "the workload finished nothing");
    store
        .finish_delivery(&leases[0], DeliveryEnd::Delivered)
        .await
        .unwrap();
    store
        .deliveries(&DeliveryFilter::default().state(DeliveryState::Pending))
        .await
        .unwrap();
    // Retention, with a cutoff that reaches everything finished.
    let purged = store
        .purge((now + chrono::Duration::days(1)).into())
        .await
        .unwrap();
    assert!(
        purged.payloads > 0,
        "the workload purged nothing: {purged:?}"
    );
}
