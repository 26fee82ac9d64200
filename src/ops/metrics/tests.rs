use std::collections::BTreeMap;
use std::thread;

use chrono::Utc;

use super::exposition::{find, parse, value};
use super::*;
use crate::ops::{Percentiles, Trend, WindowOutcomes};
use crate::store::Totals;

// ---- health report builders ----

fn partner_health(name: &str) -> PartnerHealth {
    PartnerHealth {
        partner: name.to_owned(),
        verdict: Verdict::Healthy,
        reasons: vec![],
        by_state: BTreeMap::new(),
        window: WindowOutcomes::default(),
        previous_window: WindowOutcomes::default(),
        trend: Trend::Unknown,
        enqueue_to_accepted: Percentiles::default(),
        accepted_to_result: Percentiles::default(),
        oldest_queued_secs: None,
        stuck: 0,
        circuit: None,
        callback_verification: None,
        at_risk: Totals::default(),
        at_risk_by_kind: BTreeMap::new(),
        at_risk_by_age: BTreeMap::new(),
        deadlines: Default::default(),
        past_delay_budget: Totals::default(),
        paused: None,
        callbacks: BTreeMap::new(),
        worker_crashed: 0,
        dispatcher: crate::ops::DispatcherHealth::default(),
        traffic: None,
        quarantined: BTreeMap::new(),
        undelivered_alerts: vec![],
    }
}

fn report(partners: Vec<PartnerHealth>) -> HealthReport {
    HealthReport {
        generated_at: Utc::now(),
        window_secs: 3600,
        verdict: partners
            .iter()
            .map(|p| p.verdict)
            .max()
            .unwrap_or(Verdict::Healthy),
        reasons: vec![],
        at_risk: Totals::default(),
        partners,
        instances: vec![],
    }
}

fn lab_and_bank() -> HealthReport {
    let mut lab = partner_health("lab");
    lab.verdict = Verdict::Degraded;
    lab.by_state
        .insert(SubmissionState::Queued, Totals::of(4, None, 400));
    lab.by_state
        .insert(SubmissionState::Stuck, Totals::of(1, None, 2_500));
    lab.oldest_queued_secs = Some(42);
    lab.circuit = Some(CircuitState::HalfOpen);
    lab.at_risk = Totals::of(1, Some(crate::Currency::from_code("EUR").unwrap()), 2_500);
    lab.deadlines.at_risk = Totals::of(2, None, 0);
    lab.deadlines.missed = Totals::of(1, None, 0);
    let mut bank = partner_health("bank.eu-1:v2/x");
    bank.verdict = Verdict::Down;
    bank.circuit = Some(CircuitState::Open);
    report(vec![lab, bank])
}

// ---- tests ----

#[test]
fn an_empty_registry_renders_only_the_unlabelled_metrics() {
    // Every family is empty but the counter and the gauges without labels,
    // which start at 0 (so `rate()` sees the counter's first increase, and
    // no live engine reads as 0, not as a missing series).
    assert_eq!(
        Metrics::new().render(&report(vec![])),
        "# HELP liaison_callbacks_unknown Callbacks to names that are no configured partner \
         (stored without their bodies).\n\
         # TYPE liaison_callbacks_unknown counter\n\
         liaison_callbacks_unknown_total 0\n\
         # HELP liaison_instances_live Engine instances beating into the store now.\n\
         # TYPE liaison_instances_live gauge\n\
         liaison_instances_live 0\n\
         # HELP liaison_alert_sinks_failing Owner and sink pairs whose alert deliveries are \
         failing now.\n\
         # TYPE liaison_alert_sinks_failing gauge\n\
         liaison_alert_sinks_failing 0\n\
         # EOF\n"
    );
}

