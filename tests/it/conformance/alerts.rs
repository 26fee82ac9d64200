//! Alerts: at most one open per (partner, class), however many instances
//! open it at once; notified, acknowledged and resolved; a new one opens
//! after the last resolved.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use liaison::Actor;
use liaison::ops::alerts::{AlertId, Owner, ProblemClass};
use liaison::store::NewAlert;

use super::harness::Harness;
use super::health_stats::ms;

fn new_alert(partner: &str, class: ProblemClass, details: &str, at: DateTime<Utc>) -> NewAlert {
    NewAlert::new(
        partner,
        class,
        Owner::new("lab vendor desk", "vendor-desk@lab.example")
            .runbook("https://runbooks.example/lab-down"),
        details,
    )
    .at(at)
}

pub async fn one_alert_opens_under_concurrent_opens(h: &Harness) {
    let stores = [h.store().await, h.store().await];
    let now = ms(Utc::now());
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % 2].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            store
                .open_alert(new_alert(
                    "lab",
                    ProblemClass::PartnerUnavailable,
                    &format!("seen by evaluator {i}"),
                    now,
                ))
                .await
                .unwrap()
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let name = h.name();
    let opened: Vec<_> = results.iter().filter(|(_, new)| *new).collect();
    assert_eq!(opened.len(), 1, "{name}: opened exactly once");
    let id = opened[0].0.id;
    assert!(
        results.iter().all(|(a, _)| a.id == id),
        "{name}: every caller got the one open alert"
    );
    let open = stores[1].alerts(true, 100).await.unwrap();
    assert_eq!(open.len(), 1, "{name}");
    assert_eq!(open[0].id, id);
    assert!(open[0].details.starts_with("seen by evaluator "));

    // Another class, or another partner, is another alert.
    for (partner, class) in [
        ("lab", ProblemClass::ResultOverdue),
        ("bank", ProblemClass::PartnerUnavailable),
    ] {
        let (other, new) = stores[0]
            .open_alert(new_alert(partner, class, "x", now))
            .await
            .unwrap();
        assert!(new, "{name}: {partner} {class:?}");
        assert_ne!(other.id, id);
    }
    assert_eq!(stores[0].alerts(true, 100).await.unwrap().len(), 3);
}

pub async fn an_alert_is_notified_acknowledged_resolved_and_reopens(h: &Harness) {
    let store = h.store().await;
    let name = h.name();
    let t0 = ms(Utc::now());
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    let class = ProblemClass::PartnerUnavailable;

    let mut first = new_alert("lab", class, "circuit open", t0);
    first.expected = true;
    let (alert, new) = store.open_alert(first.clone()).await.unwrap();
    assert!(new);
    assert_eq!(alert.partner, "lab");
    assert_eq!(alert.class, class);
    assert_eq!(alert.owner, first.owner, "{name}: owner round trips");
    assert_eq!(alert.opened_at, t0);
    assert_eq!(
        (alert.last_notified_at, alert.notify_count),
        (None, 0),
        "{name}"
    );
    assert_eq!(alert.acknowledged_by, None);
    assert_eq!(alert.acknowledged_at, None);
    assert_eq!(alert.resolved_at, None);
    assert!(alert.expected);
    assert_eq!(alert.details, "circuit open");

    // Opening it again while open updates its details only.
    let again = new_alert("lab", class, "circuit open for 2 minutes", at(2));
    let (same, new) = store.open_alert(again).await.unwrap();
    assert!(!new);
    assert_eq!(same.id, alert.id);
    assert_eq!(same.details, "circuit open for 2 minutes", "{name}");
    assert_eq!(same.opened_at, t0);
    assert!(same.expected, "{name}: as opened");

    store.alert_notified(alert.id, at(1)).await.unwrap();
    store.alert_notified(alert.id, at(3)).await.unwrap();
    let listed = store.alerts(true, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].notify_count, 2, "{name}");
    assert_eq!(listed[0].last_notified_at, Some(at(3)));

    let acked = store
        .acknowledge_alert(alert.id, Actor::person("dana"), at(4))
        .await
        .unwrap();
    assert_eq!(
        acked.acknowledged_by.as_ref().map(Actor::as_str),
        Some("dana")
    );
    assert_eq!(acked.acknowledged_at, Some(at(4)));
    assert!(acked.is_open());

    let resolved = store.resolve_alert(alert.id, at(5)).await.unwrap();
    assert_eq!(resolved.resolved_at, Some(at(5)));
    assert!(!resolved.is_open());
    assert_eq!(resolved.notify_count, 2);
    // The first resolution stands.
    let again = store.resolve_alert(alert.id, at(6)).await.unwrap();
    assert_eq!(again.resolved_at, Some(at(5)), "{name}");
    let err = store
        .acknowledge_alert(alert.id, Actor::person("eve"), at(6))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{name}: {err}");
    assert!(store.alerts(true, 10).await.unwrap().is_empty());

    // A new one can open once the last is resolved.
    let (second, new) = store
        .open_alert(new_alert("lab", class, "down again", at(7)))
        .await
        .unwrap();
    assert!(new, "{name}");
    assert_ne!(second.id, alert.id);
    assert!(!second.expected);
    let open = store.alerts(true, 10).await.unwrap();
    assert_eq!(open.iter().map(|a| a.id).collect::<Vec<_>>(), [second.id]);
    let all = store.alerts(false, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.id).collect::<Vec<_>>(),
        [second.id, alert.id],
        "{name}: newest first"
    );
    assert_eq!(all[1], again);
    assert_eq!(store.alerts(false, 1).await.unwrap(), [second]);

    let unknown: AlertId = uuid::Uuid::new_v4().to_string().parse().unwrap();
    assert!(
        store
            .resolve_alert(unknown, at(8))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .acknowledge_alert(unknown, Actor::person("dana"), at(8))
            .await
            .unwrap_err()
            .is_not_found()
    );
}
