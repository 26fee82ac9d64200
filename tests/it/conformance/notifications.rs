//! Alert notifications through the engine, on both stores: each alert goes
//! to its owner's sinks plus the catch-all ones; every (alert, event, sink)
//! notification is journaled; a failing or hanging sink is retried with
//! backoff and, failing for good, is journaled failed and reported by
//! health until it delivers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use liaison::engine::{AlertSettings, Liaison};
use liaison::ops::Verdict;
use liaison::ops::alerts::{
    Alert, AlertEvent, AlertNotification, AlertSink, ChannelSink, NotificationState, Owner,
    Ownership, ProblemClass, SinkError,
};
use liaison::retry::Exponential;
use liaison::testing::{Behavior, MockPartner};

use super::harness::{Harness, Store};
use crate::dispatch::{claim, drain, eventually, partner, quick_settings};

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> AlertSettings {
    AlertSettings::default()
        .interval(Duration::from_secs(3600)) // evaluated by hand; retries tick on
        .window(Duration::from_secs(600))
        .renotify_every(Duration::from_secs(3600))
        .sink_timeout(Duration::from_secs(2))
        .sink_attempts(3)
        .sink_retry(Exponential::new(Duration::from_millis(10), Duration::from_millis(40)).unwrap())
}

fn ownership() -> Ownership {
    Ownership::new(Owner::new("integrations", "#integrations"))
        // A class route, which the partner routes below come before.
        .route(
            ProblemClass::RejectedByPartner,
            Owner::new("billing ops", "billing@clinic.example"),
        )
        .route_partner(
            "clearinghouse",
            ProblemClass::RejectedByPartner,
            Owner::new("revenue cycle", "#revenue-cycle"),
        )
        .partner(
            "lab",
            Owner::new("lab operations", "lab-ops@clinic.example"),
        )
}

/// Dead-letter one submission of each partner (the partner refuses it) and
/// return the engine, not running.
async fn refused(
    store: &Store,
    partners: &[&str],
    build: impl FnOnce(liaison::engine::LiaisonBuilder) -> liaison::engine::LiaisonBuilder,
) -> (Liaison, Vec<MockPartner>) {
    let mut mocks = Vec::new();
    let mut builder = Liaison::builder_arc(store.clone())
        .settings(quick_settings())
        .ownership(ownership())
        .alert_settings(settings());
    for name in partners {
        let mock = MockPartner::start_with(Behavior::Reject { status: 422 })
            .await
            .unwrap();
        builder = builder.partner(partner(name, &mock));
        mocks.push(mock);
    }
    let liaison = build(builder).build().unwrap();
    for (i, name) in partners.iter().enumerate() {
        liaison.enqueue(claim(name, i)).await.unwrap();
    }
    drain(&liaison).await;
    (liaison, mocks)
}

fn drain_channel(
    receiver: &mut tokio::sync::mpsc::Receiver<(AlertEvent, Alert)>,
) -> Vec<(AlertEvent, Alert)> {
    let mut got = Vec::new();
    while let Ok(item) = receiver.try_recv() {
        got.push(item);
    }
    got
}

async fn notifications_of(liaison: &Liaison, partner: &str) -> Vec<AlertNotification> {
    let mut all = Vec::new();
    for alert in liaison.alerts(false).await.unwrap() {
        if alert.partner == partner {
            all.extend(liaison.alert_notifications(alert.id).await.unwrap());
        }
    }
    all
}

async fn settled(liaison: &Liaison, partner: &str, sink: &str, state: NotificationState) -> bool {
    notifications_of(liaison, partner)
        .await
        .iter()
        .any(|n| n.sink == sink && n.state == state)
}