#[test]
fn alert_notifications_count_by_sink_and_outcome_and_failing_sinks_are_a_gauge() {
    let metrics = Metrics::new();
    metrics.alert_notification("chat", "retrying");
    metrics.alert_notification("chat", "retrying");
    metrics.alert_notification("chat", "delivered");
    metrics.alert_notification("webhook", "failed");
    let failure = |partner: &str, owner: &str, sink: &str| crate::ops::alerts::SinkFailure {
        partner: partner.into(),
        owner: owner.into(),
        sink: sink.into(),
        error: "HTTP 503".into(),
        since: Utc::now(),
    };
    let mut lab = partner_health("lab");
    lab.undelivered_alerts = vec![failure("lab", "lab operations", "chat")];
    let mut bank = partner_health("bank");
    // The same owner and sink for two partners is one failing sink.
    bank.undelivered_alerts = vec![
        failure("bank", "lab operations", "chat"),
        failure("bank", "revenue cycle", "webhook"),
    ];
    let families = parse(&metrics.render(&report(vec![lab, bank]))).unwrap();
    let total = "liaison_alert_notifications_total";
    assert_eq!(
        value(
            &families,
            total,
            &[("sink", "chat"), ("outcome", "retrying")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &families,
            total,
            &[("sink", "chat"), ("outcome", "delivered")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &families,
            total,
            &[("sink", "webhook"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&families, "liaison_alert_sinks_failing", &[]),
        Some(2.0)
    );
    // Recovered: the gauge follows the next report.
    let families = parse(&metrics.render(&report(vec![partner_health("lab")]))).unwrap();
    assert_eq!(
        value(&families, "liaison_alert_sinks_failing", &[]),
        Some(0.0)
    );
}

#[test]
fn render_is_valid_openmetrics_with_the_expected_values() {
    let m = Metrics::new();
    m.submission_enqueued("lab");
    m.submission_enqueued("lab");
    m.submission_enqueued("bank.eu-1:v2/x");
    m.attempt("lab", AttemptOutcome::Transient, Duration::from_millis(3));
    m.attempt("lab", AttemptOutcome::Transient, Duration::from_millis(120));
    m.attempt("lab", AttemptOutcome::Accepted, Duration::from_secs(90));
    m.attempt(
        "bank.eu-1:v2/x",
        AttemptOutcome::Timeout,
        Duration::from_secs(30),
    );
    m.callback("lab", Disposition::Applied);
    m.callback("lab", Disposition::Duplicate);
    m.callback_to_unknown_partner();
    m.unverified_body_dropped("lab");
    m.unverified_body_dropped("lab");
    m.callback("lab", Disposition::Applied);
    m.alert_opened("lab", "result_overdue");
    m.time_to_result("lab", 0.5);
    m.time_to_result("lab", 3_600.0);
    m.time_to_result("lab", 30.0 * 86_400.0);
    m.lease_expired("bank.eu-1:v2/x");
    m.lease_expired("lab");
    m.poison_dead_lettered("lab");

    let text = m.render(&lab_and_bank());
    let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    // Naming conventions.
    for f in &families {
        assert!(f.name.starts_with("liaison_"), "{}", f.name);
        match f.kind.as_str() {
            "counter" => assert!(f.samples.iter().all(|s| s.name.ends_with("_total"))),
            "histogram" => {
                assert!(f.name.ends_with("_seconds"), "{}", f.name);
                assert_eq!(f.unit.as_deref(), Some("seconds"));
                for suffix in ["_bucket", "_sum", "_count"] {
                    assert!(f.samples.iter().any(|s| s.name.ends_with(suffix)));
                }
                assert!(
                    f.samples
                        .iter()
                        .any(|s| { s.labels.contains(&("le".to_owned(), "+Inf".to_owned())) })
                );
            }
            _ => {}
        }
        if f.name.ends_with("_seconds") {
            assert_eq!(f.unit.as_deref(), Some("seconds"), "{}", f.name);
        }
    }
    let mut names: Vec<_> = families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("liaison_alert_sinks_failing", "gauge"),
            ("liaison_alerts", "counter"),
            ("liaison_attempt_duration_seconds", "histogram"),
            ("liaison_attempts", "counter"),
            ("liaison_business_deadline_at_risk", "gauge"),
            ("liaison_business_deadline_missed", "gauge"),
            ("liaison_callbacks", "counter"),
            ("liaison_callbacks_unknown", "counter"),
            ("liaison_callbacks_unverified_dropped", "counter"),
            ("liaison_circuit_state", "gauge"),
            ("liaison_instances_live", "gauge"),
            ("liaison_leases_expired", "counter"),
            ("liaison_oldest_queued_seconds", "gauge"),
            ("liaison_partner_verdict", "gauge"),
            ("liaison_poison_dead_letters", "counter"),
            ("liaison_submissions", "gauge"),
            ("liaison_submissions_enqueued", "counter"),
            ("liaison_time_to_result_seconds", "histogram"),
            ("liaison_value_at_risk", "gauge"),
        ]
    );
    assert!(text.contains("# HELP liaison_attempts Attempts to send"));
    assert!(
        text.contains("\nliaison_callbacks_unknown_total 1\n"),
        "{text}"
    );

    // Counters, exactly as the text shows them.
    assert!(text.contains("\nliaison_attempts_total{partner=\"lab\",outcome=\"transient\"} 2\n"));
    let v = |name: &str, labels: &[(&str, &str)]| value(&families, name, labels);
    let lab = ("partner", "lab");
    let bank = ("partner", "bank.eu-1:v2/x");
    assert_eq!(v("liaison_submissions_enqueued_total", &[lab]), Some(2.0));
    assert_eq!(v("liaison_submissions_enqueued_total", &[bank]), Some(1.0));
    assert_eq!(
        v("liaison_callbacks_unverified_dropped_total", &[lab]),
        Some(2.0)
    );
    assert_eq!(
        v("liaison_attempts_total", &[lab, ("outcome", "accepted")]),
        Some(1.0)
    );
    assert_eq!(
        v("liaison_attempts_total", &[bank, ("outcome", "timeout")]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "liaison_callbacks_total",
            &[lab, ("disposition", "applied")]
        ),
        Some(2.0)
    );
    assert_eq!(
        v(
            "liaison_callbacks_total",
            &[lab, ("disposition", "duplicate")]
        ),
        Some(1.0)
    );
    assert_eq!(
        v("liaison_alerts_total", &[lab, ("class", "result_overdue")]),
        Some(1.0)
    );
    assert_eq!(v("liaison_leases_expired_total", &[bank]), Some(1.0));
    assert_eq!(v("liaison_leases_expired_total", &[lab]), Some(1.0));
    assert_eq!(v("liaison_poison_dead_letters_total", &[lab]), Some(1.0));
    assert_eq!(v("liaison_poison_dead_letters_total", &[bank]), None);

    // Histograms: 3 ms, 120 ms and 90 s at the lab.
    let d = "liaison_attempt_duration_seconds";
    assert_eq!(v(&format!("{d}_count"), &[lab]), Some(3.0));
    let sum = v(&format!("{d}_sum"), &[lab]).unwrap();
    assert!((sum - 90.123).abs() < 1e-9, "{sum}");
    assert_eq!(
        v(&format!("{d}_bucket"), &[lab, ("le", "0.005")]),
        Some(1.0)
    );
    assert_eq!(v(&format!("{d}_bucket"), &[lab, ("le", "0.25")]), Some(2.0));
    assert_eq!(v(&format!("{d}_bucket"), &[lab, ("le", "60.0")]), Some(2.0));
    assert_eq!(v(&format!("{d}_bucket"), &[lab, ("le", "+Inf")]), Some(3.0));
    let t = "liaison_time_to_result_seconds";
    assert_eq!(v(&format!("{t}_bucket"), &[lab, ("le", "1.0")]), Some(1.0));
    assert_eq!(
        v(&format!("{t}_bucket"), &[lab, ("le", "3600.0")]),
        Some(2.0)
    );
    assert_eq!(
        v(&format!("{t}_bucket"), &[lab, ("le", "604800.0")]),
        Some(2.0)
    );
    assert_eq!(v(&format!("{t}_bucket"), &[lab, ("le", "+Inf")]), Some(3.0));
    assert_eq!(v(&format!("{t}_count"), &[lab]), Some(3.0));

    // Gauges from the report.
    assert_eq!(
        v("liaison_submissions", &[lab, ("state", "queued")]),
        Some(4.0)
    );
    assert_eq!(
        v("liaison_submissions", &[lab, ("state", "stuck")]),
        Some(1.0)
    );
    for state in SubmissionState::ALL {
        let want = match state {
            SubmissionState::Queued => 4.0,
            SubmissionState::Stuck => 1.0,
            _ => 0.0,
        };
        assert_eq!(
            v("liaison_submissions", &[lab, ("state", state.as_str())]),
            Some(want)
        );
        assert_eq!(
            v("liaison_submissions", &[bank, ("state", state.as_str())]),
            Some(0.0)
        );
    }
    assert_eq!(v("liaison_oldest_queued_seconds", &[lab]), Some(42.0));
    assert_eq!(v("liaison_oldest_queued_seconds", &[bank]), Some(0.0));
    assert_eq!(v("liaison_circuit_state", &[lab]), Some(1.0));
    assert_eq!(v("liaison_circuit_state", &[bank]), Some(2.0));
    let eur = ("currency", "EUR");
    let unspecified = ("currency", "unspecified");
    assert_eq!(v("liaison_value_at_risk", &[lab, eur]), Some(2500.0));
    assert_eq!(v("liaison_value_at_risk", &[lab, unspecified]), Some(0.0));
    assert_eq!(v("liaison_value_at_risk", &[bank, unspecified]), Some(0.0));
    assert_eq!(v("liaison_value_at_risk", &[bank, eur]), None);
    assert_eq!(v("liaison_business_deadline_at_risk", &[lab]), Some(2.0));
    assert_eq!(v("liaison_business_deadline_missed", &[lab]), Some(1.0));
    assert_eq!(v("liaison_business_deadline_at_risk", &[bank]), Some(0.0));
    assert_eq!(v("liaison_partner_verdict", &[lab]), Some(1.0));
    assert_eq!(v("liaison_partner_verdict", &[bank]), Some(2.0));
    assert!(find(&families, "liaison_partner_verdict").is_some());
}

#[test]
fn gauges_follow_the_latest_report_and_counters_keep_counting() {
    let m = Metrics::new();
    m.submission_enqueued("bank.eu-1:v2/x");
    let first = parse(&m.render(&lab_and_bank())).unwrap();
    let bank = ("partner", "bank.eu-1:v2/x");
    assert_eq!(value(&first, "liaison_partner_verdict", &[bank]), Some(2.0));

    // The bank leaves the report; the lab's circuit is no longer known here.
    let mut lab = partner_health("lab");
    lab.by_state
        .insert(SubmissionState::Queued, Totals::of(1, None, 0));
    m.submission_enqueued("bank.eu-1:v2/x");
    let text = m.render(&report(vec![lab]));
    let second = parse(&text).unwrap();
    assert!(!text.contains("state=\"queued\"} 4"), "{text}");
    assert_eq!(value(&second, "liaison_partner_verdict", &[bank]), None);
    assert_eq!(
        value(&second, "liaison_submissions", &[bank, ("state", "queued")]),
        None
    );
    assert_eq!(
        value(
            &second,
            "liaison_submissions",
            &[("partner", "lab"), ("state", "queued")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&second, "liaison_partner_verdict", &[("partner", "lab")]),
        Some(0.0)
    );
    // No circuit known anywhere: the family has no samples and is left out.
    assert!(find(&second, "liaison_circuit_state").is_none());
    assert_eq!(
        value(&second, "liaison_submissions_enqueued_total", &[bank]),
        Some(2.0)
    );
}

#[test]
fn time_to_result_drops_non_finite_figures_and_clamps_negative_ones() {
    let m = Metrics::new();
    m.time_to_result("lab", f64::NAN);
    m.time_to_result("lab", f64::INFINITY);
    m.time_to_result("lab", -3.0);
    let families = parse(&m.render(&report(vec![]))).unwrap();
    let lab = ("partner", "lab");
    let t = "liaison_time_to_result_seconds";
    assert_eq!(value(&families, &format!("{t}_count"), &[lab]), Some(1.0));
    assert_eq!(value(&families, &format!("{t}_sum"), &[lab]), Some(0.0));
    assert_eq!(
        value(&families, &format!("{t}_bucket"), &[lab, ("le", "1.0")]),
        Some(1.0)
    );
}

#[test]
fn clones_share_one_registry_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug + 'static>() {}
    assert_send_sync::<Metrics>();
    let m = Metrics::new();
    m.clone().lease_expired("lab");
    assert!(
        m.render(&report(vec![]))
            .contains("liaison_leases_expired_total{partner=\"lab\"} 1\n")
    );
    assert!(format!("{m:?}").starts_with("Metrics"));
}

#[test]
fn concurrent_recording_from_eight_threads_adds_up_exactly() {
    const THREADS: usize = 8;
    const EACH: usize = 2_000;
    let m = Metrics::new();
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let m = m.clone();
            thread::spawn(move || {
                let own = format!("p{i}");
                for n in 0..EACH {
                    m.submission_enqueued("shared");
                    m.submission_enqueued(&own);
                    let outcome = if n.is_multiple_of(2) {
                        AttemptOutcome::Succeeded
                    } else {
                        AttemptOutcome::Transient
                    };
                    // 0.5 s and 2 s are exact in binary, so the sum is exact.
                    m.attempt("shared", outcome, Duration::from_millis(500));
                    m.time_to_result("shared", 2.0);
                    m.callback("shared", Disposition::Applied);
                    m.alert_opened("shared", "partner_unavailable");
                    m.lease_expired("shared");
                    if n.is_multiple_of(500) {
                        // Scrapes while recording must stay valid.
                        parse(&m.render(&report(vec![partner_health("shared")]))).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }

    let families = parse(&m.render(&report(vec![]))).unwrap();
    let all = (THREADS * EACH) as f64;
    let shared = ("partner", "shared");
    let v = |name: &str, labels: &[(&str, &str)]| value(&families, name, labels);
    assert_eq!(
        v("liaison_submissions_enqueued_total", &[shared]),
        Some(all)
    );
    for i in 0..THREADS {
        let own = format!("p{i}");
        assert_eq!(
            v("liaison_submissions_enqueued_total", &[("partner", &own)]),
            Some(EACH as f64)
        );
    }
    for outcome in ["succeeded", "transient"] {
        assert_eq!(
            v("liaison_attempts_total", &[shared, ("outcome", outcome)]),
            Some(all / 2.0)
        );
    }
    let d = "liaison_attempt_duration_seconds";
    assert_eq!(v(&format!("{d}_count"), &[shared]), Some(all));
    assert_eq!(v(&format!("{d}_sum"), &[shared]), Some(all * 0.5));
    assert_eq!(
        v(&format!("{d}_bucket"), &[shared, ("le", "0.25")]),
        Some(0.0)
    );
    assert_eq!(
        v(&format!("{d}_bucket"), &[shared, ("le", "0.5")]),
        Some(all)
    );
    let t = "liaison_time_to_result_seconds";
    assert_eq!(v(&format!("{t}_sum"), &[shared]), Some(all * 2.0));
    assert_eq!(
        v(&format!("{t}_bucket"), &[shared, ("le", "+Inf")]),
        Some(all)
    );
    assert_eq!(
        v(
            "liaison_callbacks_total",
            &[shared, ("disposition", "applied")]
        ),
        Some(all)
    );
    assert_eq!(
        v(
            "liaison_alerts_total",
            &[shared, ("class", "partner_unavailable")]
        ),
        Some(all)
    );
    assert_eq!(v("liaison_leases_expired_total", &[shared]), Some(all));
}

#[test]
fn instances_are_counted_live_and_their_beats_shown() {
    use crate::ops::InstanceHealth;
    use crate::store::Instance;
    let m = Metrics::new();
    let mut r = report(vec![partner_health("lab")]);
    let beat = |id: &str, host: &str, live: bool, at: i64| {
        let mut instance = Instance::this_process(vec!["lab".into()], Duration::from_secs(5));
        instance.id = id.into();
        instance.host = host.into();
        instance.last_beat_at = chrono::DateTime::from_timestamp(at, 0).unwrap();
        InstanceHealth { instance, live }
    };
    r.instances = vec![
        beat("a", "web-1", true, 1_700_000_100),
        beat("b", "web-\"2\"", false, 1_700_000_000),
    ];
    let text = m.render(&r);
    let families = parse(&text).unwrap();
    assert_eq!(value(&families, "liaison_instances_live", &[]), Some(1.0));
    assert_eq!(
        value(
            &families,
            "liaison_instance_last_beat_timestamp_seconds",
            &[("instance", "a"), ("host", "web-1")]
        ),
        Some(1_700_000_100.0)
    );
    assert_eq!(
        value(
            &families,
            "liaison_instance_last_beat_timestamp_seconds",
            &[("instance", "b"), ("host", "web-\"2\"")]
        ),
        Some(1_700_000_000.0)
    );
    // Gone from the report, gone from the gauges.
    r.instances.clear();
    let families = parse(&m.render(&r)).unwrap();
    assert_eq!(value(&families, "liaison_instances_live", &[]), Some(0.0));
    assert!(
        find(&families, "liaison_instance_last_beat_timestamp_seconds")
            .is_none_or(|f| f.samples.is_empty())
    );
}
