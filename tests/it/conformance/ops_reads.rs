//! The reads behind the ops page: hourly counts in one grouped query agree
//! with a list-and-count of the same submissions, and lists read without
//! payloads or bodies say what is kept without reading it.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as Span, Utc};
use liaison::store::{
    AttemptReport, CallbackFilter, HourlyQuery, ListFilter, NewCallback, StateChange,
};
use liaison::{AttemptOutcome, Submission, SubmissionState};
use serde_json::Value;

use super::harness::{Harness, Store, claim_one, submission};
use super::health_stats::ms;

type Groups = BTreeMap<(i64, Option<i64>, bool, SubmissionState), u64>;

/// Every submission of `partner`, in pages.
async fn all_of(store: &Store, partner: &str) -> Vec<Submission> {
    let mut out = Vec::new();
    loop {
        let mut filter = ListFilter::default()
            .partner(partner)
            .limit(ListFilter::MAX_LIMIT);
        filter.after = out.last().map(|s: &Submission| s.id);
        let page = store.list(&filter).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The groups of `hourly_counts`, counted from the listed submissions.
fn recount(all: &[Submission], query: &HourlyQuery) -> Groups {
    let hours = i64::from(query.hours);
    let hour = |t: DateTime<Utc>| (t - query.from).num_milliseconds().div_euclid(3_600_000);
    let mut groups = Groups::new();
    for s in all.iter().filter(|s| s.partner == query.partner) {
        if s.created_at < query.from && s.state.is_terminal() {
            continue;
        }
        let created = if s.created_at < query.from {
            -1
        } else if s.created_at >= query.now {
            hours
        } else {
            hour(s.created_at).min(hours)
        };
        let ended = s.terminal_at.map(|t| hour(t).clamp(-1, hours));
        let ended_by_now = s.terminal_at.is_some_and(|t| t < query.now);
        *groups
            .entry((created, ended, ended_by_now, s.state))
            .or_default() += 1;
    }
    groups
}

async fn counted(store: &Store, query: &HourlyQuery) -> Groups {
    let mut groups = Groups::new();
    for c in store.hourly_counts(query).await.unwrap() {
        let key = (c.created, c.ended, c.ended_by_now, c.state);
        assert!(
            groups.insert(key, c.count).is_none(),
            "{key:?} twice in one answer"
        );
    }
    groups
}

pub async fn hourly_counts_agree_with_a_list_and_count(h: &Harness) {
    use SubmissionState::*;
    let name = h.name();
    let store = h.store().await;
    let base = ms(Utc::now());
    let at = |minutes: i64| base + Span::minutes(minutes);
    // Finish the only queued one of "bank" as `target` at `minutes`.
    let finish = |key: &'static str, outcome, target, minutes| {
        let store = store.clone();
        async move {
            let id = store
                .enqueue(submission("bank", key))
                .await
                .unwrap()
                .submission
                .id;
            let lease = claim_one(&store, "bank").await;
            assert_eq!(lease.submission.id, id);
            store
                .complete(
                    &lease,
                    AttemptReport::new(outcome),
                    StateChange::to(target).at(at(minutes)),
                )
                .await
                .unwrap();
        }
    };
    finish("ok-early", AttemptOutcome::Succeeded, Succeeded, -300).await;
    finish("ok-1", AttemptOutcome::Succeeded, Succeeded, 10).await;
    finish("ok-2", AttemptOutcome::Succeeded, Succeeded, 12).await;
    finish("failed", AttemptOutcome::Failed, Failed, 120).await;
    finish("dead", AttemptOutcome::Permanent, DeadLettered, 125).await;
    finish("ok-late", AttemptOutcome::Succeeded, Succeeded, 30 * 60).await;
    finish("waiting", AttemptOutcome::Accepted, AwaitingResult, 5).await;
    let cancelled = store
        .enqueue(submission("bank", "cancelled"))
        .await
        .unwrap();
    store
        .transition(
            cancelled.submission.id,
            StateChange::to(Cancelled).at(at(240)),
        )
        .await
        .unwrap();
    for key in ["q-1", "q-2", "q-3"] {
        store.enqueue(submission("bank", key)).await.unwrap();
    }
    store.enqueue(submission("lab", "elsewhere")).await.unwrap();
    let all = all_of(&store, "bank").await;
    assert_eq!(all.len(), 11, "{name}");
    let created = all.iter().map(|s| s.created_at).min().unwrap();
    for query in [
        // The window around the work: created in hour 3, ended across it.
        HourlyQuery::new("bank", created - Span::minutes(210), 24, at(300)),
        // The chart's own: the last 24 hours as of now.
        HourlyQuery::new("bank", base - Span::hours(23), 24, base + Span::minutes(1)),
        // A window after the work was created: only the unfinished counts.
        HourlyQuery::new("bank", at(60), 24, at(300)),
        // Counted as of before it was created, and a short window.
        HourlyQuery::new(
            "bank",
            created - Span::hours(2),
            3,
            created - Span::minutes(1),
        ),
        HourlyQuery::new("nobody", created - Span::hours(2), 24, at(300)),
    ] {
        let expected = recount(&all, &query);
        assert_eq!(counted(&store, &query).await, expected, "{name}: {query:?}");
    }
    let chart = HourlyQuery::new("bank", created - Span::minutes(210), 24, at(300));
    let groups = counted(&store, &chart).await;
    assert_eq!(groups.values().sum::<u64>(), 11, "{name}");
    assert!(
        groups.keys().any(|k| k.1 == Some(-1)) && groups.keys().any(|k| k.1 == Some(24)),
        "{name}: ended before and after the window are both there: {groups:?}"
    );
}

pub async fn lists_without_payloads_or_bodies_read_neither(h: &Harness) {
    use SubmissionState::*;
    let name = h.name();
    let store = h.store().await;
    let done = store.enqueue(submission("bank", "done")).await.unwrap();
    let lease = claim_one(&store, "bank").await;
    assert_eq!(lease.submission.id, done.submission.id);
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Succeeded),
            StateChange::to(Succeeded),
        )
        .await
        .unwrap();
    store.enqueue(submission("bank", "open")).await.unwrap();
    let purged = store
        .purge((Utc::now() + Span::days(1)).into())
        .await
        .unwrap();
    assert_eq!(purged.payloads, 1, "{name}");

    let full = store
        .list(&ListFilter::default().partner("bank"))
        .await
        .unwrap();
    let light = store
        .list(&ListFilter::default().partner("bank").without_payload())
        .await
        .unwrap();
    assert_eq!(full.len(), 2, "{name}");
    assert_eq!(light.len(), 2, "{name}");
    for (f, l) in full.iter().zip(&light) {
        assert_eq!(
            l.payload,
            f.payload.as_ref().map(|_| Value::Null),
            "{name}: kept shows as null, purged as none"
        );
        let mut l = l.clone();
        l.payload = f.payload.clone();
        assert_eq!(&l, f, "{name}: everything else is the same");
    }
    assert!(full.iter().any(|s| s.payload.is_some()), "{name}");

    let body = br#"{"reference":"R-1"}"#.to_vec();
    store
        .record_callback(NewCallback::new("bank", body.clone()))
        .await
        .unwrap();
    let full = store
        .list_callbacks(&CallbackFilter::default())
        .await
        .unwrap();
    let light = store
        .list_callbacks(&CallbackFilter::default().without_body())
        .await
        .unwrap();
    assert_eq!(full.len(), 1, "{name}");
    assert_eq!(light.len(), 1, "{name}");
    assert_eq!(full[0].body.as_deref(), Some(&body[..]), "{name}");
    assert_eq!(light[0].body, None, "{name}");
    assert_eq!(
        (light[0].size, &light[0].body_hash),
        (full[0].size, &full[0].body_hash),
        "{name}"
    );
    let mut light = light[0].clone();
    light.body = full[0].body.clone();
    assert_eq!(light, full[0], "{name}: everything else is the same");
}

