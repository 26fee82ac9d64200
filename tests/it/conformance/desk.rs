//! What the ops page's recovery desk asks of a store, on every store:
//! finding a submission by the partner's reference or by a correlation
//! value under any field name, and cursor pages (stable while rows arrive)
//! through open work by deadline, callbacks in either order, and result
//! deliveries.

use chrono::{Duration, Utc};
use liaison::callback::CallbackId;
use liaison::store::{
    AttemptReport, CallbackFilter, DeliveryFilter, ListFilter, NewCallback, StateChange,
};
use liaison::{AttemptOutcome, Error, NewSubmission, SubmissionId, SubmissionState};
use serde_json::json;

use super::harness::{Harness, Store, claim_one, submission};

fn ids(found: &[liaison::Submission]) -> Vec<SubmissionId> {
    found.iter().map(|s| s.id).collect()
}

async fn accepted(store: &Store, new: NewSubmission, reference: &str) -> SubmissionId {
    let partner = new.partner().to_owned();
    let id = store.enqueue(new).await.unwrap().submission.id;
    let lease = claim_one(store, &partner).await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref(reference),
        )
        .await
        .unwrap();
    id
}

pub async fn a_submission_is_found_by_reference_or_any_correlation_value(h: &Harness) {
    let store = h.store().await;
    let lab = accepted(
        &store,
        submission("lab", "L-1").correlation("order_no", "SO-9913"),
        "LAB-55",
    )
    .await;
    let bank = accepted(
        &store,
        submission("bank", "B-1").correlation("claim_ref", "SO-9913"),
        "LAB-55",
    )
    .await;
    store
        .enqueue(submission("lab", "L-2").correlation("order_no", "SO-0001"))
        .await
        .unwrap();
    let find = |filter: ListFilter| {
        let store = store.clone();
        async move { ids(&store.list(&filter).await.unwrap()) }
    };
    assert_eq!(
        find(ListFilter::default().external_ref("LAB-55")).await,
        [lab, bank]
    );
    assert_eq!(
        find(ListFilter::default().external_ref("LAB-55").partner("bank")).await,
        [bank]
    );
    assert!(
        find(ListFilter::default().external_ref("lab-55"))
            .await
            .is_empty()
    );
    // A key without a partner: looked up per known partner (a partner
    // first seen just now included).
    let shop = store
        .enqueue(submission("shop", "B-1"))
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(
        find(ListFilter::default().idempotency_key("B-1")).await,
        [bank, shop]
    );
    assert_eq!(
        find(ListFilter::default().idempotency_key("L-1")).await,
        [lab]
    );
    // Any field name, either partner.
    assert_eq!(
        find(ListFilter::default().correlation_value("SO-9913")).await,
        [lab, bank]
    );
    assert_eq!(
        find(
            ListFilter::default()
                .correlation_value("SO-9913")
                .partner("lab")
        )
        .await,
        [lab]
    );
    assert!(
        find(ListFilter::default().correlation_value("SO-99"))
            .await
            .is_empty()
    );
    // Hostile text is a parameter; what no field could hold is refused.
    let hostile = "x' OR '1'='1";
    assert!(
        find(ListFilter::default().correlation_value(hostile))
            .await
            .is_empty()
    );
    assert!(
        find(ListFilter::default().external_ref(hostile))
            .await
            .is_empty()
    );
    match store
        .list(&ListFilter::default().correlation_value("a\0b"))
        .await
    {
        Err(Error::InvalidInput { .. }) => {}
        other => panic!("expected invalid input, got {other:?}"),
    }
}

pub async fn open_work_by_deadline_pages_with_a_cursor(h: &Harness) {
    let store = h.store().await;
    let base = Utc::now() + Duration::hours(3);
    let mut by_deadline = Vec::new();
    // Enqueued latest deadline first; two share a deadline (enqueue order breaks the tie).
    for (i, minutes) in [40, 30, 30, 20, 10].into_iter().enumerate() {
        let new = submission("lab", &format!("D-{i}"))
            .business_deadline(base + Duration::minutes(minutes));
        by_deadline.push((minutes, store.enqueue(new).await.unwrap().submission.id));
    }
    by_deadline.sort_by_key(|(minutes, _)| *minutes);
    let expected: Vec<SubmissionId> = by_deadline.iter().map(|(_, id)| *id).collect();
    let mut page = ListFilter::default().by_deadline().limit(2);
    let mut seen = Vec::new();
    loop {
        let batch = store.list(&page).await.unwrap();
        let Some(last) = batch.last() else { break };
        page = page.after(last.id);
        seen.extend(ids(&batch));
        if seen.len() == 2 {
            // Work arriving later with a later deadline comes at the end;
            // the pages neither skip nor repeat.
            let late = submission("lab", "D-late").business_deadline(base + Duration::hours(5));
            store.enqueue(late).await.unwrap();
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(&seen[..5], &expected[..]);
}

async fn callback(store: &Store, partner: &str, i: usize) -> CallbackId {
    store
        .record_callback(NewCallback::new(partner, format!("body {i}").into_bytes()))
        .await
        .unwrap()
}

pub async fn callbacks_and_deliveries_page_with_a_cursor(h: &Harness) {
    let store = h.store().await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(callback(&store, "lab", i).await);
    }
    callback(&store, "bank", 9).await;
    let pages = |filter: CallbackFilter| {
        let store = store.clone();
        async move {
            let mut page = filter.partner("lab").limit(2).without_body();
            let mut seen = Vec::new();
            loop {
                let batch = store.list_callbacks(&page).await.unwrap();
                let Some(last) = batch.last() else { break };
                page = page.after(last.id);
                seen.extend(batch.iter().map(|c| c.id));
            }
            seen
        }
    };
    let newest: Vec<CallbackId> = sent.iter().rev().copied().collect();
    assert_eq!(pages(CallbackFilter::default()).await, newest);
    assert_eq!(pages(CallbackFilter::default().oldest_first()).await, sent);

    store.set_result_delivery("shop", true).await.unwrap();
    let mut finished = Vec::new();
    for i in 0..3 {
        let id = store
            .enqueue(NewSubmission::new("shop", "order", json!({ "i": i })))
            .await
            .unwrap()
            .submission
            .id;
        let lease = claim_one(&store, "shop").await;
        store
            .complete(
                &lease,
                AttemptReport::new(AttemptOutcome::Succeeded),
                StateChange::to(SubmissionState::Succeeded),
            )
            .await
            .unwrap();
        finished.push(id);
    }
    let mut page = DeliveryFilter::default().partner("shop").limit(2);
    let mut seen = Vec::new();
    loop {
        let batch = store.deliveries(&page).await.unwrap();
        let Some(last) = batch.last() else { break };
        page = page.after(last.id);
        seen.extend(batch.iter().map(|d| d.submission_id));
    }
    assert_eq!(seen, finished);
}
