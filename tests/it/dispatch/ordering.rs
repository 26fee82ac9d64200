//! Ordering keys: one at a time, in enqueue order, through failures.

use std::collections::BTreeMap;
use std::time::Duration;

use liaison::store::{OutboxStore, StateChange};
use liaison::testing::{Behavior, MockPartner};
use liaison::{Actor, EventKind, NewSubmission, SubmissionState};
use serde_json::json;

use super::{drain, engine, eventually, partner};
use crate::support;

fn keyed(order: &str, n: usize) -> NewSubmission {
    NewSubmission::new("lab", "result", json!({ "order": order, "n": n }))
        .idempotency_key(format!("{order}-{n}"))
        .ordering_key(order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ordering_key_reaches_the_partner_in_enqueue_order() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::flaky(
        2,
        Behavior::slow(Duration::from_millis(5), Behavior::Healthy),
    ))
    .await
    .unwrap();
    let liaison = engine(&store, partner("lab", &mock).concurrency(4));
    for n in 0..6 {
        for order in ["patient-1", "patient-2", "patient-3"] {
            liaison.enqueue(keyed(order, n)).await.unwrap();
        }
        liaison
            .enqueue(
                NewSubmission::new("lab", "free", json!({ "n": n }))
                    .idempotency_key(format!("free-{n}")),
            )
            .await
            .unwrap();
    }
    drain(&liaison).await;

    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for effect in mock.side_effects() {
        if let Some(order) = effect.body["order"].as_str() {
            seen.entry(order.to_owned())
                .or_default()
                .push(effect.body["n"].as_u64().unwrap());
        }
    }
    assert_eq!(seen.len(), 3);
    for (order, ns) in seen {
        assert_eq!(ns, (0..6).collect::<Vec<_>>(), "{order} out of order");
    }
    assert_eq!(mock.stats().side_effects, 24);
    assert!(
        mock.stats().requests > 24,
        "failures happened along the way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_holds_back_its_successors_until_resolved() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Reject { status: 400 })
        .await
        .unwrap();
    let liaison = engine(&store, partner("lab", &mock));
    let first = liaison
        .enqueue(keyed("patient-1", 0))
        .await
        .unwrap()
        .submission
        .id;
    let second = liaison
        .enqueue(keyed("patient-1", 1))
        .await
        .unwrap()
        .submission
        .id;
    let handle = liaison.start();
    eventually(
        "the first is dead-lettered",
        Duration::from_secs(10),
        || async { store.get(first).await.unwrap().state == SubmissionState::DeadLettered },
    )
    .await;
    eventually(
        "the successor's timeline says it is held",
        Duration::from_secs(10),
        || async {
            let timeline = store.timeline(second).await.unwrap();
            timeline.iter().any(|e| {
                e.kind == EventKind::Held
                    && e.data.as_ref().unwrap()["blocked_by"] == first.to_string().as_str()
            })
        },
    )
    .await;

    mock.set_behavior(Behavior::Healthy);
    let free = liaison
        .enqueue(NewSubmission::new("lab", "free", json!({})).idempotency_key("free"))
        .await
        .unwrap()
        .submission
        .id;
    eventually(
        "unkeyed work delivered",
        Duration::from_secs(10),
        || async { store.get(free).await.unwrap().state == SubmissionState::AwaitingResult },
    )
    .await;
    // Give the dispatcher several more polls: the successor must stay put.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = store.get(second).await.unwrap();
    assert_eq!(held.state, SubmissionState::Queued);
    assert_eq!(held.attempts, 0);

    // An operator settles the dead letter; the successor goes.
    store
        .transition(
            first,
            StateChange::to(SubmissionState::ResolvedManually)
                .actor(Actor::person("ops@lab"))
                .reason("re-sent by phone"),
        )
        .await
        .unwrap();
    liaison.notify();
    eventually("successor delivered", Duration::from_secs(10), || async {
        store.get(second).await.unwrap().state == SubmissionState::AwaitingResult
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    let timeline = store.timeline(second).await.unwrap();
    assert!(timeline.iter().any(|e| e.kind == EventKind::Claimed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_can_let_dead_letters_pass() {
    let (_dir, store) = support::store();
    let mock = MockPartner::start_with(Behavior::Reject { status: 400 })
        .await
        .unwrap();
    let liaison = engine(
        &store,
        partner("lab", &mock).dead_letter_holds_ordering(false),
    );
    let first = liaison
        .enqueue(keyed("patient-1", 0))
        .await
        .unwrap()
        .submission
        .id;
    drain(&liaison).await;
    mock.set_behavior(Behavior::Healthy);
    let second = liaison
        .enqueue(keyed("patient-1", 1))
        .await
        .unwrap()
        .submission
        .id;
    drain(&liaison).await;
    assert_eq!(
        store.get(first).await.unwrap().state,
        SubmissionState::DeadLettered
    );
    assert_eq!(
        store.get(second).await.unwrap().state,
        SubmissionState::AwaitingResult
    );
}
