//! The state engine instances share besides the work: one circuit per
//! partner (failures counted by all, one probe at a time, its answer
//! deciding for all) and roles one instance plays at a time. Two store
//! instances on one database stand for two host processes; concurrent steps
//! from both must come out as if applied one after the other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use liaison::engine::{CircuitSettings, CircuitState};
use liaison::store::{Admission, CircuitSignal, CircuitStep, RoleLease};

use super::harness::{Harness, Store};
use super::health_stats::ms;

fn report(signal: CircuitSignal, threshold: u32) -> CircuitStep {
    CircuitStep::Report {
        signal,
        settings: Some(CircuitSettings::new(threshold, Duration::from_secs(30)).unwrap()),
    }
}

fn admit(instance: &str) -> CircuitStep {
    CircuitStep::Admit {
        instance: instance.into(),
        probe_lease: Duration::from_secs(10),
    }
}

fn after(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    t + chrono::Duration::seconds(secs)
}

/// Run `n` copies of a step at once, alternating between the stores.
async fn at_once<T: Send + 'static>(
    stores: &[Store],
    n: usize,
    step: impl Fn(Store, usize) -> tokio::task::JoinHandle<T>,
) -> Vec<T> {
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(step(stores[i % stores.len()].clone(), i));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub async fn the_circuit_is_shared_one_probe_goes_out_and_its_answer_decides_for_all(h: &Harness) {
    let name = h.name();
    let stores = vec![h.store().await, h.store().await];
    let t0 = ms(Utc::now());
    // Nothing recorded: closed, no row needed to say so.
    let fresh = stores[0].circuit("lab").await.unwrap();
    assert_eq!(
        (fresh.state, fresh.consecutive_failures),
        (CircuitState::Closed, 0)
    );
    assert!(stores[0].circuits().await.unwrap().is_empty(), "{name}");

    // Failures seen by two instances count together: the fifth opens it.
    for i in 0..4 {
        let out = stores[i % 2]
            .circuit_step("lab", report(CircuitSignal::Unavailable, 5), t0)
            .await
            .unwrap();
        assert_eq!(out.circuit.state, CircuitState::Closed, "{name}");
        assert!(!out.changed);
    }
    let opened = stores[1]
        .circuit_step("lab", report(CircuitSignal::Unavailable, 5), t0)
        .await
        .unwrap();
    assert!(opened.changed, "{name}");
    assert_eq!(opened.circuit.state, CircuitState::Open);
    assert_eq!(opened.circuit.consecutive_failures, 5);
    assert_eq!(opened.circuit.until, Some(after(t0, 30)));
    // The other instance honours it.
    let seen = stores[0].circuit("lab").await.unwrap();
    assert_eq!(seen, opened.circuit, "{name}");
    let wait = stores[0]
        .circuit_step("lab", admit("a"), after(t0, 1))
        .await
        .unwrap();
    assert_eq!(
        wait.admission,
        Some(Admission::Wait {
            until: after(t0, 30)
        }),
        "{name}"
    );

    // The period is over: twelve instances ask at once, one probes.
    let probe_at = after(t0, 30);
    let answers = at_once(&stores, 12, |store, i| {
        tokio::spawn(async move {
            store
                .circuit_step("lab", admit(&format!("instance-{i}")), probe_at)
                .await
                .unwrap()
        })
    })
    .await;
    let probes: Vec<_> = answers
        .iter()
        .filter(|o| o.admission == Some(Admission::Probe))
        .collect();
    assert_eq!(probes.len(), 1, "{name}: {answers:?}");
    let circuit = stores[1].circuit("lab").await.unwrap();
    assert_eq!(circuit.state, CircuitState::HalfOpen, "{name}");
    assert_eq!(circuit.probe_holder, probes[0].circuit.probe_holder);
    assert_eq!(circuit.until, Some(after(t0, 40)), "the probe's lease");

    // The probe fails: open again for a full period, for everyone.
    let reopened = stores[0]
        .circuit_step("lab", report(CircuitSignal::Unavailable, 5), after(t0, 31))
        .await
        .unwrap();
    assert_eq!(reopened.circuit.state, CircuitState::Open, "{name}");
    assert_eq!(reopened.circuit.until, Some(after(t0, 61)));
    assert_eq!(reopened.circuit.probe_holder, None);

    // The next probe's holder dies: after its lease another instance probes.
    let first = stores[0]
        .circuit_step("lab", admit("dies"), after(t0, 61))
        .await
        .unwrap();
    assert_eq!(first.admission, Some(Admission::Probe), "{name}");
    let blocked = stores[1]
        .circuit_step("lab", admit("b"), after(t0, 70))
        .await
        .unwrap();
    assert!(
        matches!(blocked.admission, Some(Admission::Wait { .. })),
        "{name}"
    );
    let second = stores[1]
        .circuit_step("lab", admit("b"), after(t0, 71))
        .await
        .unwrap();
    assert_eq!(second.admission, Some(Admission::Probe), "{name}");
    assert_eq!(second.circuit.probe_holder.as_deref(), Some("b"));

    // It gets an answer: closed for all, the count cleared.
    let closed = stores[1]
        .circuit_step("lab", report(CircuitSignal::Reachable, 5), after(t0, 72))
        .await
        .unwrap();
    assert!(closed.changed, "{name}");
    for store in &stores {
        let c = store.circuit("lab").await.unwrap();
        assert_eq!(
            (c.state, c.consecutive_failures, c.probe_holder, c.until),
            (CircuitState::Closed, 0, None, None),
            "{name}"
        );
        let all = store.circuits().await.unwrap();
        assert_eq!(all.len(), 1, "{name}");
        assert_eq!(all[0].partner, "lab");
        let send = store
            .circuit_step("lab", admit("c"), after(t0, 73))
            .await
            .unwrap();
        assert_eq!(send.admission, Some(Admission::Send), "{name}");
    }
}

pub async fn concurrent_failure_reports_are_all_counted(h: &Harness) {
    let name = h.name();
    let stores = vec![h.store().await, h.store().await];
    let now = ms(Utc::now());
    at_once(&stores, 24, |store, _| {
        tokio::spawn(async move {
            let step = CircuitStep::Report {
                signal: CircuitSignal::Unavailable,
                settings: None,
            };
            store.circuit_step("lab", step, now).await.unwrap();
        })
    })
    .await;
    let c = stores[0].circuit("lab").await.unwrap();
    assert_eq!(c.consecutive_failures, 24, "{name}: no report lost");
    assert_eq!(
        c.state,
        CircuitState::Closed,
        "without settings it only counts"
    );
    // Another partner's circuit is its own.
    assert_eq!(
        stores[1]
            .circuit("bank")
            .await
            .unwrap()
            .consecutive_failures,
        0
    );
}

pub async fn one_instance_holds_a_role_and_another_takes_over_when_its_lease_runs_out(h: &Harness) {
    let name = h.name();
    let stores = vec![h.store().await, h.store().await];
    let t0 = ms(Utc::now());
    let lease = Duration::from_secs(60);
    let role = RoleLease::ALERT_EVALUATOR;
    // Ten instances at once: one holds it.
    let got = at_once(&stores, 10, |store, i| {
        tokio::spawn(async move {
            let me = format!("instance-{i}");
            let held = store.claim_role(role, &me, t0, lease).await.unwrap();
            (me, held)
        })
    })
    .await;
    let holders: Vec<_> = got.iter().filter(|(_, held)| *held).collect();
    assert_eq!(holders.len(), 1, "{name}: {got:?}");
    let holder = holders[0].0.clone();
    let roles = stores[1].roles().await.unwrap();
    assert_eq!(roles.len(), 1, "{name}");
    assert_eq!(
        (
            roles[0].holder.as_str(),
            roles[0].since,
            roles[0].expires_at
        ),
        (holder.as_str(), t0, after(t0, 60))
    );

    // It renews; the others keep being refused while it lives.
    assert!(
        stores[0]
            .claim_role(role, &holder, after(t0, 30), lease)
            .await
            .unwrap()
    );
    assert!(
        !stores[1]
            .claim_role(role, "other", after(t0, 89), lease)
            .await
            .unwrap(),
        "{name}"
    );
    // It dies: once its lease ran out another takes over.
    assert!(
        stores[1]
            .claim_role(role, "other", after(t0, 90), lease)
            .await
            .unwrap(),
        "{name}"
    );
    assert!(
        !stores[0]
            .claim_role(role, &holder, after(t0, 91), lease)
            .await
            .unwrap(),
        "{name}: the old holder lost it"
    );
    // Giving it up is for its holder; then anyone takes it at once.
    stores[0]
        .release_role(role, &holder, after(t0, 92))
        .await
        .unwrap();
    assert_eq!(stores[0].roles().await.unwrap()[0].holder, "other");
    stores[1]
        .release_role(role, "other", after(t0, 92))
        .await
        .unwrap();
    assert!(
        stores[0]
            .claim_role(role, &holder, after(t0, 93), lease)
            .await
            .unwrap(),
        "{name}"
    );
}

pub async fn bad_circuit_and_role_input_is_refused_and_writes_nothing(h: &Harness) {
    let name = h.name();
    let store = h.store().await;
    let now = Utc::now();
    for (partner, step) in [
        ("", admit("a")),
        ("lab\u{0}", admit("a")),
        (&"x".repeat(300)[..], admit("a")),
        ("lab", admit(" ")),
        (
            "lab",
            CircuitStep::ReleaseProbe {
                instance: String::new(),
            },
        ),
    ] {
        let err = store.circuit_step(partner, step, now).await.unwrap_err();
        assert!(err.is_invalid_input(), "{name}: {err:?}");
    }
    assert!(store.circuit("").await.unwrap_err().is_invalid_input());
    assert!(store.circuits().await.unwrap().is_empty(), "{name}");
    let lease = Duration::from_secs(1);
    assert!(
        store
            .claim_role("", "a", now, lease)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        store
            .claim_role("r", "", now, lease)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(
        store
            .release_role("r", " ", now)
            .await
            .unwrap_err()
            .is_invalid_input()
    );
    assert!(store.roles().await.unwrap().is_empty(), "{name}");
    // A lease "for ever" is representable.
    assert!(
        store
            .claim_role("r", "a", now, Duration::MAX)
            .await
            .unwrap()
    );
}