/// A list of several states (the ops page's problems) is one list in
/// enqueue order across the states, paged by its cursor, with the other
/// filters applied to every state, with a partner and without.
pub async fn a_list_of_several_states_pages_in_enqueue_order(h: &Harness) {
    let store = h.store().await;
    // Ten for bank, every other one claimed: in flight and queued
    // alternate in enqueue order.
    let mut keys = Vec::new();
    for n in 0..10 {
        let key = format!("k{n}");
        store
            .enqueue(submission("bank", &key).priority(i32::from(n % 2 == 0)))
            .await
            .unwrap();
        keys.push(key);
    }
    let claimed = store
        .claim(liaison::store::ClaimRequest::new("bank", 5, super::harness::LEASE).at(store.now()))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);
    store.enqueue(submission("lab", "other")).await.unwrap();

    let both = |filter: ListFilter| {
        filter
            .state(SubmissionState::InFlight)
            .state(SubmissionState::Failed)
            .state(SubmissionState::Queued)
    };
    let key_of = |s: &Submission| s.idempotency_key.clone();
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let mut filter = both(ListFilter::default().partner("bank").limit(4));
        if let Some(id) = after {
            filter = filter.after(id);
        }
        let page = store.list(&filter).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|s| s.id);
        pages.push(page.iter().map(key_of).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        [&keys[0..4], &keys[4..8], &keys[8..10]],
        "pages of four in enqueue order, whatever the state"
    );
    let states: Vec<SubmissionState> = store
        .list(&both(ListFilter::default().partner("bank")))
        .await
        .unwrap()
        .iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states[0], SubmissionState::InFlight);
    assert_eq!(states[1], SubmissionState::Queued);

    // Without a partner: the other partner's queued one comes last.
    let all = store
        .list(&both(ListFilter::default()).without_payload())
        .await
        .unwrap();
    assert_eq!(all.len(), 11);
    assert_eq!(all[10].idempotency_key, "other");
    // Another filter holds in every state's part; the limit for the whole.
    let one = store
        .list(&both(ListFilter::default()).idempotency_key("k3"))
        .await
        .unwrap();
    assert_eq!(one.iter().map(key_of).collect::<Vec<_>>(), ["k3"]);
    let first = store
        .list(&both(ListFilter::default()).limit(3))
        .await
        .unwrap();
    assert_eq!(first.iter().map(key_of).collect::<Vec<_>>(), &keys[0..3]);
    // A state named twice lists its submissions once.
    let twice = store
        .list(&both(
            ListFilter::default()
                .partner("bank")
                .state(SubmissionState::Queued),
        ))
        .await
        .unwrap();
    assert_eq!(twice.iter().map(key_of).collect::<Vec<_>>(), keys);
}
