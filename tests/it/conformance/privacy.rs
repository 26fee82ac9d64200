//! Personal data: retention clears it from finished work past its period,
//! `forget` erases one submission's on request, both keep the skeleton;
//! fingerprints are keyed per store.

use std::time::Duration;

use chrono::Utc;
use liaison::callback::{CallbackReport, Correlation, ReportedOutcome};
use liaison::store::{
    AttemptReport, CallbackFilter, ListFilter, NewCallback, Settlement, StateChange,
};
use liaison::{
    Actor, AttemptOutcome, EventKind, Fingerprint, NewSubmission, SubmissionId, SubmissionState,
};
use serde_json::json;

use super::harness::{Harness, Store, claim_one};

/// The personal datum every field below carries.
const NAME: &str = "Ada Lovelace";

fn report(correlation: Correlation, outcome: ReportedOutcome) -> Settlement {
    Settlement::Report {
        report: CallbackReport::new(correlation, outcome),
        unmatched_until: Utc::now() + chrono::Duration::hours(1),
    }
}

/// A submission of `partner` that carries `NAME` everywhere personal data
/// goes: payload, correlation, an attempt's error and the retry's reason,
/// the partner's reference, a progress note, callback headers and the
/// partner's failure reason (`last_error`). It ends `Failed`.
async fn personal(store: &Store, partner: &str, key: &str) -> SubmissionId {
    let id = store
        .enqueue(
            NewSubmission::new(partner, "order", json!({ "patient": NAME }))
                .idempotency_key(key)
                .correlation("patient", NAME),
        )
        .await
        .unwrap()
        .submission
        .id;
    let lease = claim_one(store, partner).await;
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Transient)
                .http_status(503)
                .error(format!("partner said: no bed for {NAME}")),
            StateChange::to(SubmissionState::Queued).error(format!("no bed for {NAME}")),
        )
        .await
        .unwrap();
    let lease = claim_one(store, partner).await;
    let reference = format!("REF {NAME} {key}");
    store
        .complete(
            &lease,
            AttemptReport::new(AttemptOutcome::Accepted),
            StateChange::to(SubmissionState::AwaitingResult).external_ref(reference.clone()),
        )
        .await
        .unwrap();
    for (n, outcome) in [
        ReportedOutcome::Progress {
            note: Some(format!("{NAME} arrived")),
        },
        ReportedOutcome::Failed {
            reason: format!("{NAME} refused"),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!("{{\"who\":\"{NAME}\",\"key\":\"{key}\",\"n\":{n}}}");
        let cb = store
            .record_callback(NewCallback::new(partner, body.into_bytes()).header("x-patient", NAME))
            .await
            .unwrap();
        store
            .settle_callback(
                cb,
                report(Correlation::ExternalRef(reference.clone()), outcome),
            )
            .await
            .unwrap();
    }
    let s = store.get(id).await.unwrap();
    assert_eq!(s.state, SubmissionState::Failed);
    assert!(s.last_error.as_deref().unwrap().contains(NAME));
    id
}

/// Every place personal data of `id` may be, as one text: the submission,
/// its attempts, its timeline, its callbacks and the correlation index.
async fn everything(store: &Store, id: SubmissionId) -> String {
    let s = store.get(id).await.unwrap();
    let attempts = store.attempts(id).await.unwrap();
    let timeline = store.timeline(id).await.unwrap();
    let callbacks = store
        .list_callbacks(&CallbackFilter::default().submission_id(id))
        .await
        .unwrap();
    let callbacks: Vec<_> = callbacks
        .iter()
        .map(|c| {
            format!(
                "{:?} {:?} {:?} {:?} {:?}",
                c.headers,
                c.body.as_deref().map(String::from_utf8_lossy),
                c.error,
                c.correlation,
                c.event_id
            )
        })
        .collect();
    format!(
        "{} {attempts:?} {timeline:?} {callbacks:?}",
        serde_json::to_string(&s).unwrap()
    )
}

/// What a timeline looks like without its words: (kind, from, to, actor).
async fn skeleton(
    store: &Store,
    id: SubmissionId,
) -> Vec<(
    EventKind,
    Option<SubmissionState>,
    Option<SubmissionState>,
    String,
)> {
    store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.from_state, e.to_state, e.actor.to_string()))
        .collect()
}

async fn found_by_correlation(store: &Store, partner: &str) -> usize {
    store
        .list(
            &ListFilter::default()
                .partner(partner)
                .correlation("patient", NAME),
        )
        .await
        .unwrap()
        .len()
}

