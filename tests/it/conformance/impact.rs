//! Impact in business terms: values summed per currency and never across,
//! value at risk by kind and by age, business deadlines near and missed,
//! bad currencies and deadlines refused; and through the engine, the
//! "business deadline at risk" alert opening before the breach and
//! resolving when the work is resolved.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use liaison::ops::alerts::ProblemClass;
use liaison::store::{
    AgeBand, AttemptReport, ClaimRequest, ListFilter, PurgeCutoffs, Replay, StateChange,
    StatsQuery, Totals,
};
use liaison::testing::{Behavior, MockPartner};
use liaison::{
    Actor, AttemptOutcome, Currency, HttpJsonAdapter, Liaison, Money, NewSubmission, Outcome,
    Partner, SubmissionState,
};

use super::harness::{Harness, LEASE, Store, submission};

fn cur(code: &str) -> Option<Currency> {
    Some(Currency::from_code(code).unwrap())
}

fn of(kind: &str, key: &str) -> NewSubmission {
    NewSubmission::new("clinic", kind, serde_json::json!({ "k": key })).idempotency_key(key)
}

/// Counts and values by state, recounted from every submission of `partner`.
async fn recount(store: &Store, partner: &str) -> BTreeMap<SubmissionState, Totals> {
    let mut out: BTreeMap<SubmissionState, Totals> = BTreeMap::new();
    let page = store
        .list(
            &ListFilter::default()
                .partner(partner)
                .limit(ListFilter::MAX_LIMIT)
                .without_payload(),
        )
        .await
        .unwrap();
    for s in &page {
        out.entry(s.state).or_default().add(&Totals::of(
            1,
            s.currency,
            s.business_value.unwrap_or(0),
        ));
    }
    out
}

async fn by_state(store: &Store, partner: &str) -> BTreeMap<SubmissionState, Totals> {
    let all = store
        .stats(&StatsQuery::new(Duration::from_secs(3600)).partner(partner))
        .await
        .unwrap();
    all.into_iter().next().unwrap().by_state
}

