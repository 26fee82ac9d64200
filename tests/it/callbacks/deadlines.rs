//! Results that never come: deadline -> poll (where the adapter can) -> Stuck.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use liaison::callback::Disposition;
use liaison::engine::Partner;
use liaison::store::OutboxStore;
use liaison::testing::CallbackMode;
use liaison::{
    AttemptContext, EventKind, HttpJsonAdapter, Outcome, PartnerAdapter, PartnerError, PollError,
    PollStatus, Submission, SubmissionState, SubmitOutcome,
};

use super::scenarios::post_signed;
use super::{Host, later};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_never_comes_makes_the_submission_stuck() {
    let host = Host::start(later(CallbackMode::Never), |p, _| {
        p.result_timeout(Duration::from_millis(200))
    })
    .await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Stuck).await;
    let last = host.store.timeline(id).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, EventKind::Stuck);
    assert!(last.reason.unwrap().contains("cannot be polled"));

    // A late but real result still counts.
    let reference = host.store.get(id).await.unwrap().external_ref.unwrap();
    let status = post_signed(
        &host,
        &format!(r#"{{"reference":"{reference}","status":"succeeded","event_id":"e-9"}}"#),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(host.state(id).await, SubmissionState::Succeeded);
    assert_eq!(host.dispositions().await, [Disposition::Applied]);
    host.stop().await;
}

/// Sends through the HTTP adapter; answers polls from a script.
#[derive(Debug)]
struct Pollable {
    inner: HttpJsonAdapter,
    answer: Mutex<Option<Outcome>>,
    polls: Mutex<u32>,
}

#[async_trait]
impl PartnerAdapter for Pollable {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        self.inner.submit(ctx, submission).await
    }

    async fn poll_status(&self, _submission: &Submission) -> Result<PollStatus, PollError> {
        *self.polls.lock().unwrap() += 1;
        Ok(match self.answer.lock().unwrap().clone() {
            Some(outcome) => PollStatus::Done(outcome),
            None => PollStatus::Pending,
        })
    }
}

fn pollable(host_mock_url: &str, answer: Option<Outcome>) -> Pollable {
    Pollable {
        inner: HttpJsonAdapter::new(host_mock_url).unwrap(),
        answer: Mutex::new(answer),
        polls: Mutex::new(0),
    }
}

async fn host_with_poller(answer: Option<Outcome>) -> Host {
    Host::start(later(CallbackMode::Never), |_, mock| {
        Partner::new("lab", pollable(&mock.submit_url(), answer))
            .callbacks(
                liaison::callback::JsonMatcher::builder(super::signer())
                    .build()
                    .unwrap(),
            )
            .retry(liaison::retry::Fixed::new(Duration::from_millis(20)).unwrap())
            .result_timeout(Duration::from_millis(100))
            .polling(Duration::from_millis(100), 3)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_finds_the_result_of_an_overdue_submission() {
    let host = host_with_poller(Some(Outcome::succeeded())).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Succeeded).await;
    let last = host.store.timeline(id).await.unwrap().pop().unwrap();
    assert!(last.reason.unwrap().contains("polling"));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_gives_up_after_its_schedule_and_marks_stuck() {
    let host = host_with_poller(None).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::Stuck).await;
    let timeline = host.store.timeline(id).await.unwrap();
    let polls = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Polled)
        .count();
    assert_eq!(
        polls, 2,
        "two polls deferred the deadline; the third gave up"
    );
    let last = timeline.last().unwrap();
    assert!(
        last.reason
            .as_deref()
            .unwrap()
            .contains("no result after 3 polls")
    );
    host.stop().await;
}

/// Counts polls across instances and answers "still pending", slowly.
#[derive(Debug)]
struct SlowPending {
    inner: HttpJsonAdapter,
    polls: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

#[async_trait]
impl PartnerAdapter for SlowPending {
    async fn submit(
        &self,
        ctx: &AttemptContext,
        submission: &Submission,
    ) -> Result<SubmitOutcome, PartnerError> {
        self.inner.submit(ctx, submission).await
    }

    async fn poll_status(&self, _submission: &Submission) -> Result<PollStatus, PollError> {
        self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(PollStatus::Pending)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_poll_each_overdue_result_once() {
    const N: usize = 30;
    let (dir, store) = crate::support::store();
    let path = dir.path().join("outbox.db");
    let mock = liaison::testing::MockPartner::start_with(later(CallbackMode::Never))
        .await
        .unwrap();
    let polls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let engine = |store: liaison::store::SqliteStore| {
        let adapter = SlowPending {
            inner: HttpJsonAdapter::new(&mock.submit_url()).unwrap(),
            polls: std::sync::Arc::clone(&polls),
        };
        liaison::engine::Liaison::builder(store)
            .partner(
                Partner::new("lab", adapter)
                    .result_timeout(Duration::from_millis(100))
                    // The first poll moves the deadline an hour away.
                    .polling(Duration::from_secs(3600), 2),
            )
            .settings(crate::dispatch::quick_settings())
            .build()
            .unwrap()
    };
    assert!(path.exists(), "the support store lives at {path:?}");
    let a = engine(store.clone());
    let b = engine(liaison::store::SqliteStore::open(&path).unwrap());
    let (ha, hb) = (a.start(), b.start());
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            a.enqueue(crate::dispatch::claim("lab", i))
                .await
                .unwrap()
                .submission
                .id,
        );
    }
    let polled = |id| {
        let store = store.clone();
        async move {
            store
                .timeline(id)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.kind == EventKind::Polled)
                .count()
        }
    };
    crate::dispatch::eventually("every result polled", Duration::from_secs(30), || async {
        let mut all = true;
        for id in &ids {
            all &= polled(*id).await >= 1;
        }
        all
    })
    .await;
    // Several more deadline rounds on both instances.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ha.shutdown(Duration::from_secs(5)).await.unwrap();
    hb.shutdown(Duration::from_secs(5)).await.unwrap();
    for id in &ids {
        assert_eq!(polled(*id).await, 1, "{id} polled once");
    }
    assert_eq!(
        polls.load(std::sync::atomic::Ordering::SeqCst),
        N as u32,
        "the partner was asked once per submission"
    );
}