pub async fn retention_clears_personal_data_and_keeps_what_happened(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let old = personal(&store, "clinic", "o-1").await;
    let before = skeleton(&store, old).await;
    assert!(everything(&store, old).await.contains(NAME));
    assert_eq!(found_by_correlation(&store, "clinic").await, 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = personal(&store, "clinic", "o-2").await;

    let report = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(report.personal_data, 1, "{name}: {report:?}");
    assert_eq!(report.callback_personal_data, 2, "{name}: {report:?}");

    let s = store.get(old).await.unwrap();
    assert!(s.correlation.is_empty(), "{name}: {:?}", s.correlation);
    assert_eq!(s.external_ref, None, "{name}");
    assert_eq!(s.last_error, None, "{name}");
    assert_eq!(s.payload, None, "{name}");
    for a in store.attempts(old).await.unwrap() {
        assert_eq!(a.error, None, "{name}: attempt {}", a.number);
    }
    // Attempt outcomes and statuses stay.
    let attempts = store.attempts(old).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Transient));
    assert_eq!(attempts[0].http_status, Some(503));
    let timeline = store.timeline(old).await.unwrap();
    let progress = timeline
        .iter()
        .find(|e| e.kind == EventKind::Progress)
        .expect("the progress line stays");
    assert_eq!(progress.reason, None, "{name}: the progress note goes");
    for c in store
        .list_callbacks(&CallbackFilter::default().submission_id(old))
        .await
        .unwrap()
    {
        assert!(c.headers.is_empty(), "{name}: {:?}", c.headers);
        assert_eq!(c.error, None, "{name}");
        assert_eq!(c.correlation, None, "{name}");
        assert_eq!(c.body, None, "{name}");
    }
    assert!(
        !everything(&store, old).await.contains(NAME),
        "{name}: {}",
        everything(&store, old).await
    );
    assert_eq!(
        found_by_correlation(&store, "clinic").await,
        1,
        "{name}: only the newer"
    );
    // Ids, states, times, event kinds and actors stay.
    assert_eq!(skeleton(&store, old).await, before, "{name}");
    assert_eq!(s.state, SubmissionState::Failed);
    // Newer work keeps everything.
    assert!(everything(&store, newer).await.contains(NAME), "{name}");
    // Nothing is left to clear: a second pass is empty.
    let again = store.purge(cutoff.into()).await.unwrap();
    assert_eq!(
        (
            again.personal_data,
            again.callback_personal_data,
            again.more
        ),
        (0, 0, false),
        "{name}"
    );
}

pub async fn forget_erases_by_id_keeps_the_skeleton_and_journals_who_and_why(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let id = personal(&store, "clinic", "f-1").await;
    let other = personal(&store, "clinic", "f-2").await;
    let before = skeleton(&store, id).await;
    let dpo = Actor::person("dpo@example.com");

    // Who and why are required; nothing changes without them.
    for (actor, reason) in [(Actor::person(" "), "request 7"), (dpo.clone(), " ")] {
        let err = store
            .forget(id, actor, reason.to_owned())
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{name}: {err}");
    }
    assert!(everything(&store, id).await.contains(NAME));

    let after = store
        .forget(id, dpo.clone(), "erasure request 7".into())
        .await
        .unwrap();
    assert_eq!(after.state, SubmissionState::Failed, "{name}");
    assert_eq!(after.payload, None, "{name}");
    assert_eq!(after.result, None, "{name}");
    let text = everything(&store, id).await;
    assert!(!text.contains(NAME), "{name}: {text}");
    for c in store
        .list_callbacks(&CallbackFilter::default().submission_id(id))
        .await
        .unwrap()
    {
        assert!(c.headers.is_empty() && c.body.is_none(), "{name}: {c:?}");
    }
    // The skeleton stays, and one line more says who erased it and why.
    let mut expected = before;
    expected.push((
        EventKind::Forgotten,
        None,
        None,
        "dpo@example.com".to_owned(),
    ));
    assert_eq!(skeleton(&store, id).await, expected, "{name}");
    let last = store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.reason.as_deref(), Some("erasure request 7"));
    // The other submission keeps its data; the correlation finds only it.
    assert!(everything(&store, other).await.contains(NAME), "{name}");
    let found = store
        .list(&ListFilter::default().correlation("patient", NAME))
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![other],
        "{name}"
    );
    // The key still answers: the same payload is the forgotten submission.
    let again = store
        .enqueue(
            NewSubmission::new("clinic", "order", json!({ "patient": NAME }))
                .idempotency_key("f-1")
                .correlation("patient", NAME),
        )
        .await
        .unwrap();
    assert!(again.deduplicated && again.submission.id == id, "{name}");
    // A forgotten failure cannot be sent again: its payload is gone.
    let err = store
        .replay(id, liaison::store::Replay::new(dpo, "retry"))
        .await
        .unwrap_err();
    assert!(err.is_invalid_transition(), "{name}: {err}");
}

