//! Metrics fed by callbacks and by the reaper.

use std::time::Duration;

use liaison::SubmissionState;
use liaison::store::{ClaimRequest, OutboxStore};
use liaison::testing::CallbackMode;

use super::{Host, later};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_by_callback_feed_the_time_to_result_histogram() {
    let host = Host::start(later(CallbackMode::Normal), |p, _| p).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(host.enqueue(i).await);
    }
    for id in &ids {
        host.wait_for_state(*id, SubmissionState::Succeeded).await;
    }
    let text = host
        .liaison
        .render_metrics(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            r#"liaison_time_to_result_seconds_count{partner="lab"}"#
        ),
        Some(5.0),
        "{text}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_counted() {
    let host = Host::start(later(CallbackMode::Never), |p, _| p).await;
    // A worker of another host (a partner this engine does not serve)
    // claims, and is never heard of again; this engine's reaper notices.
    host.store
        .enqueue(crate::dispatch::claim("elsewhere", 1))
        .await
        .unwrap();
    let ghost = host
        .store
        .claim(ClaimRequest::new("elsewhere", 1, Duration::from_millis(50)).at(host.store.now()))
        .await
        .unwrap();
    let id = ghost[0].submission.id;
    host.wait_for_state(id, SubmissionState::Queued).await;
    let text = host
        .liaison
        .render_metrics(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        sample(
            &text,
            r#"liaison_leases_expired_total{partner="elsewhere"}"#
        ),
        Some(1.0),
        "{text}"
    );
    host.stop().await;
}
