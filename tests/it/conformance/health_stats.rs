//! Health statistics: counts by state kept exact by the store, outcomes in
//! a window, latency samples, work past its delay budget.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::callback::Disposition;
use liaison::store::{
    AttemptReport, ClaimRequest, ListFilter, NewCallback, PartnerStats, Replay, StateChange,
    StatsQuery, Totals,
};
use liaison::{Actor, AttemptOutcome, NewSubmission, SubmissionState};

use super::harness::{Harness, LEASE, Store, claim_one, submission};

/// A time truncated to what the stores keep (milliseconds).
pub fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap()
}

fn worth(partner: &str, key: &str, cents: i64) -> NewSubmission {
    submission(partner, key).business_value(cents)
}

fn query(now: DateTime<Utc>, partners: &[&str]) -> StatsQuery {
    StatsQuery::new(Duration::from_secs(3600))
        .at(now)
        .partners(partners.iter().copied())
}

async fn stats_of(store: &Store, partner: &str) -> PartnerStats {
    let mut all = store.stats(&query(Utc::now(), &[partner])).await.unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

/// Counts and values by state, recounted from every submission of `partner`.
async fn recount(store: &Store, partner: &str) -> BTreeMap<SubmissionState, Totals> {
    let mut out: BTreeMap<SubmissionState, Totals> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .list(&{
                let mut filter = ListFilter::default()
                    .partner(partner)
                    .limit(ListFilter::MAX_LIMIT);
                filter.after = after;
                filter
            })
            .await
            .unwrap();
        for s in &page {
            let t = out.entry(s.state).or_default();
            t.count += 1;
            t.value.add(s.currency, s.business_value.unwrap_or(0));
        }
        match page.last() {
            Some(last) => after = Some(last.id),
            None => return out,
        }
    }
}

/// The store's counts for `partner` are exactly `expected`, and match a
/// recount of its submissions.
async fn assert_counts(
    h: &Harness,
    store: &Store,
    partner: &str,
    expected: &[(SubmissionState, u64, i64)],
) {
    let expected: BTreeMap<_, _> = expected
        .iter()
        .map(|&(s, count, value)| (s, Totals::of(count, None, value)))
        .collect();
    let name = h.name();
    let by_state = stats_of(store, partner).await.by_state;
    assert_eq!(by_state, expected, "{name}: counts of {partner}");
    assert_eq!(
        recount(store, partner).await,
        expected,
        "{name}: recount of {partner}"
    );
}

pub async fn state_counts_stay_exact_through_transitions(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    assert!(
        store
            .stats(&query(Utc::now(), &[]))
            .await
            .unwrap()
            .is_empty()
    );

    let batch = vec![
        worth("bank", "a", 100),
        worth("bank", "b", 200),
        worth("bank", "c", 300),
        submission("lab", "x"),
    ];
    store.enqueue_batch(batch).await.unwrap();
    assert_counts(h, &store, "bank", &[(Queued, 3, 600)]).await;
    assert_counts(h, &store, "lab", &[(Queued, 1, 0)]).await;

    // A deduplicated enqueue counts nothing.
    assert!(
        store
            .enqueue(worth("bank", "a", 100))
            .await
            .unwrap()
            .deduplicated
    );
    assert_counts(h, &store, "bank", &[(Queued, 3, 600)]).await;

    // Claimed in enqueue order: a and b.
    let leases = store
        .claim(ClaimRequest::new("bank", 2, LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(leases.len(), 2);
    assert_counts(h, &store, "bank", &[(Queued, 1, 300), (InFlight, 2, 300)]).await;

    let a = leases[0].submission.id;
    store
        .complete(
            &leases[0],
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(AwaitingResult),
        )
        .await
        .unwrap();
    store
        .complete(
            &leases[1],
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(Succeeded),
        )
        .await
        .unwrap();
    assert_counts(
        h,
        &store,
        "bank",
        &[
            (Queued, 1, 300),
            (AwaitingResult, 1, 100),
            (Succeeded, 1, 200),
        ],
    )
    .await;

    store.transition(a, StateChange::to(Stuck)).await.unwrap();
    store
        .transition(a, StateChange::to(ResolvedManually))
        .await
        .unwrap();
    let c = store
        .list(&ListFilter::default().state(Queued))
        .await
        .unwrap();
    let c = c.iter().find(|s| s.partner == "bank").unwrap().id;
    store
        .transition(c, StateChange::to(Cancelled))
        .await
        .unwrap();
    assert_counts(
        h,
        &store,
        "bank",
        &[
            (Succeeded, 1, 200),
            (ResolvedManually, 1, 100),
            (Cancelled, 1, 300),
        ],
    )
    .await;

    // lab: a lease that expires goes back to the queue, fails, is replayed.
    let lease = claim_one(&store, "lab").await;
    assert_counts(h, &store, "lab", &[(InFlight, 1, 0)]).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let reaped = store
        .reap_expired_leases(later, &liaison::store::ReapPolicy::default())
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].id, lease.submission.id);
    assert_counts(h, &store, "lab", &[(Queued, 1, 0)]).await;
    // Due again when it was reaped.
    let lease = store
        .claim(ClaimRequest::new("lab", 1, LEASE).at(later))
        .await
        .unwrap()
        .remove(0);
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Failed),
            StateChange::to(Failed),
        )
        .await
        .unwrap();
    assert_counts(h, &store, "lab", &[(Failed, 1, 0)]).await;
    store
        .replay(
            lease.submission.id,
            Replay::new(Actor::person("ops"), "fixed"),
        )
        .await
        .unwrap();
    assert_counts(h, &store, "lab", &[(Queued, 1, 0)]).await;

    // A refused change counts nothing.
    assert!(
        store
            .transition(c, StateChange::to(Queued))
            .await
            .unwrap_err()
            .is_invalid_transition()
    );
    assert_counts(
        h,
        &store,
        "bank",
        &[
            (Succeeded, 1, 200),
            (ResolvedManually, 1, 100),
            (Cancelled, 1, 300),
        ],
    )
    .await;

    // Every partner the store knows, in byte order; a partner whose work all
    // moved on is still listed.
    store.enqueue(worth("Zed", "z", 5)).await.unwrap();
    let all = store.stats(&query(Utc::now(), &[])).await.unwrap();
    let names: Vec<&str> = all.iter().map(|p| p.partner.as_str()).collect();
    assert_eq!(names, ["Zed", "bank", "lab"], "{}", h.name());
    // An unknown partner asked for by name has empty statistics.
    let nobody = stats_of(&store, "nobody").await;
    let mut empty = PartnerStats::default();
    empty.partner = "nobody".into();
    empty.deadlines.lead_time_secs = 24 * 3600; // the default lead time
    assert_eq!(nobody, empty);
}