pub async fn forget_refuses_unfinished_work_and_changes_nothing(h: &Harness) {
    use SubmissionState::*;
    let store = h.store().await;
    let name = h.name();
    for (partner, state) in [
        ("q", Queued),
        ("i", InFlight),
        ("w", AwaitingResult),
        ("s", Stuck),
    ] {
        let (id, _) = super::harness::drive_to(&store, partner, state).await;
        let before = store.get(id).await.unwrap();
        let err = store
            .forget(id, Actor::person("dpo"), "request".into())
            .await
            .unwrap_err();
        assert!(err.is_unfinished(), "{name}: {state}: {err}");
        assert!(err.to_string().contains("cancel"), "{name}: {err}");
        let after = store.get(id).await.unwrap();
        assert_eq!(after.payload, before.payload, "{name}: {state}");
        assert_eq!(
            store.timeline(id).await.unwrap().len(),
            skeleton(&store, id).await.len()
        );
        assert!(
            !store
                .timeline(id)
                .await
                .unwrap()
                .iter()
                .any(|e| e.kind == EventKind::Forgotten),
            "{name}: {state}"
        );
    }
    let err = store
        .forget(SubmissionId::new(), Actor::person("dpo"), "request".into())
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{name}: {err}");
}

pub async fn fingerprints_are_keyed_per_store_and_still_detect_conflicts(h: &Harness) {
    let name = h.name();
    let payload = json!({ "approved": true });
    let new = |key: &str, payload: &serde_json::Value| {
        NewSubmission::new("bank", "decision", payload.clone()).idempotency_key(key)
    };
    let first = h.store().await;
    let a = first.enqueue(new("k", &payload)).await.unwrap().submission;
    // A second instance on the same database shares the key.
    let same_db = h.store().await;
    let again = same_db.enqueue(new("k", &payload)).await.unwrap();
    assert!(again.deduplicated, "{name}");
    assert_eq!(again.submission.fingerprint, a.fingerprint, "{name}");
    // Keyed: not the plain SHA-256 anyone can compute from a guess.
    assert!(a.fingerprint.is_keyed(), "{name}");
    assert_ne!(
        a.fingerprint.as_bytes(),
        Fingerprint::of(&payload).as_bytes()
    );
    assert!(a.fingerprint.to_string().starts_with("k1:"), "{name}");
    // Conflict detection is unchanged.
    let err = first
        .enqueue(new("k", &json!({ "approved": false })))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{name}: {err}");
    // A callback's body hash is keyed too (64 hex characters, not the
    // body's SHA-256), and equal bodies keep equal hashes.
    let body = br#"{"approved":true}"#.to_vec();
    let plain = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    let c1 = first
        .record_callback(NewCallback::new("bank", body.clone()))
        .await
        .unwrap();
    let c2 = same_db
        .record_callback(NewCallback::new("bank", body.clone()))
        .await
        .unwrap();
    let (h1, h2) = (
        first.callback(c1).await.unwrap().body_hash,
        first.callback(c2).await.unwrap().body_hash,
    );
    assert_eq!(h1, h2, "{name}");
    assert_eq!(h1.len(), 64, "{name}");
    assert_ne!(h1, plain, "{name}");
    // Another database: another key, another fingerprint and body hash.
    let other_harness = h.another().await;
    let other_db = other_harness.store().await;
    let b = other_db
        .enqueue(new("k", &payload))
        .await
        .unwrap()
        .submission;
    assert_ne!(a.fingerprint, b.fingerprint, "{name}: two stores, two keys");
    let c3 = other_db
        .record_callback(NewCallback::new("bank", body))
        .await
        .unwrap();
    assert_ne!(other_db.callback(c3).await.unwrap().body_hash, h1, "{name}");
}

