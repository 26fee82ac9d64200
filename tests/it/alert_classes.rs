//! Every problem class opens through the engine and closes again, on SQLite
//! and PostgreSQL: the engine runs against `MockPartner` over real HTTP,
//! callbacks come in through the engine's callback router, and
//! `Liaison::evaluate_alerts()` is called directly instead of waiting for
//! the timer.
//!
//! Classes about items (dead letters, stuck work, quarantined callbacks,
//! parked results) stay open while their items remain — past the window —
//! and close when the items are recovered (replayed, resolved, cancelled,
//! reprocessed, dismissed, re-run). Rate classes (partner unavailable,
//! processing failed) and the delay budget follow the live condition.
//!
//! Each case is `alert_classes::sqlite::<case>` and
//! `alert_classes::postgres::<case>` (the latter needs `LIAISON_TEST_PG_URL`,
//! as the conformance suite does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::{CallbackId, Disposition, JsonMatcher, StandardWebhooks, StoredCallback};
use liaison::engine::{AlertSettings, AlertThresholds, Handle, Liaison, Partner};
use liaison::ops::alerts::{Alert, ProblemClass};
use liaison::retry::{Fixed, RetryLimits};
use liaison::store::{CallbackFilter, DeliveryFilter, OutboxStore};
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{
    Actor, BoxError, DeliveryState, EventKind, FinishedSubmission, HttpJsonAdapter, Outcome,
    ResultHandler, ResultMapping, SubmissionId, SubmissionState,
};

use crate::conformance::harness::Harness;
use crate::dispatch::{claim, eventually, quick_settings};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).unwrap()
}

/// How long a wait for a condition may take before the test fails.
const BOUND: Duration = Duration::from_secs(20);

/// A host: an engine with one partner "lab" on a mock, on the harness's
/// store, with the callback router on a real port the mock posts to.
struct Rig {
    liaison: Liaison,
    store: Arc<dyn OutboxStore>,
    mock: MockPartner,
    callback_url: String,
    handle: Option<Handle>,
    // Last: the database goes after everything that uses it.
    _harness: Harness,
}

/// The mock's adapter: a synchronous answer's `status` says how it ended.
fn adapter(mock: &MockPartner) -> HttpJsonAdapter {
    HttpJsonAdapter::new(&mock.submit_url())
        .unwrap()
        .status_pointer(
            "/status",
            ResultMapping::new(["succeeded"], ["failed"]).unwrap(),
        )
        .unwrap()
}

impl Rig {
    /// `window` is the alert window; `configure` adds to the partner.
    async fn start(
        harness: Harness,
        behavior: Behavior,
        window: Duration,
        configure: impl FnOnce(Partner) -> Partner,
    ) -> Rig {
        let store = harness.store().await;
        let mock = MockPartner::start_with(behavior).await.unwrap();
        mock.set_callback_signing(Some(signer()));
        let partner = configure(
            Partner::new("lab", adapter(&mock))
                .retry(Fixed::new(Duration::from_millis(20)).unwrap())
                .limits(RetryLimits::new(1000, Duration::from_secs(120)).unwrap())
                .attempt_timeout(Duration::from_secs(5))
                .without_circuit()
                .callbacks(JsonMatcher::builder(signer()).build().unwrap())
                .result_timeout(Duration::from_secs(60)),
        );
        let liaison = Liaison::builder_arc(Arc::clone(&store))
            .partner(partner)
            .settings(quick_settings())
            .alert_settings(
                AlertSettings::default()
                    .interval(Duration::from_secs(3600)) // evaluated by hand
                    .window(window),
            )
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = liaison::http::callback_router(liaison.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let callback_url = format!("http://{addr}/callbacks/lab");
        mock.set_callback_url(Some(callback_url.clone()));
        let handle = Some(liaison.start());
        Rig {
            liaison,
            store,
            mock,
            callback_url,
            handle,
            _harness: harness,
        }
    }

    async fn enqueue(&self, i: usize) -> SubmissionId {
        self.liaison
            .enqueue(claim("lab", i))
            .await
            .unwrap()
            .submission
            .id
    }

    async fn wait_for_state(&self, id: SubmissionId, state: SubmissionState) {
        eventually(&format!("submission {state}"), BOUND, || async {
            self.store.get(id).await.unwrap().state == state
        })
        .await;
    }

    /// The open alert of `class`, after an evaluation.
    async fn evaluate(&self, class: ProblemClass) -> Option<Alert> {
        self.liaison.evaluate_alerts().await.unwrap();
        self.liaison
            .alerts(true)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.partner == "lab" && a.class == class)
    }

