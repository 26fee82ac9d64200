//! Finding submissions by the host's own keys: `get_by_key`, the
//! correlation filter and `updated_since`, on every store.

use std::time::Duration;

use chrono::Utc;
use liaison::store::{AttemptReport, ListFilter, Replay, StateChange};
use liaison::{
    Actor, AttemptOutcome, Error, MAX_CORRELATION_BYTES, NewSubmission, SubmissionId,
    SubmissionState,
};
use serde_json::json;

use super::harness::{Harness, Store, claim_one, drive_to, submission};

/// No submission.
const NONE: [SubmissionId; 0] = [];

fn ids(found: &[liaison::Submission]) -> Vec<SubmissionId> {
    found.iter().map(|s| s.id).collect()
}

/// Every page of `filter`, `size` at a time, as the host would read them.
async fn all_pages(store: &Store, filter: ListFilter, size: usize) -> Vec<SubmissionId> {
    let mut page = filter.limit(size);
    let mut seen = Vec::new();
    loop {
        let batch = store.list(&page).await.unwrap();
        assert!(batch.len() <= size);
        let Some(last) = batch.last() else { break };
        page = page.after(last.id);
        seen.extend(ids(&batch));
    }
    seen
}

#[track_caller]
fn assert_invalid(result: liaison::Result<impl std::fmt::Debug>, field: &str) {
    match result {
        Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected invalid {field}, got {other:?}"),
    }
}

pub async fn get_by_key_finds_the_submission_of_that_partner(h: &Harness) {
    let store = h.store().await;
    let bank = store.enqueue(submission("bank", "C-1")).await.unwrap();
    let lab = store.enqueue(submission("lab", "C-1")).await.unwrap();
    store.enqueue(submission("lab", "L-only")).await.unwrap();

    let found = store.get_by_key("bank", "C-1").await.unwrap();
    assert_eq!(found, bank.submission);
    assert_eq!(
        store.get_by_key("lab", "C-1").await.unwrap().id,
        lab.submission.id
    );
    // Unknown keys, and another partner's key, are not found.
    for (partner, key) in [("bank", "C-2"), ("bank", "L-only"), ("shop", "C-1")] {
        let err = store.get_by_key(partner, key).await.unwrap_err();
        assert!(err.is_not_found(), "{partner} {key}: {err:?}");
        assert!(err.to_string().contains(key), "{err}");
    }
    // What enqueue would refuse is refused, not looked up.
    assert_invalid(store.get_by_key("bank", "").await, "idempotency_key");
    assert_invalid(
        store.get_by_key("bank", &"k".repeat(256)).await,
        "idempotency_key",
    );
    assert_invalid(store.get_by_key("bank", "a\0b").await, "idempotency_key");
    assert_invalid(store.get_by_key("a bank", "C-1").await, "partner");
    assert_invalid(store.get_by_key("", "C-1").await, "partner");
    // Hostile text is only ever a parameter.
    let hostile = "C-1'; DROP TABLE liaison_submissions; --";
    let stored = store.enqueue(submission("bank", hostile)).await.unwrap();
    assert_eq!(
        store.get_by_key("bank", hostile).await.unwrap().id,
        stored.submission.id
    );
}

/// The ledger decides: after a replay under a fresh key, the original key
/// and the derived one both find the submission while the ledger keeps
/// them; once pruned, only the key it is sent under now does, and a freed
/// key used again finds the newest submission.
pub async fn get_by_key_after_a_replay_under_a_fresh_key(h: &Harness) {
    let store = h.store().await;
    let (id, _) = drive_to(&store, "bank", SubmissionState::DeadLettered).await;
    let replayed = store
        .replay(
            id,
            Replay::new(Actor::person("ops"), "partner fixed it").fresh_key(true),
        )
        .await
        .unwrap();
    assert_eq!(replayed.idempotency_key, "bank-key~replay1");
    for key in ["bank-key", "bank-key~replay1"] {
        let found = store.get_by_key("bank", key).await.unwrap();
        assert_eq!(found.id, id, "{key}");
        assert_eq!(found.idempotency_key, "bank-key~replay1");
    }
    // A list by key matches the key it is sent under now only.
    let by_key = store
        .list(&ListFilter::default().idempotency_key("bank-key"))
        .await
        .unwrap();
    assert!(by_key.is_empty(), "{by_key:?}");

    // It finishes and the ledger's retention (30 days here) ends.
    let lease = claim_one(&store, "bank").await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(SubmissionState::Succeeded),
        )
        .await
        .unwrap();
    let later = Utc::now() + chrono::Duration::days(31);
    assert_eq!(store.prune_ledger(later).await.unwrap(), 2);
    assert_eq!(
        store
            .get_by_key("bank", "bank-key~replay1")
            .await
            .unwrap()
            .id,
        id
    );
    assert!(
        store
            .get_by_key("bank", "bank-key")
            .await
            .unwrap_err()
            .is_not_found()
    );

    // The freed key, used again, finds the new work; and once that one is
    // finished and pruned too, the newest submission sent under it.
    let first = store
        .enqueue(
            NewSubmission::new("bank", "claim.submit", json!({"again": 1}))
                .idempotency_key("bank-key~replay1"),
        )
        .await
        .unwrap();
    assert!(!first.deduplicated);
    assert_eq!(
        store
            .get_by_key("bank", "bank-key~replay1")
            .await
            .unwrap()
            .id,
        first.submission.id
    );
    store
        .transition(
            first.submission.id,
            StateChange::to(SubmissionState::Cancelled),
        )
        .await
        .unwrap();
    assert_eq!(store.prune_ledger(later).await.unwrap(), 1);
    assert_eq!(
        store
            .get_by_key("bank", "bank-key~replay1")
            .await
            .unwrap()
            .id,
        first.submission.id
    );
}