pub async fn a_ledger_row_from_before_keying_still_deduplicates_and_detects_conflicts(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let payload = json!({ "claim": "C-1", "cents": 500 });
    let new = |payload: &serde_json::Value| {
        NewSubmission::new("bank", "claim.submit", payload.clone()).idempotency_key("C-1")
    };
    let held = store.enqueue(new(&payload)).await.unwrap().submission;
    // As a release before keyed fingerprints wrote them: the plain SHA-256
    // of the canonical payload, in the ledger and on the submission.
    let plain = Fingerprint::of(&payload).to_hex();
    h.execute_raw(&format!(
        "UPDATE liaison_idempotency_keys SET fingerprint = '{plain}' WHERE idempotency_key = 'C-1'; \
         UPDATE liaison_submissions SET fingerprint = '{plain}' WHERE idempotency_key = 'C-1';"
    ))
    .await;
    let read = store.get(held.id).await.unwrap();
    assert!(!read.fingerprint.is_keyed(), "{name}");
    assert_eq!(read.fingerprint, Fingerprint::of(&payload), "{name}");
    // The same payload is still the same submission...
    let again = store.enqueue(new(&payload)).await.unwrap();
    assert!(
        again.deduplicated && again.submission.id == held.id,
        "{name}"
    );
    // ...and another payload under the key is still a conflict.
    let err = store
        .enqueue(new(&json!({ "claim": "C-1", "cents": 501 })))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{name}: {err}");
}

/// `Liaison::forget` by key and by id, and the ops JSON API's `POST
/// /api/forget` (token required, like every action; unfinished work is
/// 409), on each store.
pub async fn forget_through_the_api_and_the_ops_api(h: &Harness) {
    use liaison::{ForgetTarget, Liaison};
    let store = h.store().await;
    let name = h.name();
    let liaison = Liaison::builder_arc(store.clone()).build().unwrap();
    let dpo = Actor::person("dpo@example.com");
    // By key (the host's own business key).
    let by_key = personal(&store, "clinic", "a-1").await;
    let done = liaison
        .forget(ForgetTarget::key("clinic", "a-1"), dpo.clone(), "request 1")
        .await
        .unwrap();
    assert_eq!(done.id, by_key, "{name}");
    assert!(!everything(&store, by_key).await.contains(NAME), "{name}");
    // By id.
    let by_id = personal(&store, "clinic", "a-2").await;
    liaison
        .forget(by_id, dpo.clone(), "request 2")
        .await
        .unwrap();
    assert!(!everything(&store, by_id).await.contains(NAME), "{name}");
    // An unknown key is not found; nothing else changes.
    let err = liaison
        .forget(ForgetTarget::key("clinic", "nope"), dpo, "request 3")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{name}: {err}");

    #[cfg(feature = "http")]
    {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use liaison::http::ops::{OpsState, router};
        use tower::ServiceExt;

        const TOKEN: &str = "correct horse battery staple";
        let mut state = OpsState::new(liaison.clone());
        state.token = Some(TOKEN.to_owned());
        let app = router(state).unwrap();
        let post = |token: Option<&'static str>, body: serde_json::Value| {
            let app = app.clone();
            async move {
                let mut request =
                    Request::post("/api/forget").header("content-type", "application/json");
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let response = app
                    .oneshot(request.body(Body::from(body.to_string())).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                (status, String::from_utf8(bytes.to_vec()).unwrap())
            }
        };
        let by_api = personal(&store, "clinic", "a-4").await;
        let request = json!({
            "partner": "clinic", "key": "a-4", "actor": "dpo", "reason": "request 4"
        });
        // Without the token: refused, nothing erased.
        let (status, _) = post(None, request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        let (status, _) = post(Some("wrong token, long enough"), request.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(everything(&store, by_api).await.contains(NAME), "{name}");
        // With it: erased, and the answer shows no personal data.
        let (status, body) = post(Some(TOKEN), request).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert!(!body.contains(NAME), "{name}: {body}");
        assert!(!everything(&store, by_api).await.contains(NAME), "{name}");
        // By id; unfinished work is 409; a request naming nothing is 400.
        let by_api_id = personal(&store, "clinic", "a-5").await;
        let (status, body) = post(
            Some(TOKEN),
            json!({ "id": by_api_id.to_string(), "actor": "dpo", "reason": "request 5" }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert!(
            !everything(&store, by_api_id).await.contains(NAME),
            "{name}"
        );
        let (queued, _) = super::harness::drive_to(&store, "post", SubmissionState::Queued).await;
        let (status, body) = post(
            Some(TOKEN),
            json!({ "id": queued.to_string(), "actor": "dpo", "reason": "request 6" }),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}: {body}");
        assert!(body.contains("cancel"), "{name}: {body}");
        let (status, _) = post(Some(TOKEN), json!({ "actor": "dpo", "reason": "r" })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
    }
}