pub async fn alerts_go_to_their_owners_sinks_and_the_catch_all(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let (revenue, mut revenue_rx) = ChannelSink::new(16);
    let (lab, mut lab_rx) = ChannelSink::new(16);
    let (all, mut all_rx) = ChannelSink::new(16);
    let (liaison, _mocks) = refused(&store, &["clearinghouse", "lab"], |b| {
        b.alert_sink(all)
            .owner_sink("revenue cycle", revenue)
            .owner_sink("lab operations", lab)
    })
    .await;
    liaison.evaluate_alerts().await.unwrap();
    // Every notification journaled and delivered: two for each partner
    // (its owner's sink and the catch-all).
    for partner in ["clearinghouse", "lab"] {
        eventually("both sinks delivered", WAIT, || async {
            let n = notifications_of(&liaison, partner).await;
            n.len() == 2 && n.iter().all(|n| n.state == NotificationState::Delivered)
        })
        .await;
    }
    let to_revenue = drain_channel(&mut revenue_rx);
    let to_lab = drain_channel(&mut lab_rx);
    let to_all = drain_channel(&mut all_rx);
    let partners = |got: &[(AlertEvent, Alert)]| -> Vec<(String, String)> {
        let mut p: Vec<_> = got
            .iter()
            .map(|(_, a)| (a.partner.clone(), a.owner.name.clone()))
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        partners(&to_revenue),
        [("clearinghouse".to_owned(), "revenue cycle".to_owned())],
        "{name}: the clearinghouse's alert to revenue cycle only"
    );
    assert_eq!(
        partners(&to_lab),
        [("lab".to_owned(), "lab operations".to_owned())],
        "{name}: the lab's alert to lab operations only"
    );
    assert_eq!(
        partners(&to_all).len(),
        2,
        "{name}: the catch-all hears both"
    );
    for (event, alert) in to_revenue.iter().chain(&to_lab).chain(&to_all) {
        assert_eq!(*event, AlertEvent::Opened, "{name}");
        assert_eq!(alert.class, ProblemClass::RejectedByPartner, "{name}");
    }
    // Journaled per (alert, event, sink), with the owner; counted once.
    let journal = notifications_of(&liaison, "clearinghouse").await;
    let mut sinks: Vec<_> = journal.iter().map(|n| n.sink.as_str()).collect();
    sinks.sort();
    // The three channel sinks are told apart by the order they were added.
    assert_eq!(sinks, ["channel", "channel#2"], "{name}: {journal:?}");
    for n in &journal {
        assert_eq!(n.owner, "revenue cycle", "{name}");
        assert_eq!((n.event, n.attempts), (AlertEvent::Opened, 1), "{name}");
        assert!(n.delivered_at.is_some() && n.last_error.is_none(), "{name}");
    }
    let alert = liaison
        .alerts(true)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.partner == "clearinghouse")
        .unwrap();
    assert_eq!(alert.notify_count, 1, "{name}: one round, two sinks");
    assert!(alert.last_notified_at.is_some(), "{name}");
    // Healthy sinks: nothing said about them.
    let report = liaison.health(Duration::from_secs(600)).await.unwrap();
    assert!(
        report
            .reasons
            .iter()
            .all(|r| !r.contains("alerts are not reaching")),
        "{name}: {:?}",
        report.reasons
    );
}

/// Fails its first `fails` calls, then delivers; counts calls.
#[derive(Debug, Clone, Default)]
struct Flaky {
    fails: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
    delivered: Arc<AtomicU32>,
}

#[async_trait]
impl AlertSink for Flaky {
    async fn notify(&self, _: AlertEvent, _: &Alert) -> Result<(), SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .fails
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::new("flaky", "HTTP 503 from the relay"));
        }
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn name(&self) -> &'static str {
        "flaky"
    }
}

pub async fn a_sink_that_fails_twice_is_retried_and_delivered_once(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let flaky = Flaky::default();
    flaky.fails.store(2, Ordering::SeqCst);
    let (liaison, _mocks) = refused(&store, &["lab"], |b| {
        b.owner_sink("lab operations", flaky.clone())
    })
    .await;
    let handle = liaison.start(); // the alert loop retries
    liaison.evaluate_alerts().await.unwrap();
    eventually("delivered on the third try", WAIT, || async {
        settled(&liaison, "lab", "flaky", NotificationState::Delivered).await
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    let journal = notifications_of(&liaison, "lab").await;
    let n = journal.iter().find(|n| n.sink == "flaky").unwrap();
    assert_eq!(n.attempts, 3, "{name}: {n:?}");
    assert_eq!(n.owner, "lab operations", "{name}");
    assert_eq!(
        n.last_error.as_deref(),
        Some("HTTP 503 from the relay"),
        "{name}: the failures stay on record"
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3, "{name}");
    assert_eq!(flaky.delivered.load(Ordering::SeqCst), 1, "{name}: once");
    let alert = liaison.alerts(true).await.unwrap().remove(0);
    assert_eq!(alert.notify_count, 1, "{name}");
    // Delivered: the sink is not reported as failing.
    let report = liaison.health(Duration::from_secs(600)).await.unwrap();
    assert!(
        report
            .reasons
            .iter()
            .all(|r| !r.contains("alerts are not reaching")),
        "{name}: {:?}",
        report.reasons
    );
}

/// Fails until switched on.
#[derive(Debug, Clone, Default)]
struct Switch {
    working: Arc<AtomicBool>,
}

#[async_trait]
impl AlertSink for Switch {
    async fn notify(&self, _: AlertEvent, _: &Alert) -> Result<(), SinkError> {
        if self.working.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(SinkError::new("switch", "connection refused"))
        }
    }
    fn name(&self) -> &'static str {
        "switch"
    }
}

