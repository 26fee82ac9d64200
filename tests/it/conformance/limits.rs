//! A partner's limits hold for every claimer of the store: concurrency
//! counted from live leases, one rate budget on the partner's row, both
//! decided in the claim's transaction. Two store instances stand for two
//! host processes (on SQLite, two writers on one file).

use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::store::{AttemptReport, ClaimRequest, Limited, PartnerLimits, Rate, StateChange};
use liaison::{AttemptOutcome, SubmissionState};

use super::harness::{Harness, LEASE, Store, submission};

async fn enqueue(store: &Store, partner: &str, n: usize) {
    let batch = (0..n)
        .map(|i| submission(partner, &format!("{partner}-{i}")))
        .collect();
    store.enqueue_batch(batch).await.unwrap();
}

/// A time after everything enqueued just now is due, on every clock.
/// In whole milliseconds, as stores keep times.
fn soon() -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::seconds(5);
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

/// Report a lease's attempt as succeeded.
async fn succeed(store: &Store, lease: &liaison::store::Lease) {
    store
        .complete(
            lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
}

fn concurrency(n: u32) -> PartnerLimits {
    PartnerLimits::none().concurrency(n)
}

pub async fn concurrency_counts_the_live_leases_of_every_claimer(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    enqueue(&stores[0], "bank", 30).await;
    let t0 = soon();
    let ask = |n| {
        ClaimRequest::new("bank", n, LEASE)
            .at(t0)
            .limits(concurrency(4))
    };

    let first = stores[0].claim_limited(ask(3)).await.unwrap();
    assert_eq!(first.leases.len(), 3);
    assert_eq!(first.limited, None, "three of four asked and granted");
    // The other instance gets the one slot left, and is told why not more.
    let second = stores[1].claim_limited(ask(8)).await.unwrap();
    assert_eq!(second.leases.len(), 1);
    assert_eq!(
        second.limited,
        Some(Limited::Concurrency {
            in_flight: 3,
            limit: 4
        })
    );
    let full = stores[0].claim_limited(ask(8)).await.unwrap();
    assert!(full.leases.is_empty());
    assert_eq!(
        full.limited,
        Some(Limited::Concurrency {
            in_flight: 4,
            limit: 4
        })
    );

    // One finishes: one slot, for whichever claimer asks.
    let done = &first.leases[0];
    stores[0]
        .complete(
            done,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    let after = stores[1].claim_limited(ask(8)).await.unwrap();
    assert_eq!(after.leases.len(), 1);

    // Leases that ended (their workers crashed) are not live: a claim after
    // they ended has every slot, though the reaper has not run.
    let later = t0 + chrono::Duration::from_std(LEASE).unwrap() + chrono::Duration::seconds(1);
    let fresh = stores[1]
        .claim_limited(
            ClaimRequest::new("bank", 8, LEASE)
                .at(later)
                .limits(concurrency(4)),
        )
        .await
        .unwrap();
    assert_eq!(fresh.leases.len(), 4);

    // Another partner is not held back by this one's limit.
    enqueue(&stores[0], "post", 2).await;
    let other = stores[0]
        .claim_limited(
            ClaimRequest::new("post", 8, LEASE)
                .at(later)
                .limits(concurrency(4)),
        )
        .await
        .unwrap();
    assert_eq!(other.leases.len(), 2);
    // And a claim without limits is not limited.
    let unlimited = stores[0]
        .claim(ClaimRequest::new("bank", 2, LEASE).at(later))
        .await
        .unwrap();
    assert_eq!(unlimited.len(), 2);
}

pub async fn a_freed_slot_goes_to_the_claimer_that_waits_not_back_to_its_holder(h: &Harness) {
    // Two instances (on SQLite, two writers on one file) at a concurrency
    // of 1, each naming itself and what it holds.
    let stores = [h.store().await, h.store().await];
    enqueue(&stores[0], "bank", 10).await;
    let t0 = soon();
    let ask = |who: &str, holding, at| {
        ClaimRequest::new("bank", 1, LEASE)
            .at(at)
            .limits(concurrency(1))
            .claimer(who, holding)
    };
    let a = stores[0].claim_limited(ask("a", 0, t0)).await.unwrap();
    assert_eq!(a.leases.len(), 1);
    let b = stores[1].claim_limited(ask("b", 0, t0)).await.unwrap();
    assert!(b.leases.is_empty());
    assert_eq!(
        b.limited,
        Some(Limited::Concurrency {
            in_flight: 1,
            limit: 1
        })
    );

    // A finishes and asks again at once: the slot is free, but b waits.
    succeed(&stores[0], &a.leases[0]).await;
    let t1 = t0 + chrono::Duration::milliseconds(20);
    let again = stores[0].claim_limited(ask("a", 0, t1)).await.unwrap();
    assert!(again.leases.is_empty(), "the holder does not take it back");
    assert_eq!(
        again.limited,
        Some(Limited::FairShare {
            holding: 0,
            share: 0,
            waiting: 1
        })
    );
    // A claimer that does not name itself queues behind b too.
    let anonymous = stores[0]
        .claim_limited(
            ClaimRequest::new("bank", 1, LEASE)
                .at(t1)
                .limits(concurrency(1)),
        )
        .await
        .unwrap();
    assert!(anonymous.leases.is_empty());
    let b = stores[1].claim_limited(ask("b", 0, t1)).await.unwrap();
    assert_eq!(b.leases.len(), 1, "the slot goes to the one that waited");

    // Now a waits (it was refused): when b finishes, a's turn.
    succeed(&stores[1], &b.leases[0]).await;
    let t2 = t1 + chrono::Duration::milliseconds(20);
    assert!(
        stores[1]
            .claim_limited(ask("b", 0, t2))
            .await
            .unwrap()
            .leases
            .is_empty()
    );
    let a = stores[0].claim_limited(ask("a", 0, t2)).await.unwrap();
    assert_eq!(a.leases.len(), 1);

    // A waiter that stops asking holds nobody back past its record's life
    // (a second): b waited at t2 and never came back.
    succeed(&stores[0], &a.leases[0]).await;
    let t3 = t2 + chrono::Duration::milliseconds(100);
    assert!(
        stores[0]
            .claim_limited(ask("a", 0, t3))
            .await
            .unwrap()
            .leases
            .is_empty(),
        "b's record still lives"
    );
    let t4 = t2 + chrono::Duration::milliseconds(1_100);
    let a = stores[0].claim_limited(ask("a", 0, t4)).await.unwrap();
    assert_eq!(a.leases.len(), 1, "b's record ran out");
}

pub async fn concurrent_claimers_together_never_exceed_the_concurrency(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    enqueue(&stores[0], "bank", 200).await;
    let t0 = soon();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..5 {
                let claimed = store
                    .claim_limited(
                        ClaimRequest::new("bank", 3, LEASE)
                            .at(t0)
                            .limits(concurrency(5)),
                    )
                    .await
                    .unwrap();
                got += claimed.leases.len();
            }
            got
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 5, "eight racing claimers share five slots");
    let in_flight = stores[0]
        .list(
            &liaison::store::ListFilter::default()
                .partner("bank")
                .state(SubmissionState::InFlight),
        )
        .await
        .unwrap();
    assert_eq!(in_flight.len(), 5);
}

pub async fn the_rate_budget_is_shared_by_every_claimer(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    enqueue(&stores[0], "bank", 40).await;
    let rate = Rate::per_second(10).unwrap().with_burst(10).unwrap();
    let t0 = soon();
    let at = |ms: i64| {
        ClaimRequest::new("bank", 64, LEASE)
            .at(t0 + chrono::Duration::milliseconds(ms))
            .limits(PartnerLimits::none().rate(rate))
    };

    // A fresh budget: the burst (here a period's worth), whoever asks.
    let a = stores[0].claim_limited(at(0)).await.unwrap();
    let b = stores[1].claim_limited(at(0)).await.unwrap();
    assert_eq!(a.leases.len() + b.leases.len(), 10);
    assert_eq!(a.leases.len(), 10);
    assert!(b.leases.is_empty());
    // Spent: the next attempt conforms one interval (100 ms) later.
    assert_eq!(
        b.limited.map(|l| match l {
            Limited::Rate { retry_at } => (retry_at - t0).num_milliseconds(),
            other => panic!("limited by {other:?}"),
        }),
        Some(100)
    );
    assert!(
        stores[0]
            .claim_limited(at(99))
            .await
            .unwrap()
            .leases
            .is_empty()
    );
    assert_eq!(
        stores[0].claim_limited(at(100)).await.unwrap().leases.len(),
        1
    );
    // Half a second on: five more, split however the claimers come.
    let c = stores[1].claim_limited(at(350)).await.unwrap();
    let d = stores[0].claim_limited(at(600)).await.unwrap();
    assert_eq!(c.leases.len() + d.leases.len(), 5);
    // A partner with its own budget is not held back.
    enqueue(&stores[0], "post", 3).await;
    let other = stores[1]
        .claim_limited(
            ClaimRequest::new("post", 64, LEASE)
                .at(t0)
                .limits(PartnerLimits::none().rate(rate)),
        )
        .await
        .unwrap();
    assert_eq!(other.leases.len(), 3);
}

pub async fn racing_claimers_never_overspend_the_rate(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    enqueue(&stores[0], "bank", 100).await;
    let t0 = soon();
    let rate = Rate::new(7, Duration::from_secs(60)).unwrap();
    let limits = PartnerLimits::none().rate(rate.with_burst(7).unwrap());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = stores[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..4 {
                let claimed = store
                    .claim_limited(ClaimRequest::new("bank", 2, LEASE).at(t0).limits(limits))
                    .await
                    .unwrap();
                got += claimed.leases.len();
            }
            got
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 7, "one minute's budget of seven, shared by all");
}