pub async fn values_are_summed_per_currency_and_split_by_kind_and_age(h: &Harness) {
    use SubmissionState::*;
    let name = h.name();
    let store = h.store().await;
    store
        .enqueue_batch(vec![
            of("claim", "c1").business_value_in(10_000, "EUR"),
            of("claim", "c2").business_value_in(15_000, "EUR"),
            of("order", "o1").business_value_in(1_000, "USD"),
            of("claim", "c3").business_value(500),
            of("claim", "c4").business_value_in(12_500, "JPY"),
        ])
        .await
        .unwrap();
    let queued = by_state(&store, "clinic").await;
    let q = &queued[&Queued];
    assert_eq!(q.count, 5, "{name}");
    assert_eq!(
        q.value,
        Money::default()
            .plus(cur("EUR"), 25_000)
            .plus(cur("USD"), 1_000)
            .plus(cur("JPY"), 12_500)
            .plus(None, 500),
        "{name}: one sum per currency, the unspecified apart"
    );
    assert_eq!(
        q.value.to_string(),
        "EUR 250.00 + JPY 12500 + USD 10.00 + 5.00 (currency unspecified)"
    );

    // c1 and o1 dead-lettered, c2 succeeded, c3 failed; c4 stays queued.
    let leases = store
        .claim(ClaimRequest::new("clinic", 4, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 4, "{name}");
    for (lease, (outcome, to)) in leases.iter().zip([
        (AttemptOutcome::Permanent, DeadLettered),
        (AttemptOutcome::Succeeded, Succeeded),
        (AttemptOutcome::Permanent, DeadLettered),
        (AttemptOutcome::Failed, Failed),
    ]) {
        store
            .complete(lease, AttemptReport::new(outcome), StateChange::to(to))
            .await
            .unwrap();
    }
    let counts = by_state(&store, "clinic").await;
    assert_eq!(counts, recount(&store, "clinic").await, "{name}: exact");
    assert_eq!(
        counts[&DeadLettered],
        Totals {
            count: 2,
            value: Money::default()
                .plus(cur("EUR"), 10_000)
                .plus(cur("USD"), 1_000),
        },
        "{name}: EUR and USD in one state, never added together"
    );

    // At risk now: c1 (claim, EUR), o1 (order, USD), c3 (claim, unspecified),
    // all enqueued under an hour ago.
    let now = Utc::now();
    let stats = |at, budget: Option<Duration>| {
        let store = store.clone();
        async move {
            let mut q = StatsQuery::new(Duration::from_secs(3600))
                .at(at)
                .partner("clinic");
            if let Some(budget) = budget {
                q = q.delay_budget("clinic", budget);
            }
            store.stats(&q).await.unwrap().remove(0).at_risk
        }
    };
    let risk = stats(now, None).await;
    assert_eq!(risk.total.count, 3, "{name}");
    assert_eq!(
        risk.total.value,
        Money::default()
            .plus(cur("EUR"), 10_000)
            .plus(cur("USD"), 1_000)
            .plus(None, 500),
        "{name}"
    );
    assert_eq!(
        risk.by_kind["claim"].value,
        Money::default().plus(cur("EUR"), 10_000).plus(None, 500),
        "{name}"
    );
    assert_eq!(risk.by_kind["claim"].count, 2, "{name}");
    assert_eq!(
        risk.by_kind["order"],
        Totals::of(1, cur("USD"), 1_000),
        "{name}"
    );
    assert_eq!(
        risk.by_age.keys().copied().collect::<Vec<_>>(),
        [AgeBand::UnderHour],
        "{name}"
    );
    // The same rows seen later fall in the older bands.
    for (later, band) in [
        (chrono::Duration::hours(2), AgeBand::UnderDay),
        (chrono::Duration::days(2), AgeBand::UnderWeek),
        (chrono::Duration::days(8), AgeBand::Older),
    ] {
        let risk = stats(now + later, None).await;
        assert_eq!(
            risk.by_age.keys().copied().collect::<Vec<_>>(),
            [band],
            "{name}: {later}"
        );
        assert_eq!(risk.by_age[&band].count, 3, "{name}");
    }
    // Past a 1 h delay budget two hours on, the queued JPY claim is at risk too.
    let risk = stats(
        now + chrono::Duration::hours(2),
        Some(Duration::from_secs(3600)),
    )
    .await;
    assert_eq!(risk.total.count, 4, "{name}");
    assert_eq!(risk.total.value.get(cur("JPY")), 12_500, "{name}");
    assert_eq!(risk.by_kind["claim"].count, 3, "{name}");

    // Replays and retention keep the counters exact.
    store
        .replay(
            leases[0].submission.id,
            Replay::new(Actor::person("ops"), "fixed the claim"),
        )
        .await
        .unwrap();
    let far = Utc::now() + chrono::Duration::days(365);
    store.purge(PurgeCutoffs::new(far, far)).await.unwrap();
    let counts = by_state(&store, "clinic").await;
    assert_eq!(counts, recount(&store, "clinic").await, "{name}: exact");
    assert_eq!(
        counts[&Queued].value,
        Money::default()
            .plus(cur("EUR"), 10_000)
            .plus(cur("JPY"), 12_500),
        "{name}: the replayed EUR claim is queued again with its currency"
    );
    assert_eq!(
        counts[&DeadLettered],
        Totals::of(1, cur("USD"), 1_000),
        "{name}"
    );
}

pub async fn business_deadlines_are_reported_near_and_missed(h: &Harness) {
    use SubmissionState::*;
    let name = h.name();
    let store = h.store().await;
    let now = Utc::now();
    let in_hours = |h: i64| now + chrono::Duration::hours(h);
    store
        .enqueue_batch(vec![
            of("claim", "soon")
                .business_value_in(25_000, "EUR")
                .business_deadline(in_hours(2)),
            of("claim", "later")
                .business_value_in(1_000, "EUR")
                .business_deadline(in_hours(30)),
            of("claim", "done")
                .business_value_in(7_000, "EUR")
                .business_deadline(in_hours(1)),
            of("claim", "none").business_value_in(3_000, "EUR"),
        ])
        .await
        .unwrap();
    // "done" (third) succeeds: finished work is never at risk.
    let leases = store
        .claim(ClaimRequest::new("clinic", 3, LEASE).at(store.now()))
        .await
        .unwrap();
    store
        .complete(
            &leases[2],
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(Succeeded),
        )
        .await
        .unwrap();
    store
        .complete(
            &leases[0],
            AttemptReport::new(AttemptOutcome::Permanent),
            StateChange::to(DeadLettered),
        )
        .await
        .unwrap();
    let deadlines = |at, lead: Duration| {
        let store = store.clone();
        async move {
            store
                .stats(
                    &StatsQuery::new(Duration::from_secs(3600))
                        .at(at)
                        .partner("clinic")
                        .deadline_lead_time("clinic", lead),
                )
                .await
                .unwrap()
                .remove(0)
                .deadlines
        }
    };
    let day = Duration::from_secs(24 * 3600);
    let d = deadlines(now, day).await;
    assert_eq!(
        d.at_risk,
        Totals::of(1, cur("EUR"), 25_000),
        "{name}: the dead-lettered claim due in 2 h; not the finished one, not the one due in 30 h"
    );
    assert_eq!(d.missed, Totals::default(), "{name}");
    assert_eq!(d.lead_time_secs, 24 * 3600);
    // Three hours on, it missed its deadline; a 30 h lead sees the other too.
    let d = deadlines(in_hours(3), Duration::from_secs(30 * 3600)).await;
    assert_eq!(d.missed, Totals::of(1, cur("EUR"), 25_000), "{name}");
    assert_eq!(d.at_risk, Totals::of(1, cur("EUR"), 1_000), "{name}");

    // Listed by nearest deadline: open work with a deadline only.
    let keys = |list: Vec<liaison::Submission>| -> Vec<String> {
        list.into_iter().map(|s| s.idempotency_key).collect()
    };
    let nearest = store
        .list(&ListFilter::default().by_deadline().without_payload())
        .await
        .unwrap();
    assert_eq!(keys(nearest), ["soon", "later"], "{name}");
    // A page by deadline goes on after the given submission's deadline.
    let first = store
        .list(&ListFilter::default().by_deadline().limit(1))
        .await
        .unwrap();
    let next = store
        .list(&ListFilter::default().by_deadline().after(first[0].id))
        .await
        .unwrap();
    assert_eq!(keys(first), ["soon"], "{name}");
    assert_eq!(keys(next), ["later"], "{name}");

    // Replay keeps the deadline (and the currency).
    let replayed = store
        .replay(
            leases[0].submission.id,
            Replay::new(Actor::person("ops"), "resend"),
        )
        .await
        .unwrap();
    let again = store.get(replayed.id).await.unwrap();
    assert_eq!(again.state, Queued, "{name}");
    assert_eq!(
        again.business_deadline.map(|d| d.timestamp_millis()),
        Some(in_hours(2).timestamp_millis()),
        "{name}"
    );
    assert_eq!(again.currency, cur("EUR"), "{name}");
}

pub async fn bad_currencies_and_deadlines_store_nothing(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let past = Utc::now() - chrono::Duration::seconds(1);
    for (bad, field) in [
        (
            submission("p", "a").business_value_in(100, "eur"),
            "currency",
        ),
        (
            submission("p", "b").business_value_in(100, "EURO"),
            "currency",
        ),
        (
            submission("p", "c").business_value_in(100, "XYZ"),
            "currency",
        ),
        (submission("p", "d").business_value_in(100, "€"), "currency"),
        (submission("p", "e").currency(""), "currency"),
        (
            submission("p", "f").business_deadline(past),
            "business_deadline",
        ),
    ] {
        match store.enqueue(bad.clone()).await {
            Err(liaison::Error::InvalidInput { field: f, .. }) => assert_eq!(f, field, "{name}"),
            other => panic!("{name}: {bad:?} was not refused: {other:?}"),
        }
        // In a batch too, and the good item beside it is not stored either.
        let batch = vec![submission("p", "good"), bad];
        assert!(store.enqueue_batch(batch).await.is_err(), "{name}");
    }
    assert!(
        store
            .list(&ListFilter::default().partner("p"))
            .await
            .unwrap()
            .is_empty(),
        "{name}: nothing stored"
    );
    assert!(
        store
            .stats(&StatsQuery::new(Duration::from_secs(60)).partner("p"))
            .await
            .unwrap()
            .iter()
            .all(|s| s.by_state.is_empty()),
        "{name}: nothing counted"
    );
}

/// Through the engine over the mock partner: a claim the partner refuses
/// for good, due in 2 h, opens "business deadline at risk" before the
/// breach; it stays open while the claim is open and resolves once it is
/// resolved by hand. A claim whose deadline passes is reported as missed.
pub async fn a_deadline_alert_opens_before_the_breach_and_resolves_with_the_work(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let mock = MockPartner::start_with(Behavior::reject(422))
        .await
        .unwrap();
    let adapter = HttpJsonAdapter::new(&mock.submit_url()).unwrap();
    let liaison = Liaison::builder_arc(store.clone())
        .partner(Partner::new("clinic", adapter).deadline_lead_time(Duration::from_secs(6 * 3600)))
        .build()
        .unwrap();
    let due = Utc::now() + chrono::Duration::hours(2);
    let claim = liaison
        .enqueue(
            of("claim", "C-1")
                .business_value_in(25_000, "EUR")
                .business_deadline(due),
        )
        .await
        .unwrap()
        .submission;
    liaison.run_until_idle().await.unwrap();
    assert_eq!(
        liaison.get(claim.id).await.unwrap().state,
        SubmissionState::DeadLettered,
        "{name}"
    );
    let open_classes = || async {
        liaison
            .alerts(true)
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.partner == "clinic")
            .map(|a| (a.class, a.details))
            .collect::<BTreeMap<_, _>>()
    };
    liaison.evaluate_alerts().await.unwrap();
    let open = open_classes().await;
    assert_eq!(
        open.get(&ProblemClass::BusinessDeadlineAtRisk)
            .map(String::as_str),
        Some("1 submission(s) will miss their business deadline within 6 h (EUR 250.00)"),
        "{name}: open before the breach: {open:?}"
    );
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
    let clinic = report
        .partners
        .iter()
        .find(|p| p.partner == "clinic")
        .unwrap();
    assert!(
        clinic
            .reasons
            .iter()
            .any(|r| r.contains("will miss their business deadline within 6 h")),
        "{name}: {:?}",
        clinic.reasons
    );
    assert_eq!(clinic.at_risk.value.get(cur("EUR")), 25_000, "{name}");
    let metrics = liaison.metrics().render(&report);
    assert!(
        metrics.contains("liaison_business_deadline_at_risk{partner=\"clinic\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("liaison_value_at_risk{partner=\"clinic\",currency=\"EUR\"} 25000"),
        "{metrics}"
    );

    // Still open on the next evaluation; resolved by hand, it resolves.
    liaison.evaluate_alerts().await.unwrap();
    assert!(
        open_classes()
            .await
            .contains_key(&ProblemClass::BusinessDeadlineAtRisk)
    );
    liaison
        .resolve_manually(
            claim.id,
            Outcome::succeeded(),
            Actor::person("billing"),
            "filed through the portal",
        )
        .await
        .unwrap();
    liaison.evaluate_alerts().await.unwrap();
    assert!(
        !open_classes()
            .await
            .contains_key(&ProblemClass::BusinessDeadlineAtRisk),
        "{name}: resolved with the work"
    );

    // A deadline that passes while the work is open is reported as missed.
    let soon = Utc::now() + chrono::Duration::milliseconds(300);
    liaison
        .enqueue(
            of("claim", "C-2")
                .business_value_in(1_000, "EUR")
                .business_deadline(soon),
        )
        .await
        .unwrap();
    liaison.run_until_idle().await.unwrap();
    let mut missed = 0;
    for _ in 0..200 {
        let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
        let clinic = report
            .partners
            .iter()
            .find(|p| p.partner == "clinic")
            .unwrap();
        missed = clinic.deadlines.missed.count;
        if missed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(missed, 1, "{name}: the deadline passed with the claim open");
    liaison.evaluate_alerts().await.unwrap();
    let open = open_classes().await;
    assert_eq!(
        open.get(&ProblemClass::BusinessDeadlineAtRisk)
            .map(String::as_str),
        Some("1 open submission(s) already missed their business deadline (EUR 10.00)"),
        "{name}: {open:?}"
    );
}