pub async fn a_correlation_filter_matches_one_field_exactly(h: &Harness) {
    let store = h.store().await;
    let enqueue = |partner: &'static str, key: &'static str, fields: &[(&str, &str)]| {
        let mut new = submission(partner, key);
        for (name, value) in fields {
            new = new.correlation(*name, *value);
        }
        let store = store.clone();
        async move { store.enqueue(new).await.unwrap().submission.id }
    };
    let a = enqueue("bank", "a", &[("claim_id", "C-1"), ("patient", "P-1")]).await;
    let b = enqueue("bank", "b", &[("claim_id", "C-2"), ("patient", "C-1")]).await;
    let c = enqueue("lab", "c", &[("claim_id", "C-1")]).await;
    let _case = enqueue("bank", "d", &[("claim_id", "c-1")]).await;
    let _prefix = enqueue("bank", "e", &[("claim_id", "C-10")]).await;
    let _none = enqueue("bank", "f", &[]).await;

    let list = |filter: ListFilter| {
        let store = store.clone();
        async move { ids(&store.list(&filter).await.unwrap()) }
    };
    let claim = || ListFilter::default().correlation("claim_id", "C-1");
    assert_eq!(list(claim()).await, [a, c], "both partners, enqueue order");
    assert_eq!(list(claim().partner("bank")).await, [a]);
    assert_eq!(list(claim().partner("lab")).await, [c]);
    assert_eq!(list(claim().partner("shop")).await, NONE);
    // Another field holding the same value is another field.
    assert_eq!(
        list(ListFilter::default().correlation("patient", "C-1")).await,
        [b]
    );
    assert_eq!(
        list(ListFilter::default().correlation("order", "C-1")).await,
        NONE
    );
    // The last correlation filter set is the one applied.
    assert_eq!(
        list(claim().correlation("patient", "P-1").partner("bank")).await,
        [a]
    );
    // With states, kinds and times.
    assert_eq!(list(claim().state(SubmissionState::Queued)).await, [a, c]);
    let lease = claim_one(&store, "lab").await;
    assert_eq!(lease.submission.id, c);
    assert_eq!(list(claim().state(SubmissionState::Queued)).await, [a]);
    assert_eq!(
        list(
            claim()
                .partner("lab")
                .state(SubmissionState::InFlight)
                .state(SubmissionState::Stuck)
        )
        .await,
        [c]
    );
    assert_eq!(list(claim().kind("claim.submit")).await, [a, c]);
    assert_eq!(list(claim().kind("other")).await, NONE);
    let a_at = store.get(a).await.unwrap().created_at;
    assert_eq!(list(claim().created_from(a_at)).await, [a, c]);
    assert_eq!(list(claim().created_until(a_at)).await, NONE);
    // Without payloads, the correlation fields still come back.
    let light = store
        .list(&claim().partner("bank").without_payload())
        .await
        .unwrap();
    assert_eq!(light[0].payload, Some(serde_json::Value::Null));
    assert_eq!(light[0].correlation["patient"], "P-1");

    // A duplicate enqueue indexes nothing twice.
    let again = store
        .enqueue(
            submission("bank", "a")
                .correlation("claim_id", "C-1")
                .correlation("patient", "P-1"),
        )
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!(list(claim().partner("bank")).await, [a]);

    // Paging through many matches gets every one once, in enqueue order.
    let mut many = Vec::new();
    for i in 0..7 {
        let new = submission("bank", &format!("m{i}")).correlation("batch", "B-7");
        many.push(store.enqueue(new).await.unwrap().submission.id);
    }
    let batch = ListFilter::default().correlation("batch", "B-7");
    assert_eq!(all_pages(&store, batch.clone(), 3).await, many);
    assert_eq!(all_pages(&store, batch.partner("bank"), 2).await, many);

    // Values up to the cap, in any script and with SQL in them, match
    // exactly; what enqueue would refuse is refused.
    let long = "é".repeat(MAX_CORRELATION_BYTES / 2);
    let hostile = "O'Brien\"; DELETE FROM liaison_correlations; --";
    let odd = store
        .enqueue(
            submission("bank", "odd")
                .correlation("name", hostile)
                .correlation("long", long.clone()),
        )
        .await
        .unwrap()
        .submission
        .id;
    assert_eq!(
        list(ListFilter::default().correlation("name", hostile)).await,
        [odd]
    );
    assert_eq!(
        list(ListFilter::default().correlation("long", long)).await,
        [odd]
    );
    let too_long = "x".repeat(MAX_CORRELATION_BYTES + 1);
    for (name, value, field) in [
        ("", "C-1", "correlation field name"),
        ("claim id", "C-1", "correlation field name"),
        (too_long.as_str(), "C-1", "correlation field name"),
        ("claim_id", "", "correlation field value"),
        ("claim_id", too_long.as_str(), "correlation field value"),
        ("claim_id", "C-1\n", "correlation field value"),
        ("claim_id", "nul\0", "correlation field value"),
    ] {
        let result = store
            .list(&ListFilter::default().correlation(name, value))
            .await;
        assert_invalid(result, field);
    }

    // A batch that is refused indexes nothing.
    let err = store
        .enqueue_batch(vec![
            submission("bank", "g1").correlation("batch", "refused"),
            submission("bank", "").correlation("batch", "refused"),
        ])
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
    assert_eq!(
        list(ListFilter::default().correlation("batch", "refused")).await,
        NONE
    );
}

