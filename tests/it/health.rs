//! Health: a scripted scenario gives the expected counts, rates, value at
//! risk and verdict.

use std::time::Duration;

use liaison::engine::Liaison;
use liaison::ops::{Trend, Verdict};
use liaison::store::Totals;
use liaison::{NewSubmission, SubmissionState};
use serde_json::json;

use crate::support::{drive_new_to, store};

fn worth(partner: &str, key: &str, cents: i64) -> NewSubmission {
    NewSubmission::new(partner, "claim.submit", json!({ "k": key }))
        .idempotency_key(key)
        .business_value(cents)
}

#[tokio::test]
async fn a_scripted_scenario_gives_the_expected_report() {
    use SubmissionState::*;
    let (_dir, store) = store();
    let script = [
        ("bank", "s1", 100, Succeeded),
        ("bank", "s2", 100, Succeeded),
        ("bank", "s3", 100, Succeeded),
        ("bank", "f1", 500, Failed),
        ("bank", "d1", 700, DeadLettered),
        ("bank", "k1", 300, Stuck),
        ("bank", "a1", 50, AwaitingResult),
        ("lab", "x1", 10, DeadLettered),
        ("lab", "x2", 10, DeadLettered),
        ("lab", "x3", 10, DeadLettered),
        ("bank", "q1", 20, Queued),
        ("bank", "q2", 20, Queued),
        ("shop", "ok", 1, Succeeded),
    ];
    for (partner, key, cents, state) in script {
        drive_new_to(&store, worth(partner, key, cents), state).await;
    }
    let liaison = Liaison::builder(store.clone()).build().unwrap();
    let report = liaison.health(Duration::from_secs(3600)).await.unwrap();

    let bank = report
        .partners
        .iter()
        .find(|p| p.partner == "bank")
        .unwrap();
    let count = |s| bank.by_state.get(&s).map_or(0, |t| t.count);
    assert_eq!(
        [
            Succeeded,
            Failed,
            DeadLettered,
            Stuck,
            AwaitingResult,
            Queued
        ]
        .map(count),
        [3, 1, 1, 1, 1, 2]
    );
    assert_eq!(bank.window.succeeded, 3);
    assert_eq!(bank.window.failed, 1);
    assert_eq!(bank.window.dead_lettered, 1);
    assert_eq!(bank.window.success_rate, Some(0.6));
    assert_eq!(bank.window.failure_rate, Some(0.4));
    assert_eq!(
        bank.trend,
        Trend::Unknown,
        "nothing ended in the window before"
    );
    assert_eq!(bank.stuck, 1);
    assert_eq!(bank.at_risk, Totals::of(3, None, 1500));
    assert_eq!(bank.verdict, Verdict::Degraded);
    assert!(
        bank.reasons.iter().any(|r| r.contains("40%")),
        "{:?}",
        bank.reasons
    );
    assert!(
        bank.reasons.iter().any(|r| r.contains("stuck")),
        "{:?}",
        bank.reasons
    );
    // Dead letters count while they remain; the window says how many are new.
    assert!(
        bank.reasons.contains(
            &"1 dead-lettered submission(s) not recovered (1 in the last 1 h)".to_owned()
        ),
        "{:?}",
        bank.reasons
    );
    assert_eq!(
        bank.enqueue_to_accepted.samples, 6,
        "every accepted one has a latency"
    );
    assert_eq!(
        bank.accepted_to_result.samples, 4,
        "succeeded and failed after acceptance"
    );
    assert!(bank.oldest_queued_secs.is_some());

    let lab = report.partners.iter().find(|p| p.partner == "lab").unwrap();
    assert_eq!(lab.verdict, Verdict::Down);
    assert_eq!(lab.at_risk, Totals::of(3, None, 30));

    let shop = report
        .partners
        .iter()
        .find(|p| p.partner == "shop")
        .unwrap();
    assert_eq!(shop.verdict, Verdict::Healthy);
    assert!(shop.reasons.is_empty());

    assert_eq!(report.verdict, Verdict::Down);
    assert_eq!(report.at_risk, Totals::of(6, None, 1530));
    assert!(
        report
            .reasons
            .iter()
            .any(|r| r.starts_with("lab: nothing succeeded"))
    );
    // It serializes for the host.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "down");
}