pub async fn a_sink_that_always_fails_ends_failed_and_health_says_so_until_it_works(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let switch = Switch::default();
    // The only sink: nothing delivers the alert while it fails.
    let (liaison, _mocks) = refused(&store, &["lab"], |b| b.alert_sink(switch.clone())).await;
    let handle = liaison.start();
    liaison.evaluate_alerts().await.unwrap();
    eventually("failed for good", WAIT, || async {
        settled(&liaison, "lab", "switch", NotificationState::Failed).await
    })
    .await;
    let journal = notifications_of(&liaison, "lab").await;
    assert_eq!(journal.len(), 1, "{name}: {journal:?}");
    let failed = &journal[0];
    assert_eq!(failed.attempts, 3, "{name}: sink_attempts");
    assert_eq!(
        failed.last_error.as_deref(),
        Some("connection refused"),
        "{name}"
    );
    assert_eq!(failed.next_try_at, None, "{name}");
    // Not delivered: the alert does not count as notified.
    let alert = liaison.alerts(true).await.unwrap().remove(0);
    assert_eq!(
        (alert.notify_count, alert.last_notified_at),
        (0, None),
        "{name}"
    );

    // Health says so, in plain words, for the partner concerned.
    let report = liaison.health(Duration::from_secs(600)).await.unwrap();
    let lab = report.partners.iter().find(|p| p.partner == "lab").unwrap();
    assert!(lab.verdict >= Verdict::Degraded, "{name}");
    let reason = lab
        .reasons
        .iter()
        .find(|r| {
            r.starts_with(
                "alerts are not reaching lab operations (switch: connection refused) since ",
            )
        })
        .unwrap_or_else(|| panic!("{name}: {:?}", lab.reasons));
    assert!(report.reasons.contains(&format!("lab: {reason}")), "{name}");
    assert_eq!(lab.undelivered_alerts.len(), 1, "{name}");
    let metrics = liaison
        .render_metrics(Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        metrics.contains("liaison_alert_sinks_failing 1\n"),
        "{name}"
    );
    assert!(
        metrics.contains(r#"liaison_alert_notifications_total{sink="switch",outcome="failed"} 1"#),
        "{name}: {metrics}"
    );

    // The sink works again: the next evaluation sends a reminder (the
    // failed opening did not count as notified), it is delivered, and
    // health recovers.
    switch.working.store(true, Ordering::SeqCst);
    liaison.evaluate_alerts().await.unwrap();
    eventually("the reminder delivered", WAIT, || async {
        settled(&liaison, "lab", "switch", NotificationState::Delivered).await
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    let journal = notifications_of(&liaison, "lab").await;
    let events: Vec<_> = journal.iter().map(|n| (n.event, n.state)).collect();
    assert_eq!(
        events,
        [
            (AlertEvent::Opened, NotificationState::Failed),
            (AlertEvent::Renotified, NotificationState::Delivered)
        ],
        "{name}"
    );
    let alert = liaison.alerts(true).await.unwrap().remove(0);
    assert_eq!(alert.notify_count, 1, "{name}");
    let report = liaison.health(Duration::from_secs(600)).await.unwrap();
    assert!(
        report
            .reasons
            .iter()
            .all(|r| !r.contains("alerts are not reaching")),
        "{name}: {:?}",
        report.reasons
    );
    let metrics = liaison
        .render_metrics(Duration::from_secs(600))
        .await
        .unwrap();
    assert!(
        metrics.contains("liaison_alert_sinks_failing 0\n"),
        "{name}"
    );
}

/// Never answers its first call; answers the next ones.
#[derive(Debug, Clone, Default)]
struct HangsOnce {
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl AlertSink for HangsOnce {
    async fn notify(&self, _: AlertEvent, _: &Alert) -> Result<(), SinkError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "hangs-once"
    }
}

pub async fn a_hanging_sink_times_out_and_is_retried_without_holding_up_the_others(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let hangs = HangsOnce::default();
    let (channel, mut rx) = ChannelSink::new(16);
    let (liaison, _mocks) = refused(&store, &["lab"], |b| {
        b.owner_sink("lab operations", hangs.clone())
            .alert_sink(channel)
    })
    .await;
    let handle = liaison.start();
    tokio::time::timeout(Duration::from_secs(10), liaison.evaluate_alerts())
        .await
        .expect("an evaluation does not wait for sinks")
        .unwrap();
    // The other sink delivers while the hanging one is still in its first try.
    eventually("the channel delivered", WAIT, || async {
        settled(&liaison, "lab", "channel", NotificationState::Delivered).await
    })
    .await;
    assert_eq!(drain_channel(&mut rx).len(), 1, "{name}");
    let hanging = notifications_of(&liaison, "lab")
        .await
        .into_iter()
        .find(|n| n.sink == "hangs-once")
        .unwrap();
    if hanging.state == NotificationState::Pending {
        assert_eq!(hanging.attempts, 1, "{name}: {hanging:?}");
    }
    // Timed out (2 s), then retried and delivered.
    eventually("the hanging sink retried and delivered", WAIT, || async {
        settled(&liaison, "lab", "hangs-once", NotificationState::Delivered).await
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await.unwrap();
    let hanging = notifications_of(&liaison, "lab")
        .await
        .into_iter()
        .find(|n| n.sink == "hangs-once")
        .unwrap();
    assert_eq!(hanging.attempts, 2, "{name}: {hanging:?}");
    assert_eq!(
        hanging.last_error.as_deref(),
        Some("no answer within 2000 ms"),
        "{name}"
    );
}
