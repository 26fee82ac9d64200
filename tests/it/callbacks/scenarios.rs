//! DESIGN.md's scenarios and the other dispositions, through real HTTP.

use std::time::Duration;

use liaison::callback::{
    CallbackMatcher, CallbackReport, Correlation, Disposition, InboundCallback, JsonMatcher,
    MalformedCallback, ReportedOutcome, SignatureError, SignatureVerifier,
};
use liaison::engine::Liaison;
use liaison::store::{OutboxStore, StateChange};
use liaison::testing::{Behavior, CallbackMode, MockOutcome};
use liaison::{Actor, EventKind, SubmissionState};

use super::{Host, later, signer};
use crate::dispatch::{eventually, quick_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_success_is_applied_once() {
    let host = Host::start(later(CallbackMode::Normal), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    host.wait_for_callbacks(1).await;
    assert_eq!(host.dispositions().await, [Disposition::Applied]);
    assert_eq!(host.mock.callback_log()[0].status, Some(200));
    let stored = &host.callbacks().await[0];
    assert_eq!(stored.submission_id, Some(id));
    assert!(stored.body.is_some(), "the raw body is kept");
    assert!(stored.headers.iter().any(|(n, _)| n == "webhook-signature"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_partner_then_its_callback() {
    let host = Host::start(later(CallbackMode::Normal), |p, _| p).await;
    host.mock.go_down().await;
    let id = host.enqueue(1).await;
    eventually(
        "failed attempts while down",
        Duration::from_secs(20),
        || async { host.store.get(id).await.unwrap().attempts >= 2 },
    )
    .await;
    host.mock.come_back().await.unwrap();
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    assert_eq!(host.mock.stats().side_effects, 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_but_failed_is_recorded_with_the_partner_reason() {
    let behavior = Behavior::callback_later(
        Duration::from_millis(20),
        MockOutcome::Failed {
            reason: "member not eligible on date of service".into(),
        },
    );
    let host = Host::start(behavior, |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Failed).await;
    let s = host.store.get(id).await.unwrap();
    assert_eq!(
        s.last_error.as_deref(),
        Some("member not eligible on date of service")
    );
    let last = host.store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::Failed);
    assert_eq!(last.to_state, Some(SubmissionState::Failed));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_result_sent_twice_changes_state_once() {
    let host = Host::start(later(CallbackMode::Duplicate), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_callbacks(2).await;
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    assert_eq!(
        host.dispositions().await,
        [Disposition::Applied, Disposition::Duplicate]
    );
    let statuses: Vec<_> = host.mock.callback_log().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [Some(200), Some(200)],
        "a duplicate is acknowledged"
    );
    let transitions = host
        .store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.to_state == Some(SubmissionState::Succeeded))
        .count();
    assert_eq!(transitions, 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_repeat_is_stored_flagged_and_not_applied() {
    let host = Host::start(later(CallbackMode::Conflicting), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_callbacks(2).await;
    eventually("both settled", Duration::from_secs(10), || async {
        host.dispositions().await.len() == 2
    })
    .await;
    assert_eq!(
        host.dispositions().await,
        [Disposition::Applied, Disposition::Conflicting]
    );
    assert_eq!(
        host.state(id).await,
        SubmissionState::Succeeded,
        "the first result stands"
    );
    let timeline = host.store.timeline(id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.kind == EventKind::ConflictingCallback)
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_signature_is_rejected_stored_and_never_parsed() {
    let host = Host::start(later(CallbackMode::WrongSignature), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_callbacks(1).await;
    assert_eq!(host.mock.callback_log()[0].status, Some(401));
    let stored = &host.callbacks().await[0];
    assert_eq!(stored.disposition, Disposition::Rejected);
    assert!(stored.body.is_some());
    assert_eq!(stored.correlation, None, "never parsed");
    assert!(
        stored.error.as_deref().unwrap().contains("signature"),
        "{:?}",
        stored.error
    );
    assert_eq!(host.state(id).await, SubmissionState::AwaitingResult);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_callback_is_matched_once_the_acceptance_is_recorded() {
    let host = Host::start(later(CallbackMode::Early), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    // It arrived while the submission was in flight: kept (202), then applied.
    assert_eq!(host.mock.callback_log()[0].status, Some(202));
    assert_eq!(host.dispositions().await, [Disposition::Applied]);
    let timeline = host.store.timeline(id).await.unwrap();
    let kinds: Vec<_> = timeline.iter().map(|e| e.kind.clone()).collect();
    let accepted = kinds
        .iter()
        .position(|k| *k == EventKind::Accepted)
        .unwrap();
    let succeeded = kinds
        .iter()
        .position(|k| *k == EventKind::Succeeded)
        .unwrap();
    assert!(accepted < succeeded);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_callback_delivered_twice_is_applied_once_the_acceptance_is_recorded() {
    let host = Host::start(later(CallbackMode::EarlyDuplicate), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    // Both arrived while the submission was in flight: the first waits
    // (202), the second is its duplicate (200); the first is applied with
    // the acceptance.
    let statuses: Vec<_> = host.mock.callback_log().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [Some(202), Some(200)]);
    assert_eq!(
        host.dispositions().await,
        [Disposition::Applied, Disposition::Duplicate]
    );
    let timeline = host.store.timeline(id).await.unwrap();
    let succeeded = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Succeeded)
        .count();
    assert_eq!(succeeded, 1);
    host.stop().await;
}

/// A matcher for the mock's malformed body, `<result reference="MP-1" status="succeeded"/>`,
/// standing in for a fix shipped after the partner changed its format.
#[derive(Debug)]
struct XmlishMatcher;

impl CallbackMatcher for XmlishMatcher {
    fn verify(
        &self,
        cb: &InboundCallback,
        now: std::time::SystemTime,
    ) -> Result<(), SignatureError> {
        signer().verify(cb, now)
    }

    fn parse(&self, cb: &InboundCallback) -> Result<CallbackReport, MalformedCallback> {
        let text =
            std::str::from_utf8(&cb.body).map_err(|_| MalformedCallback::new("not UTF-8"))?;
        let attr = |name: &str| {
            let start = text.find(&format!("{name}=\""))? + name.len() + 2;
            let end = text[start..].find('"')? + start;
            Some(text[start..end].to_owned())
        };
        let reference = attr("reference").ok_or_else(|| MalformedCallback::new("no reference"))?;
        let outcome = match attr("status").as_deref() {
            Some("succeeded") => ReportedOutcome::Succeeded,
            _ => return Err(MalformedCallback::new("no status")),
        };
        Ok(CallbackReport::new(
            Correlation::ExternalRef(reference),
            outcome,
        ))
    }

    fn scheme(&self) -> &'static str {
        "standard_webhooks"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_format_is_quarantined_then_reprocessed_after_a_fix() {
    let host = Host::start(later(CallbackMode::Malformed), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_callbacks(1).await;
    assert_eq!(host.mock.callback_log()[0].status, Some(400));
    let stored = host.callbacks().await.remove(0);
    assert_eq!(stored.disposition, Disposition::Malformed);
    assert!(
        stored.error.as_deref().unwrap().contains("not JSON"),
        "{:?}",
        stored.error
    );
    assert_eq!(host.state(id).await, SubmissionState::AwaitingResult);

    // Reprocessing with the same matcher changes nothing.
    let again = host.liaison.reprocess_callback(stored.id).await.unwrap();
    assert_eq!(again.disposition, Disposition::Malformed);

    // The fix ships: a host with a matcher that reads the new format.
    let fixed = Liaison::builder(host.store.clone())
        .partner(crate::dispatch::partner("lab", &host.mock).callbacks(XmlishMatcher))
        .settings(quick_settings())
        .build()
        .unwrap();
    let receipt = fixed.reprocess_callback(stored.id).await.unwrap();
    assert_eq!(receipt.disposition, Disposition::Applied);
    assert_eq!(receipt.submission_id, Some(id));
    assert_eq!(host.state(id).await, SubmissionState::Succeeded);
    // Applied callbacks are not reprocessed.
    assert!(
        fixed
            .reprocess_callback(stored.id)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    host.stop().await;
}

/// A matcher with a bug: it verifies, then panics on every body.
#[derive(Debug)]
struct PanickingMatcher;

impl CallbackMatcher for PanickingMatcher {
    fn verify(
        &self,
        cb: &InboundCallback,
        now: std::time::SystemTime,
    ) -> Result<(), SignatureError> {
        signer().verify(cb, now)
    }

    fn parse(&self, _: &InboundCallback) -> Result<CallbackReport, MalformedCallback> {
        panic!("index out of bounds in the host's parser")
    }

    fn scheme(&self) -> &'static str {
        "standard_webhooks"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matcher_that_panics_quarantines_the_callback_for_reprocessing_after_a_fix() {
    let host = Host::start(later(CallbackMode::Normal), |p, _| {
        p.callbacks(PanickingMatcher)
    })
    .await;
    let id = host.enqueue(1).await;
    host.wait_for_callbacks(1).await;
    // Answered, stored with its body, quarantined: nothing crashed.
    assert_eq!(host.mock.callback_log()[0].status, Some(400));
    let stored = host.callbacks().await.remove(0);
    assert_eq!(stored.disposition, Disposition::Malformed);
    assert_eq!(
        stored.error.as_deref(),
        Some("the callback matcher panicked: index out of bounds in the host's parser")
    );
    assert_eq!(
        stored.body.as_deref(),
        Some(&host.mock.callback_log()[0].body[..])
    );
    assert_eq!(host.state(id).await, SubmissionState::AwaitingResult);
    // The engine keeps serving: a second submission goes out and its
    // callback is quarantined the same way.
    let second = host.enqueue(2).await;
    host.wait_for_callbacks(2).await;
    assert_eq!(host.state(second).await, SubmissionState::AwaitingResult);

    // The fix ships: the quarantined callbacks are reprocessed and applied.
    let fixed = Liaison::builder(host.store.clone())
        .partner(
            crate::dispatch::partner("lab", &host.mock).callbacks(
                liaison::callback::JsonMatcher::builder(signer())
                    .build()
                    .unwrap(),
            ),
        )
        .settings(quick_settings())
        .build()
        .unwrap();
    for callback in host.callbacks().await {
        let receipt = fixed.reprocess_callback(callback.id).await.unwrap();
        assert_eq!(receipt.disposition, Disposition::Applied);
    }
    assert_eq!(host.state(id).await, SubmissionState::Succeeded);
    assert_eq!(host.state(second).await, SubmissionState::Succeeded);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_after_cancellation_is_late_and_noted() {
    let host = Host::start(later(CallbackMode::Never), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::AwaitingResult)
        .await;
    host.store
        .transition(
            id,
            StateChange::to(SubmissionState::Cancelled).actor(Actor::person("ops")),
        )
        .await
        .unwrap();
    let reference = host.store.get(id).await.unwrap().external_ref.unwrap();
    let receipt = post_signed(
        &host,
        &format!(r#"{{"reference":"{reference}","status":"succeeded","event_id":"e-late"}}"#),
    )
    .await;
    assert_eq!(receipt, 200);
    assert_eq!(host.dispositions().await, [Disposition::Late]);
    assert_eq!(host.state(id).await, SubmissionState::Cancelled);
    let last = host.store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::LateCallback);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_callbacks_wait_then_expire_into_the_quarantine() {
    let host = Host::start(later(CallbackMode::Never), |p, _| {
        p.unmatched_ttl(Duration::from_millis(200))
    })
    .await;
    let status = post_signed(
        &host,
        r#"{"reference":"NOBODY","status":"succeeded","event_id":"e-1"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(host.dispositions().await, [Disposition::Unmatched]);
    eventually("expired", Duration::from_secs(10), || async {
        host.dispositions().await == [Disposition::Expired]
    })
    .await;
    let quarantine = host
        .store
        .list_callbacks(&liaison::store::CallbackFilter::quarantined())
        .await
        .unwrap();
    assert_eq!(quarantine.len(), 1);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_unknown_callbacks_are_answered_and_recorded() {
    let host = Host::start(later(CallbackMode::Never), |p, _| {
        p.max_callback_bytes(1024)
    })
    .await;
    let client = reqwest::Client::new();
    let big = "x".repeat(2048);
    let response = client
        .post(&host.callback_url)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let unknown = host.callback_url.replace("/lab", "/nobody");
    let response = client.post(&unknown).body("{}").send().await.unwrap();
    assert_eq!(response.status(), 401);

    let stored = host.callbacks().await;
    assert_eq!(stored.len(), 2, "nothing inbound is lost");
    assert_eq!(stored[0].disposition, Disposition::TooLarge);
    assert_eq!(stored[0].size, 2048);
    assert_eq!(stored[0].body, None);
    assert_eq!(stored[1].disposition, Disposition::Rejected);
    assert_eq!(stored[1].partner, "nobody");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matcher_always_has_a_verifier_and_an_unsigned_callback_is_rejected() {
    let host = Host::start(later(CallbackMode::Never), |p, _| p).await;
    let response = reqwest::Client::new()
        .post(&host.callback_url)
        .body(r#"{"reference":"MP-1","status":"succeeded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let _: JsonMatcher = JsonMatcher::builder(liaison::callback::Unverified)
        .build()
        .unwrap();
    host.stop().await;
}

/// POST a correctly signed callback; returns the HTTP status.
pub async fn post_signed(host: &Host, body: &str) -> u16 {
    let ts = chrono::Utc::now().timestamp();
    let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    reqwest::Client::new()
        .post(&host.callback_url)
        .header("webhook-id", &msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            signer().sign(&msg_id, ts, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_stored_but_never_settled_is_processed_later() {
    let host = Host::start(later(CallbackMode::Never), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::AwaitingResult)
        .await;
    let reference = host.store.get(id).await.unwrap().external_ref.unwrap();

    // What a crash between "stored raw" and "settled" leaves behind.
    let arrived = chrono::Utc::now() - chrono::Duration::seconds(30);
    let body =
        format!(r#"{{"reference":"{reference}","status":"succeeded","event_id":"e-crash"}}"#);
    let signature = signer().sign("msg_crash", arrived.timestamp(), body.as_bytes());
    let stranded = host
        .store
        .record_callback(
            liaison::store::NewCallback::new("lab", body.clone().into_bytes())
                .received_at(arrived)
                .header("webhook-id", "msg_crash")
                .header("webhook-timestamp", arrived.timestamp().to_string())
                .header("webhook-signature", signature)
                .body_hash("not-checked-here"),
        )
        .await
        .unwrap();
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    let settled = host.store.callback(stranded).await.unwrap();
    assert_eq!(settled.disposition, Disposition::Applied);
    host.stop().await;
}
