//! The same callback delivered many times at once changes state once.

use std::time::Duration;

use liaison::callback::Disposition;
use liaison::store::OutboxStore;
use liaison::testing::CallbackMode;
use liaison::{EventKind, SubmissionState};

use super::{Host, later, signer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_deliveries_of_one_callback_apply_once() {
    let host = Host::start(later(CallbackMode::Never), |p, _| p).await;
    let id = host.enqueue(1).await;
    host.wait_for_state(id, SubmissionState::AwaitingResult)
        .await;
    let reference = host.store.get(id).await.unwrap().external_ref.unwrap();

    let body = format!(r#"{{"reference":"{reference}","status":"succeeded","event_id":"evt-1"}}"#);
    let ts = chrono::Utc::now().timestamp();
    let signature = signer().sign("msg_1", ts, body.as_bytes());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (client, url, body, signature) = (
            client.clone(),
            host.callback_url.clone(),
            body.clone(),
            signature.clone(),
        );
        tasks.spawn(async move {
            client
                .post(url)
                .header("webhook-id", "msg_1")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut statuses = Vec::new();
    while let Some(result) = tasks.join_next().await {
        statuses.push(result.unwrap().expect("delivery answered"));
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every delivery acknowledged"
    );

    let dispositions = host.dispositions().await;
    assert_eq!(dispositions.len(), 1000, "every delivery stored");
    let applied = dispositions
        .iter()
        .filter(|d| **d == Disposition::Applied)
        .count();
    let duplicates = dispositions
        .iter()
        .filter(|d| **d == Disposition::Duplicate)
        .count();
    assert_eq!((applied, duplicates), (1, 999));
    let changes = host
        .store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Succeeded)
        .count();
    assert_eq!(changes, 1, "exactly one state change");
    host.stop().await;
}