/// Wait until the clock has moved on, so times taken before and after
/// differ in milliseconds (what the stores keep).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

pub async fn updated_since_pulls_what_changed(h: &Harness) {
    let store = h.store().await;
    let mut bank = Vec::new();
    for i in 0..6 {
        let s = store
            .enqueue(submission("bank", &format!("u{i}")))
            .await
            .unwrap();
        bank.push(s.submission.id);
    }
    let lab = store
        .enqueue(submission("lab", "l0"))
        .await
        .unwrap()
        .submission
        .id;
    tick().await;
    let since = Utc::now();
    tick().await;
    let cancel = |id| {
        let store = store.clone();
        async move {
            store
                .transition(id, StateChange::to(SubmissionState::Cancelled))
                .await
                .unwrap()
        }
    };
    for i in [4, 1, 3] {
        cancel(bank[i]).await;
    }
    tick().await;
    let changed_lab = cancel(lab).await;
    let list = |filter: ListFilter| {
        let store = store.clone();
        async move { ids(&store.list(&filter).await.unwrap()) }
    };
    let changed = || ListFilter::default().updated_since(since);
    // In enqueue order, whatever the order of the changes.
    assert_eq!(list(changed()).await, [bank[1], bank[3], bank[4], lab]);
    assert_eq!(
        list(changed().partner("bank")).await,
        [bank[1], bank[3], bank[4]]
    );
    assert_eq!(
        list(changed().partner("bank").state(SubmissionState::Queued)).await,
        NONE
    );
    // At or after: a change at exactly `since` counts.
    assert_eq!(
        list(ListFilter::default().updated_since(changed_lab.updated_at)).await,
        [lab]
    );
    // Older ones come back with an older `since`.
    let all = list(ListFilter::default().updated_since(since - chrono::Duration::hours(1))).await;
    assert_eq!(all.len(), 7);
    assert!(
        list(ListFilter::default().updated_since(Utc::now() + chrono::Duration::hours(1)))
            .await
            .is_empty()
    );

    // Paging with `after` gets every changed one once.
    assert_eq!(
        all_pages(&store, changed(), 1).await,
        [bank[1], bank[3], bank[4], lab]
    );
    assert_eq!(all_pages(&store, changed(), 2).await.len(), 4);

    // A pull while work changes: take the next pull's `since` before the
    // first page. What changes behind the pages shows in the next pull,
    // what changes ahead of them in this one; nothing is lost.
    tick().await;
    let next_since = Utc::now();
    tick().await;
    let mut page = changed().limit(1);
    let first = store.list(&page).await.unwrap();
    assert_eq!(ids(&first), [bank[1]]);
    cancel(bank[0]).await; // behind the pages
    cancel(bank[5]).await; // ahead of them
    page = page.after(first[0].id);
    let mut pulled = ids(&first);
    loop {
        let batch = store.list(&page).await.unwrap();
        let Some(last) = batch.last() else { break };
        page = page.after(last.id);
        pulled.extend(ids(&batch));
    }
    assert_eq!(pulled, [bank[1], bank[3], bank[4], bank[5], lab]);
    assert_eq!(
        all_pages(&store, ListFilter::default().updated_since(next_since), 2).await,
        [bank[0], bank[5]]
    );

    // With a correlation filter too.
    let tagged = store
        .enqueue(submission("bank", "t").correlation("claim_id", "C-5"))
        .await
        .unwrap()
        .submission;
    assert_eq!(
        list(
            ListFilter::default()
                .correlation("claim_id", "C-5")
                .updated_since(tagged.updated_at)
        )
        .await,
        [tagged.id]
    );
    assert_eq!(
        list(
            ListFilter::default()
                .correlation("claim_id", "C-5")
                .updated_since(tagged.updated_at + chrono::Duration::milliseconds(1))
        )
        .await,
        NONE
    );
}