#[tokio::test]
async fn counts_stay_exact_through_transitions_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    {
        let store = liaison::store::SqliteStore::open(&path).unwrap();
        drive_new_to(&store, worth("bank", "a", 5), SubmissionState::Succeeded).await;
        drive_new_to(&store, worth("bank", "b", 7), SubmissionState::Cancelled).await;
    }
    let store = liaison::store::SqliteStore::open(&path).unwrap();
    let liaison = Liaison::builder(store.clone()).build().unwrap();
    let bank = liaison
        .health(Duration::from_secs(60))
        .await
        .unwrap()
        .partners
        .remove(0);
    assert_eq!(
        bank.by_state.get(&SubmissionState::Succeeded),
        Some(&Totals::of(1, None, 5))
    );
    assert_eq!(
        bank.by_state.get(&SubmissionState::Cancelled),
        Some(&Totals::of(1, None, 7))
    );
    assert_eq!(bank.by_state.get(&SubmissionState::Queued), None);
    assert!(
        liaison
            .health(Duration::ZERO)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
}

#[derive(Debug)]
struct Quiet;

#[async_trait::async_trait]
impl liaison::PartnerAdapter for Quiet {
    async fn submit(
        &self,
        _: &liaison::AttemptContext,
        _: &liaison::Submission,
    ) -> Result<liaison::SubmitOutcome, liaison::PartnerError> {
        Ok(liaison::SubmitOutcome::Completed(
            liaison::Outcome::succeeded(),
        ))
    }
}

#[tokio::test]
async fn expected_traffic_that_could_never_be_checked_is_refused_at_build() {
    use chrono::Weekday::{Fri, Mon};
    use liaison::engine::{EngineSettings, ExpectedTraffic, Partner};
    use liaison::store::OutboxStore;
    let (_dir, store) = store();
    let hour = Duration::from_secs(3600);
    for (expected, field) in [
        (ExpectedTraffic::finished(0), "expect_traffic.at_least"),
        (
            ExpectedTraffic::callbacks(1).per(Duration::ZERO),
            "expect_traffic.period",
        ),
        (
            ExpectedTraffic::finished(1).hours(8, 25),
            "expect_traffic.hours",
        ),
        (
            ExpectedTraffic::finished(1).hours(9, 9),
            "expect_traffic.hours",
        ),
        (
            ExpectedTraffic::finished(1).time_zone("Europe/Atlantis"),
            "expect_traffic.time_zone",
        ),
        (
            ExpectedTraffic::finished(1)
                .weekdays(Mon..=Fri)
                .hours(8, 18)
                .per(hour * 12),
            "expect_traffic.period",
        ),
    ] {
        let built = Liaison::builder(store.clone())
            .partner(Partner::new("lab", Quiet).expect_traffic(expected.clone()))
            .build();
        match built {
            Err(liaison::Error::InvalidInput { field: f, .. }) => {
                assert_eq!(f, field, "{expected:?}")
            }
            other => panic!("{expected:?} was not refused: {other:?}"),
        }
    }
    // A zero heartbeat interval is refused too.
    let built = Liaison::builder(store.clone())
        .settings(EngineSettings::default().heartbeat_interval(Duration::ZERO))
        .build();
    assert!(
        matches!(
            built,
            Err(liaison::Error::InvalidInput {
                field: "heartbeat_interval",
                ..
            })
        ),
        "{built:?}"
    );
    // Nothing was stored.
    assert!(store.expected_traffic().await.unwrap().is_empty());
    assert!(store.instances().await.unwrap().is_empty());
}
