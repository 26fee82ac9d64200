//! Lease fencing: a worker paused past its lease cannot overwrite the work
//! of the instance that took over.
//!
//! Instance A (a child process) sends the request and is paused — a `pause`
//! failpoint right after the partner's answer, before anything is recorded —
//! long past its lease. Instance B (this process, same file) reclaims the
//! expired work, sends it again under the same idempotency key and records
//! the result. Then A resumes: its late result must change nothing (state,
//! attempt count and attempt rows are B's), must be journaled as
//! `stale_result_ignored`, and the partner must have performed the effect
//! once. The same on a SQLite file and with both instances on one
//! PostgreSQL schema.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use liaison::testing::{Behavior, MockPartner};
use liaison::{EventKind, SubmissionState};

use super::failpoints::{CONCURRENCY, COUNT, RESUME, URL};
use super::{Audit, Backend, Lab, Spawned, child, log_tail, until};

const POINT: &str = "liaison::attempt::answered";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_past_its_lease_changes_nothing_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    fencing(&Backend::Sqlite(dir.path().join("fencing.db")), dir.path()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_worker_paused_past_its_lease_changes_nothing_when_it_resumes() {
    let Some(schema) = crate::conformance::harness::pg::Schema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fencing(&Backend::postgres(&schema), dir.path()).await;
    drop(schema);
}

/// A on `backend` paused past its lease while B (this process) completes
/// its work; A's late result must change nothing.
async fn fencing(backend: &Backend, dir: &std::path::Path) {
    let log = dir.join("child.log");
    let mock = MockPartner::start_with(Behavior::AcceptAndComplete)
        .await
        .unwrap();

    // A: one submission, one permit (so while paused it claims nothing
    // more), paused after the partner's answer until told on stdin.
    let mut command = child("reliability::failpoints::failpoint_child_entry", &log);
    backend.pass_to(&mut command);
    let mut a = Spawned::start(
        command
            .env(URL, mock.submit_url())
            .env(COUNT, "1")
            .env(CONCURRENCY, "1")
            .env("FAILPOINTS", format!("{POINT}=1*pause"))
            .env(RESUME, POINT)
            .stdin(Stdio::piped()),
    );
    until(
        "A's request reached the partner",
        Duration::from_secs(30),
        || mock.stats().side_effects == 1,
    )
    .await;

    // B takes over once A's lease (1 s attempt timeout + 200 ms) expires.
    let store = backend.open().await;
    let b = Lab::start(store.clone(), &mock.submit_url(), None).await;
    let id = store
        .list(&liaison::store::ListFilter::default().partner("lab"))
        .await
        .unwrap()[0]
        .id;
    let mut settled = None;
    let start = std::time::Instant::now();
    while settled.is_none() {
        let s = store.get(id).await.unwrap();
        if s.state == SubmissionState::Succeeded {
            settled = Some(s);
        } else {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "B did not complete the work: {:?}\n{}",
                s.state,
                log_tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let by_b = settled.unwrap();
    assert_eq!(by_b.attempts, 2, "B's attempt is the second");
    let attempts_by_b = store.attempts(id).await.unwrap();
    assert!(
        a.try_wait().unwrap().is_none(),
        "A is still paused, not dead"
    );

    // A resumes and reports its attempt 1.
    let mut stdin = a.stdin.take().unwrap();
    stdin.write_all(b"resume\n").unwrap();
    stdin.flush().unwrap();
    let mut stale = None;
    let start = std::time::Instant::now();
    while stale.is_none() {
        let timeline = store.timeline(id).await.unwrap();
        stale = timeline
            .into_iter()
            .find(|e| e.kind == EventKind::StaleResultIgnored);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "A's late result was not journaled\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stale = stale.unwrap();
    let data = stale.data.clone().unwrap();
    assert_eq!(data["attempt"], 1, "{data}");
    assert_eq!(data["wanted_state"], "succeeded", "{data}");
    assert_eq!(data["state"], "succeeded", "{data}");
    assert_eq!(stale.to_state, None, "a stale result moves nothing");

    // Nothing changed: B's state, attempt count and attempt rows stand.
    let after = store.get(id).await.unwrap();
    assert_eq!(after.state, SubmissionState::Succeeded);
    assert_eq!(after.attempts, by_b.attempts);
    assert_eq!(after.updated_at, by_b.updated_at);
    assert_eq!(store.attempts(id).await.unwrap(), attempts_by_b);
    let succeeded = store
        .timeline(id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.to_state == Some(SubmissionState::Succeeded))
        .count();
    assert_eq!(succeeded, 1, "settled once");
    let stats = mock.stats();
    assert_eq!(stats.side_effects, 1, "one side effect at the partner");
    assert_eq!(stats.requests, 2, "A's request and B's retry");

    a.kill().unwrap();
    a.wait().unwrap();
    b.stop().await;
    drop(store);
    assert_eq!(backend.check(), "ok");
    let audit = Audit::of(backend);
    assert_eq!(audit.stale_results, 1);
    assert_eq!(audit.duplicates(), 0);
}