    /// Evaluate until an alert of `class` is open (its condition may take a
    /// moment to arise), and return it.
    async fn opens(&self, class: ProblemClass) -> Alert {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(alert) = self.evaluate(class).await {
                return alert;
            }
            assert!(start.elapsed() < BOUND, "no {class} alert opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Evaluate once: the alert `open` must now be resolved.
    async fn resolves(&self, open: &Alert) {
        assert_eq!(
            self.evaluate(open.class).await,
            None,
            "{} still open",
            open.class
        );
        let all = self.liaison.alerts(false).await.unwrap();
        let closed = all.iter().find(|a| a.id == open.id).unwrap();
        assert!(closed.resolved_at.is_some(), "{closed:?}");
    }

    /// The partner's verdict reasons now.
    async fn reasons(&self, window: Duration) -> Vec<String> {
        let report = self.liaison.health(window).await.unwrap();
        report
            .partners
            .into_iter()
            .find(|p| p.partner == "lab")
            .map(|p| p.reasons)
            .unwrap_or_default()
    }

    /// Wait until the window no longer holds what `recent` reads from it.
    async fn window_passes(
        &self,
        window: Duration,
        recent: impl Fn(&liaison::ops::PartnerHealth) -> u64,
    ) {
        eventually("the window to pass", BOUND, || async {
            let report = self.liaison.health(window).await.unwrap();
            report
                .partners
                .iter()
                .find(|p| p.partner == "lab")
                .is_some_and(|p| recent(p) == 0)
        })
        .await;
    }

    /// Every stored callback of the partner, oldest first.
    async fn callbacks(&self) -> Vec<StoredCallback> {
        let mut all = self
            .store
            .list_callbacks(&CallbackFilter::default().partner("lab").limit(1000))
            .await
            .unwrap();
        all.reverse();
        all
    }

    /// Wait for a callback of `disposition` and return its id.
    async fn callback_in(&self, disposition: Disposition) -> CallbackId {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(c) = self
                .callbacks()
                .await
                .into_iter()
                .find(|c| c.disposition == disposition)
            {
                return c.id;
            }
            assert!(start.elapsed() < BOUND, "no {disposition} callback");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POST a correctly signed callback to the engine's router.
    async fn post_signed(&self, body: &str) -> u16 {
        let ts = chrono::Utc::now().timestamp();
        let msg_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        reqwest::Client::new()
            .post(&self.callback_url)
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

    async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown(Duration::from_secs(5)).await.unwrap();
        }
    }
}

fn ops() -> Actor {
    Actor::person("dana")
}

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(300);

fn later(mode: CallbackMode) -> Behavior {
    Behavior::callback_later_with(Duration::from_millis(20), MockOutcome::Succeeded, mode)
}

// ---- rate classes ----

async fn partner_unavailable(harness: Harness) {
    let rig = Rig::start(harness, Behavior::Failing, LONG, |p| {
        p.alert_thresholds(AlertThresholds::default().consecutive_failures(3))
    })
    .await;
    let id = rig.enqueue(1).await;
    let alert = rig.opens(ProblemClass::PartnerUnavailable).await;
    assert!(
        alert.details.contains("consecutive failed attempts"),
        "{}",
        alert.details
    );
    // The partner answers again: the failures stop, the alert closes.
    rig.mock.set_behavior(Behavior::AcceptAndComplete);
    rig.wait_for_state(id, SubmissionState::Succeeded).await;
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn processing_failed(harness: Harness) {
    let rig = Rig::start(
        harness,
        Behavior::complete_with_failure("no such member"),
        SHORT,
        |p| p,
    )
    .await;
    for i in 0..2 {
        let id = rig.enqueue(i).await;
        rig.wait_for_state(id, SubmissionState::Failed).await;
    }
    let alert = rig.opens(ProblemClass::ProcessingFailed).await;
    assert!(
        alert.details.contains("2 failure(s) of 2"),
        "{}",
        alert.details
    );
    // A rate: once the failures are out of the window, it clears (the
    // failed submissions themselves are the impact, not this alert).
    rig.window_passes(SHORT, |p| p.window.failed).await;
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn delay_budget_exceeded(harness: Harness) {
    // Accepted, never reported: the work stays unfinished.
    let rig = Rig::start(harness, later(CallbackMode::Never), LONG, |p| {
        p.delay_budget(Duration::from_millis(300))
    })
    .await;
    let id = rig.enqueue(1).await;
    let alert = rig.opens(ProblemClass::DelayBudgetExceeded).await;
    rig.liaison
        .cancel(id, ops(), "the member withdrew the claim")
        .await
        .unwrap();
    rig.resolves(&alert).await;
    rig.stop().await;
}

// ---- classes about items ----

async fn rejected_by_partner(harness: Harness) {
    let rig = Rig::start(harness, Behavior::Reject { status: 422 }, SHORT, |p| p).await;
    let (a, b) = (rig.enqueue(1).await, rig.enqueue(2).await);
    rig.wait_for_state(a, SubmissionState::DeadLettered).await;
    rig.wait_for_state(b, SubmissionState::DeadLettered).await;
    let alert = rig.opens(ProblemClass::RejectedByPartner).await;
    assert!(
        alert
            .details
            .starts_with("2 dead-lettered submission(s) not recovered"),
        "{}",
        alert.details
    );

    // Past the window, the dead letters are still there: so is the alert,
    // and so is the verdict's reason.
    rig.window_passes(SHORT, |p| p.window.dead_lettered).await;
    let still = rig
        .evaluate(ProblemClass::RejectedByPartner)
        .await
        .expect("open past the window");
    assert_eq!(still.id, alert.id);
    assert_eq!(still.details, "2 dead-lettered submission(s) not recovered");
    assert!(
        rig.reasons(SHORT)
            .await
            .contains(&"2 dead-lettered submission(s) not recovered".to_owned()),
        "{:?}",
        rig.reasons(SHORT).await
    );

    // One resolved by hand: one remains, the alert stays.
    rig.liaison
        .resolve_manually(a, Outcome::failed("sent by fax"), ops(), "sent by fax")
        .await
        .unwrap();
    let one = rig
        .evaluate(ProblemClass::RejectedByPartner)
        .await
        .expect("one dead letter remains");
    assert_eq!(one.details, "1 dead-lettered submission(s) not recovered");

    // The other replayed once the partner takes it: none remain.
    rig.mock.set_behavior(Behavior::AcceptAndComplete);
    rig.liaison
        .replay(b, ops(), "the partner fixed its validation")
        .await
        .unwrap();
    rig.resolves(&alert).await;
    assert!(
        rig.reasons(SHORT)
            .await
            .iter()
            .all(|r| !r.contains("dead-lettered")),
        "{:?}",
        rig.reasons(SHORT).await
    );
    rig.wait_for_state(b, SubmissionState::Succeeded).await;
    rig.stop().await;
}

async fn result_overdue(harness: Harness) {
    let rig = Rig::start(harness, later(CallbackMode::Never), LONG, |p| {
        p.result_timeout(Duration::from_millis(200))
    })
    .await;
    let id = rig.enqueue(1).await;
    rig.wait_for_state(id, SubmissionState::Stuck).await;
    let alert = rig.opens(ProblemClass::ResultOverdue).await;
    assert_eq!(alert.details, "1 submission(s) stuck without a result");
    rig.liaison
        .resolve_manually(id, Outcome::succeeded(), ops(), "confirmed on the portal")
        .await
        .unwrap();
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn results_not_delivered(harness: Harness) {
    /// The host's handler: fails while `broken`.
    #[derive(Debug)]
    struct Host {
        broken: Arc<AtomicBool>,
    }
    #[async_trait]
    impl ResultHandler for Host {
        async fn handle(&self, _: &FinishedSubmission) -> Result<(), BoxError> {
            if self.broken.load(Ordering::SeqCst) {
                Err("the host's database is read-only".into())
            } else {
                Ok(())
            }
        }
    }
    let broken = Arc::new(AtomicBool::new(true));
    let handler = Host {
        broken: Arc::clone(&broken),
    };
    let rig = Rig::start(harness, Behavior::AcceptAndComplete, LONG, |p| {
        p.limits(RetryLimits::new(2, Duration::from_secs(120)).unwrap())
            .results(handler)
    })
    .await;
    let id = rig.enqueue(1).await;
    rig.wait_for_state(id, SubmissionState::Succeeded).await;
    let parked = DeliveryFilter::default().state(DeliveryState::Parked);
    let start = tokio::time::Instant::now();
    let delivery = loop {
        if let Some(d) = rig.liaison.deliveries(&parked).await.unwrap().pop() {
            break d;
        }
        assert!(start.elapsed() < BOUND, "no parked delivery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let alert = rig.opens(ProblemClass::ResultsNotDelivered).await;
    broken.store(false, Ordering::SeqCst);
    rig.liaison
        .rerun_delivery(delivery.id, ops(), "the database is writable again")
        .await
        .unwrap();
    let delivered = DeliveryFilter::default().state(DeliveryState::Delivered);
    eventually("the result delivered", BOUND, || async {
        !rig.liaison.deliveries(&delivered).await.unwrap().is_empty()
    })
    .await;
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn malformed_callback(harness: Harness) {
    let rig = Rig::start(harness, later(CallbackMode::Malformed), SHORT, |p| p).await;
    rig.enqueue(1).await;
    let callback = rig.callback_in(Disposition::Malformed).await;
    let alert = rig.opens(ProblemClass::MalformedCallback).await;
    assert!(
        alert
            .details
            .starts_with("1 malformed callback(s) in quarantine"),
        "{}",
        alert.details
    );
    // Past the window it is still in the quarantine: still open.
    rig.window_passes(SHORT, |p| {
        p.callbacks
            .get(&Disposition::Malformed)
            .copied()
            .unwrap_or(0)
    })
    .await;
    let still = rig
        .evaluate(ProblemClass::MalformedCallback)
        .await
        .expect("open past the window");
    assert_eq!(still.id, alert.id);
    assert_eq!(still.details, "1 malformed callback(s) in quarantine");
    assert!(
        rig.reasons(SHORT)
            .await
            .contains(&"1 malformed callback(s) in quarantine".to_owned())
    );
    // Dismissed with a reason: it leaves the quarantine, the alert closes.
    let dismissed = rig
        .liaison
        .dismiss_callback(callback, ops(), "the partner sent the corrected result")
        .await
        .unwrap();
    assert_eq!(dismissed.disposition, Disposition::Dismissed);
    rig.resolves(&alert).await;
    assert!(
        rig.reasons(SHORT)
            .await
            .iter()
            .all(|r| !r.contains("quarantine"))
    );
    rig.stop().await;
}

async fn unmatched_callback(harness: Harness) {
    let rig = Rig::start(harness, later(CallbackMode::Never), LONG, |p| {
        p.unmatched_ttl(Duration::from_millis(200))
    })
    .await;
    let status = rig
        .post_signed(r#"{"reference":"NOBODY","status":"succeeded","event_id":"e-1"}"#)
        .await;
    assert_eq!(status, 202);
    let callback = rig.callback_in(Disposition::Expired).await;
    let alert = rig.opens(ProblemClass::UnmatchedCallback).await;
    assert!(
        alert
            .details
            .starts_with("1 unmatched callback(s) in quarantine"),
        "{}",
        alert.details
    );
    rig.liaison
        .dismiss_callback(callback, ops(), "a test message from the partner's sandbox")
        .await
        .unwrap();
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn bad_signature(harness: Harness) {
    let rig = Rig::start(harness, later(CallbackMode::WrongSignature), LONG, |p| p).await;
    rig.enqueue(1).await;
    let callback = rig.callback_in(Disposition::Rejected).await;
    let alert = rig.opens(ProblemClass::BadSignature).await;
    assert!(
        alert
            .details
            .starts_with("1 callback(s) that failed verification in quarantine"),
        "{}",
        alert.details
    );
    // Reprocessing with the same secret rejects it again: still open.
    let again = rig.liaison.reprocess_callback(callback).await.unwrap();
    assert_eq!(again.disposition, Disposition::Rejected);
    assert!(rig.evaluate(ProblemClass::BadSignature).await.is_some());
    rig.liaison
        .dismiss_callback(
            callback,
            ops(),
            "the partner rotated its secret; result confirmed by phone",
        )
        .await
        .unwrap();
    rig.resolves(&alert).await;
    rig.stop().await;
}

async fn conflicting_callback(harness: Harness) {
    let rig = Rig::start(harness, later(CallbackMode::Conflicting), LONG, |p| p).await;
    let id = rig.enqueue(1).await;
    rig.wait_for_state(id, SubmissionState::Succeeded).await;
    let callback = rig.callback_in(Disposition::Conflicting).await;
    let alert = rig.opens(ProblemClass::ConflictingCallback).await;
    assert!(
        alert
            .details
            .starts_with("1 conflicting callback(s) in quarantine"),
        "{}",
        alert.details
    );
    rig.liaison
        .dismiss_callback(callback, ops(), "the partner confirmed the first result")
        .await
        .unwrap();
    rig.resolves(&alert).await;
    // Journaled on the submission it contradicted.
    let last = rig.store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::CallbackDismissed);
    assert_eq!(last.actor, ops());
    assert_eq!(
        last.reason.as_deref(),
        Some("the partner confirmed the first result")
    );
    assert_eq!(
        rig.store.get(id).await.unwrap().state,
        SubmissionState::Succeeded
    );
    rig.stop().await;
}

macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::conformance::harness::Harness::sqlite()).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(harness) = crate::conformance::harness::Harness::postgres().await
                    else {
                        return;
                    };
                    super::$case(harness).await;
                }
            )*
        }
    };
}

both_stores! {
    partner_unavailable,
    processing_failed,
    delay_budget_exceeded,
    rejected_by_partner,
    result_overdue,
    results_not_delivered,
    malformed_callback,
    unmatched_callback,
    bad_signature,
    conflicting_callback,
}
