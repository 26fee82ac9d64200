//! Callbacks end to end: MockPartner accepts over real HTTP and posts its
//! result to the host's callback router, signed with Standard Webhooks.

mod concurrency;
mod deadlines;
mod metrics;
mod scenarios;

use std::time::Duration;

use liaison::callback::{Disposition, JsonMatcher, StandardWebhooks, StoredCallback};
use liaison::engine::{Handle, Liaison, Partner};
use liaison::store::CallbackFilter;
use liaison::store::{OutboxStore, SqliteStore};
use liaison::testing::{Behavior, CallbackMode, MockOutcome, MockPartner};
use liaison::{SubmissionId, SubmissionState};
use tempfile::TempDir;

use crate::dispatch::{claim, eventually, partner, quick_settings};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn signer() -> StandardWebhooks {
    StandardWebhooks::new(SECRET).unwrap()
}

/// A host: a store, an engine with one partner "lab" on a mock, and the
/// callback router on a real port that the mock posts to.
pub struct Host {
    pub _dir: TempDir,
    pub store: SqliteStore,
    pub liaison: Liaison,
    pub mock: MockPartner,
    pub callback_url: String,
    pub handle: Option<Handle>,
}

impl Host {
    pub async fn start(
        behavior: Behavior,
        configure: impl FnOnce(Partner, &MockPartner) -> Partner,
    ) -> Host {
        let (dir, store) = crate::support::store();
        let mock = MockPartner::start_with(behavior).await.unwrap();
        mock.set_callback_signing(Some(signer()));
        let partner = configure(
            partner("lab", &mock)
                .callbacks(JsonMatcher::builder(signer()).build().unwrap())
                .result_timeout(Duration::from_secs(60)),
            &mock,
        );
        let liaison = Liaison::builder(store.clone())
            .partner(partner)
            .settings(quick_settings())
            .build()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = liaison::http::callback_router(liaison.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let callback_url = format!("http://{addr}/callbacks/lab");
        mock.set_callback_url(Some(callback_url.clone()));
        let handle = Some(liaison.start());
        Host {
            _dir: dir,
            store,
            liaison,
            mock,
            callback_url,
            handle,
        }
    }

    pub async fn enqueue(&self, i: usize) -> SubmissionId {
        self.liaison
            .enqueue(claim("lab", i))
            .await
            .unwrap()
            .submission
            .id
    }

    pub async fn state(&self, id: SubmissionId) -> SubmissionState {
        self.store.get(id).await.unwrap().state
    }

    pub async fn wait_for_state(&self, id: SubmissionId, state: SubmissionState) {
        eventually(
            &format!("submission {state}"),
            Duration::from_secs(20),
            || async { self.state(id).await == state },
        )
        .await;
    }

    /// Every stored callback, oldest first.
    pub async fn callbacks(&self) -> Vec<StoredCallback> {
        let mut all = self
            .store
            .list_callbacks(&CallbackFilter::default().limit(10_000))
            .await
            .unwrap();
        all.reverse();
        all
    }

    pub async fn dispositions(&self) -> Vec<Disposition> {
        self.callbacks()
            .await
            .iter()
            .map(|c| c.disposition)
            .collect()
    }

    /// Wait until the mock has had `n` callbacks answered.
    pub async fn wait_for_callbacks(&self, n: usize) {
        eventually(
            &format!("{n} callbacks answered"),
            Duration::from_secs(20),
            || async { self.mock.callback_log().len() >= n },
        )
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown(Duration::from_secs(5)).await.unwrap();
        }
    }
}

pub fn later(mode: CallbackMode) -> Behavior {
    Behavior::callback_later_with(Duration::from_millis(20), MockOutcome::Succeeded, mode)
}