pub async fn counts_stay_exact_under_concurrent_writers(h: &Harness) {
    use SubmissionState::*;
    const N: i64 = 120;
    let first = h.store().await;
    let second = h.store().await;
    let batch = (0..N)
        .map(|i| worth("bank", &format!("k{i}"), i + 1))
        .collect();
    first.enqueue_batch(batch).await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = if worker % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            loop {
                let leases = store
                    .claim(ClaimRequest::new("bank", 5, LEASE).at(store.now()))
                    .await
                    .unwrap();
                if leases.is_empty() {
                    return;
                }
                for lease in leases {
                    let n = lease.submission.business_value.unwrap();
                    // A first attempt of every fourth is retried.
                    let (outcome, target) = match n % 4 {
                        0 if lease.attempt == 1 => (AttemptOutcome::Transient, Queued),
                        0 | 1 => (AttemptOutcome::Succeeded, Succeeded),
                        2 => (AttemptOutcome::Accepted, AwaitingResult),
                        _ => (AttemptOutcome::Failed, Failed),
                    };
                    store
                        .complete(&lease, AttemptReport::new(outcome), StateChange::to(target))
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let value = |r: i64| (1..=N).filter(|n| n % 4 == r).sum::<i64>();
    let count = |r: i64| (1..=N).filter(|n| n % 4 == r).count() as u64;
    let expected = [
        (Succeeded, count(0) + count(1), value(0) + value(1)),
        (AwaitingResult, count(2), value(2)),
        (Failed, count(3), value(3)),
    ];
    assert_counts(h, &first, "bank", &expected).await;
    assert_counts(h, &second, "bank", &expected).await;
}

pub async fn windows_give_outcomes_latencies_and_work_past_budget(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let base = ms(Utc::now());
    let at = |minutes: i64| base + chrono::Duration::minutes(minutes);
    // Claim the only queued one and report it at a given time.
    let finish = |key: &'static str, outcome, target, minutes| {
        let store = store.clone();
        async move {
            let id = store.enqueue(worth("bank", key, 10)).await.unwrap();
            let lease = claim_one(&store, "bank").await;
            assert_eq!(lease.submission.id, id.submission.id);
            store
                .complete(
                    &lease,
                    AttemptReport::new(outcome),
                    StateChange::to(target).at(at(minutes)),
                )
                .await
                .unwrap()
        }
    };
    let s1 = finish("s1", AttemptOutcome::Succeeded, Succeeded, 90).await;
    let s2 = finish("s2", AttemptOutcome::Accepted, AwaitingResult, 70).await;
    store
        .transition(s2.id, StateChange::to(Succeeded).at(at(80)))
        .await
        .unwrap();
    finish("s3", AttemptOutcome::Failed, Failed, 30).await;
    finish("s4", AttemptOutcome::Permanent, DeadLettered, 100).await;
    let s7 = finish("s7", AttemptOutcome::Accepted, AwaitingResult, 50).await;
    for (key, minutes) in [("s5", 119), ("s6", 120)] {
        let id = store.enqueue(worth("bank", key, 10)).await.unwrap();
        store
            .transition(id.submission.id, StateChange::to(Cancelled).at(at(minutes)))
            .await
            .unwrap();
    }
    let s8 = store
        .enqueue(worth("bank", "s8", 80))
        .await
        .unwrap()
        .submission;
    store.enqueue(worth("lab", "l1", 5)).await.unwrap();
    let callback = |minutes, disposition| {
        NewCallback::new("bank", Vec::new())
            .without_body()
            .received_at(at(minutes))
            .body_hash(format!("h{minutes}"))
            .disposition(disposition, None)
    };
    for (minutes, disposition) in [
        (10, Disposition::Received),
        (90, Disposition::Received),
        (95, Disposition::TooLarge),
        (120, Disposition::Received),
    ] {
        store
            .record_callback(callback(minutes, disposition))
            .await
            .unwrap();
    }

    // The window is [base + 60 min, base + 120 min), the one before it
    // [base, base + 60 min).
    let mut q = query(at(120), &[]);
    q.delay_budgets.insert("bank".into(), Duration::ZERO);
    q.delay_budgets
        .insert("lab".into(), Duration::from_secs(3 * 3600));
    let all = store.stats(&q).await.unwrap();
    let name = h.name();
    assert_eq!(all.len(), 2, "{name}");
    let bank = &all[0];
    assert_eq!(bank.partner, "bank");
    let outcomes = |pairs: &[(SubmissionState, u64)]| pairs.iter().copied().collect();
    assert_eq!(
        bank.window.by_state,
        outcomes(&[(Succeeded, 2), (DeadLettered, 1), (Cancelled, 1)]),
        "{name}: ended in the window (not at its end)"
    );
    assert_eq!(bank.previous.by_state, outcomes(&[(Failed, 1)]), "{name}");
    let created = |s: &liaison::Submission| s.created_at;
    assert_eq!(
        bank.enqueue_to_accepted_ms,
        [
            (at(90) - created(&s1)).num_milliseconds(),
            (at(70) - created(&s2)).num_milliseconds(),
        ],
        "{name}: accepted in the window, latest first"
    );
    assert_eq!(
        bank.accepted_to_result_ms,
        [0, 600_000],
        "{name}: settled in the window, latest first"
    );
    assert_eq!(bank.oldest_queued_at, Some(s8.created_at));
    assert_eq!(
        bank.past_delay_budget,
        Totals::of(2, None, 90),
        "{name}: the awaiting s7 and the queued s8"
    );
    assert_eq!(s7.state, AwaitingResult);
    assert_eq!(
        bank.callbacks,
        [(Disposition::Received, 1), (Disposition::TooLarge, 1)]
            .into_iter()
            .collect(),
        "{name}"
    );
    assert_eq!(
        bank.by_state,
        [
            (Succeeded, 2),
            (Failed, 1),
            (DeadLettered, 1),
            (Cancelled, 2),
            (AwaitingResult, 1),
            (Queued, 1),
        ]
        .into_iter()
        .map(|(s, n)| {
            let value = if s == Queued { 80 } else { 10 * n as i64 };
            (s, Totals::of(n, None, value))
        })
        .collect(),
        "{name}"
    );

    let lab = &all[1];
    assert_eq!(lab.partner, "lab");
    assert_eq!(
        lab.past_delay_budget,
        Totals::default(),
        "{name}: in budget"
    );
    assert_eq!(lab.window.total(), 0);
    assert!(lab.enqueue_to_accepted_ms.is_empty());
}

/// 2^53, the largest business value accepted (a JSON-safe integer).
const VALUE_CAP: i64 = 9_007_199_254_740_992;

pub async fn business_values_at_the_cap_sum_exactly_and_above_it_are_refused(h: &Harness) {
    let store = h.store().await;
    for key in ["cap-1", "cap-2"] {
        store.enqueue(worth("rich", key, VALUE_CAP)).await.unwrap();
    }
    assert_counts(
        h,
        &store,
        "rich",
        &[(SubmissionState::Queued, 2, 2 * VALUE_CAP)],
    )
    .await;
    // Above the cap: refused, nothing written.
    for too_much in [VALUE_CAP + 1, i64::MAX] {
        match store.enqueue(worth("rich", "over", too_much)).await {
            Err(liaison::Error::InvalidInput { field, .. }) => {
                assert_eq!(field, "business_value", "{}", h.name())
            }
            other => panic!("{}: {too_much} was not refused: {other:?}", h.name()),
        }
    }
    let all = store
        .list(&ListFilter::default().partner("rich"))
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{}: nothing written above the cap", h.name());
    // Health, metrics and alerts read the same sums.
    let liaison = liaison::Liaison::builder_arc(store.clone())
        .build()
        .unwrap();
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();
    let rich = report
        .partners
        .iter()
        .find(|p| p.partner == "rich")
        .unwrap();
    assert_eq!(
        rich.by_state.get(&SubmissionState::Queued),
        Some(&Totals::of(2, None, 2 * VALUE_CAP))
    );
    let metrics = liaison.metrics().render(&report);
    assert!(metrics.contains("liaison_value_at_risk"), "{metrics}");
    liaison.evaluate_alerts().await.unwrap();
}
