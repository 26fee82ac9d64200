//! Prometheus metrics: counters and histograms recorded on the hot paths,
//! gauges taken from a [`HealthReport`] when scraped.
//!
//! See [`Metrics`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::callback::Disposition;
use crate::model::circuit::CircuitState;
use crate::model::event::AttemptOutcome;
use crate::model::submission::SubmissionState;
use crate::ops::{HealthReport, PartnerHealth, Verdict};

/// Upper bounds for one HTTP call to a partner: 5 ms to 60 s.
const ATTEMPT_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds from enqueue to the partner's result: 1 s to 7 days.
const TIME_TO_RESULT_BUCKETS: [f64; 18] = [
    1.0,       // 1 s
    5.0,       // 5 s
    15.0,      // 15 s
    30.0,      // 30 s
    60.0,      // 1 min
    120.0,     // 2 min
    300.0,     // 5 min
    600.0,     // 10 min
    1_800.0,   // 30 min
    3_600.0,   // 1 h
    7_200.0,   // 2 h
    14_400.0,  // 4 h
    28_800.0,  // 8 h
    43_200.0,  // 12 h
    86_400.0,  // 1 day
    172_800.0, // 2 days
    345_600.0, // 4 days
    604_800.0, // 7 days
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PartnerLabels {
    partner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
    host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    partner: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallbackLabels {
    partner: String,
    disposition: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlertLabels {
    partner: String,
    class: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CurrencyLabels {
    partner: String,
    /// ISO 4217 code, or `unspecified`.
    currency: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    sink: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    partner: String,
    state: &'static str,
}

fn partner(partner: &str) -> PartnerLabels {
    PartnerLabels {
        partner: partner.to_owned(),
    }
}

fn attempt_histogram() -> Histogram {
    Histogram::new(ATTEMPT_BUCKETS)
}

fn time_to_result_histogram() -> Histogram {
    Histogram::new(TIME_TO_RESULT_BUCKETS)
}

type HistogramFamily = Family<PartnerLabels, Histogram, fn() -> Histogram>;

/// Prometheus metrics for one engine: cheap to clone (the clones share one
/// registry) and safe to record from any thread.
///
/// Each recording method is one call with plain arguments; it costs a lock-free
/// atomic update plus the label lookup (a read-locked hash map, and a copy of
/// the partner name).
///
/// It owns a `prometheus_client` registry. The engine records events
/// as they happen; [`Metrics::render`] refreshes the gauges from a health
/// report and returns the whole registry in the OpenMetrics text format,
/// ready to serve with [`Metrics::CONTENT_TYPE`].
///
/// | metric | type | labels | recorded by |
/// |---|---|---|---|
/// | `liaison_submissions_enqueued_total` | counter | `partner` | [`Metrics::submission_enqueued`] |
/// | `liaison_attempts_total` | counter | `partner`, `outcome` | [`Metrics::attempt`] |
/// | `liaison_attempt_duration_seconds` | histogram, 5 ms .. 60 s | `partner` | [`Metrics::attempt`] |
/// | `liaison_callbacks_total` | counter | `partner`, `disposition` | [`Metrics::callback`] |
/// | `liaison_callbacks_unknown_total` | counter | none | [`Metrics::callback_to_unknown_partner`]: callbacks to names that are no configured partner (stored without their bodies) |
/// | `liaison_callbacks_unverified_dropped_total` | counter | `partner` | [`Metrics::unverified_body_dropped`]: callbacks from a configured partner that failed verification past its hourly cap of stored bodies (kept as metadata only) |
/// | `liaison_alerts_total` | counter | `partner`, `class` | [`Metrics::alert_opened`] |
/// | `liaison_alert_notifications_total` | counter | `sink`, `outcome` | [`Metrics::alert_notification`]: tries of alert notifications, `delivered`, `retrying` (failed, tried again later) or `failed` (for good) |
/// | `liaison_time_to_result_seconds` | histogram, 1 s .. 7 days | `partner` | [`Metrics::time_to_result`] |
/// | `liaison_leases_expired_total` | counter | `partner` | [`Metrics::lease_expired`] |
/// | `liaison_poison_dead_letters_total` | counter | `partner` | [`Metrics::poison_dead_lettered`]: submissions the reaper dead-lettered (the worker crashed or hung on them, or their retries ran out while it did) |
/// | `liaison_submissions` | gauge | `partner`, `state` | [`Metrics::render`]: every state, 0 when none |
/// | `liaison_oldest_queued_seconds` | gauge | `partner` | [`Metrics::render`]: 0 when nothing is queued |
/// | `liaison_circuit_state` | gauge | `partner` | [`Metrics::render`]: 0 closed, 1 half-open, 2 open (the circuit all instances share); absent for a partner this process does not run whose circuit never opened |
/// | `liaison_value_at_risk` | gauge | `partner`, `currency` | [`Metrics::render`]: business value at risk, in minor units of `currency` (an ISO 4217 code, or `unspecified`); one series per currency at risk, and `unspecified` always (0 when none) |
/// | `liaison_business_deadline_at_risk` | gauge | `partner` | [`Metrics::render`]: open submissions whose business deadline falls within the partner's lead time |
/// | `liaison_business_deadline_missed` | gauge | `partner` | [`Metrics::render`]: open submissions past their business deadline |
/// | `liaison_partner_verdict` | gauge | `partner` | [`Metrics::render`]: 0 healthy, 1 degraded, 2 down |
/// | `liaison_instances_live` | gauge | none | [`Metrics::render`]: engine instances beating into the store now |
/// | `liaison_instance_last_beat_timestamp_seconds` | gauge | `instance`, `host` | [`Metrics::render`]: each recorded instance's last beat, Unix time (instances leave a day after their last beat) |
/// | `liaison_alert_sinks_failing` | gauge | none | [`Metrics::render`]: (owner, sink) pairs whose alert deliveries are failing now |
///
/// `outcome`, `disposition` and `state` are the stored names
/// ([`AttemptOutcome::as_str`], [`Disposition::as_str`],
/// [`SubmissionState::as_str`](crate::SubmissionState::as_str)).
///
/// ```
/// use std::time::Duration;
/// use liaison::AttemptOutcome;
/// use liaison::engine::Liaison;
/// use liaison::ops::Metrics;
/// use liaison::store::SqliteStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liaison::Result<()> {
/// let metrics = Metrics::new();
/// metrics.submission_enqueued("clearinghouse");
/// metrics.attempt("clearinghouse", AttemptOutcome::Accepted, Duration::from_millis(180));
///
/// // The health gauges come from a health report, as `Liaison::health` makes it.
/// let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
/// let report = liaison.health(Duration::from_secs(3600)).await?;
/// let text = metrics.render(&report);
/// assert!(text.contains(r#"liaison_attempts_total{partner="clearinghouse",outcome="accepted"} 1"#));
/// assert!(text.ends_with("# EOF\n"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    enqueued: Family<PartnerLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: HistogramFamily,
    callbacks: Family<CallbackLabels, Counter>,
    callbacks_unknown: Counter,
    unverified_dropped: Family<PartnerLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    time_to_result: HistogramFamily,
    leases_expired: Family<PartnerLabels, Counter>,
    poison_dead_letters: Family<PartnerLabels, Counter>,
    submissions: Family<StateLabels, Gauge>,
    oldest_queued: Family<PartnerLabels, Gauge>,
    circuit_state: Family<PartnerLabels, Gauge>,
    value_at_risk: Family<CurrencyLabels, Gauge>,
    deadline_at_risk: Family<PartnerLabels, Gauge>,
    deadline_missed: Family<PartnerLabels, Gauge>,
    verdict: Family<PartnerLabels, Gauge>,
    instances_live: Gauge,
    last_beat: Family<InstanceLabels, Gauge>,
    sinks_failing: Gauge,
    /// One render at a time: the gauges are cleared and refilled from the
    /// report, and a concurrent scrape must not see them half-filled.
    render: Mutex<()>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("registry", &self.inner.registry)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The HTTP `Content-Type` of what [`Metrics::render`] returns.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// A registry with every `liaison_` metric, all empty.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("liaison");
        let enqueued = Family::default();
        let attempts = Family::default();
        let attempt_duration =
            HistogramFamily::new_with_constructor(attempt_histogram as fn() -> _);
        let callbacks = Family::default();
        let callbacks_unknown = Counter::default();
        let unverified_dropped = Family::default();
        let alerts = Family::default();
        let notifications = Family::default();
        let time_to_result =
            HistogramFamily::new_with_constructor(time_to_result_histogram as fn() -> _);
        let leases_expired = Family::default();
        let poison_dead_letters = Family::default();
        let submissions = Family::default();
        let oldest_queued = Family::default();
        let circuit_state = Family::default();
        let value_at_risk = Family::default();
        let deadline_at_risk = Family::default();
        let deadline_missed = Family::default();
        let verdict = Family::default();
        let instances_live = Gauge::default();
        let last_beat = Family::default();
        let sinks_failing = Gauge::default();

        // Counters get their `_total` suffix, and units their `_seconds`, when
        // encoded; the registry appends a full stop to each help text.
        registry.register(
            "submissions_enqueued",
            "Submissions enqueued for a partner",
            enqueued.clone(),
        );
        registry.register(
            "attempts",
            "Attempts to send a submission to a partner, by how they ended",
            attempts.clone(),
        );
        registry.register_with_unit(
            "attempt_duration",
            "Duration of attempts to send a submission to a partner",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        registry.register(
            "callbacks",
            "Callbacks received from a partner, by disposition",
            callbacks.clone(),
        );
        // No partner label: the names come from whoever posts.
        registry.register(
            "callbacks_unknown",
            "Callbacks to names that are no configured partner (stored without their bodies)",
            callbacks_unknown.clone(),
        );
        // The partner label is safe: only configured partners are counted.
        registry.register(
            "callbacks_unverified_dropped",
            "Callbacks that failed verification past the partner's hourly cap of stored bodies (kept without their bodies)",
            unverified_dropped.clone(),
        );
        registry.register(
            "alerts",
            "Alerts opened for a partner, by problem class",
            alerts.clone(),
        );
        // The sink label is a configured sink's name: a bounded set.
        registry.register(
            "alert_notifications",
            "Tries of alert notifications, by sink and how they ended",
            notifications.clone(),
        );
        registry.register_with_unit(
            "time_to_result",
            "Time from enqueueing a submission to the partner's final result",
            Unit::Seconds,
            time_to_result.clone(),
        );
        registry.register(
            "leases_expired",
            "Worker leases that expired before the attempt reported (crash or stall)",
            leases_expired.clone(),
        );
        registry.register(
            "poison_dead_letters",
            "Submissions dead-lettered by the reaper: the worker crashed or hung on them",
            poison_dead_letters.clone(),
        );
        registry.register(
            "submissions",
            "Submissions in each state now",
            submissions.clone(),
        );
        registry.register_with_unit(
            "oldest_queued",
            "Age of the oldest queued submission (0 when nothing is queued)",
            Unit::Seconds,
            oldest_queued.clone(),
        );
        registry.register(
            "circuit_state",
            "The partner's circuit breaker: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        registry.register(
            "value_at_risk",
            "Business value of failed, dead-lettered, stuck and late submissions, in minor units of the currency",
            value_at_risk.clone(),
        );
        registry.register(
            "business_deadline_at_risk",
            "Open submissions whose business deadline falls within the partner's lead time",
            deadline_at_risk.clone(),
        );
        registry.register(
            "business_deadline_missed",
            "Open submissions past their business deadline",
            deadline_missed.clone(),
        );
        registry.register(
            "partner_verdict",
            "The partner's health verdict: 0 healthy, 1 degraded, 2 down",
            verdict.clone(),
        );
        registry.register(
            "instances_live",
            "Engine instances beating into the store now",
            instances_live.clone(),
        );
        registry.register_with_unit(
            "instance_last_beat_timestamp",
            "The last beat of each engine instance recorded in the store, Unix time",
            Unit::Seconds,
            last_beat.clone(),
        );
        registry.register(
            "alert_sinks_failing",
            "Owner and sink pairs whose alert deliveries are failing now",
            sinks_failing.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                enqueued,
                attempts,
                attempt_duration,
                callbacks,
                callbacks_unknown,
                unverified_dropped,
                alerts,
                notifications,
                time_to_result,
                leases_expired,
                poison_dead_letters,
                submissions,
                oldest_queued,
                circuit_state,
                value_at_risk,
                deadline_at_risk,
                deadline_missed,
                verdict,
                instances_live,
                last_beat,
                sinks_failing,
                render: Mutex::new(()),
            }),
        }
    }

    /// A submission was enqueued for `partner`.
    pub fn submission_enqueued(&self, partner_name: &str) {
        self.inner
            .enqueued
            .get_or_create(&partner(partner_name))
            .inc();
    }

    /// An attempt at `partner` ended with `outcome` after `latency`.
    pub fn attempt(&self, partner_name: &str, outcome: AttemptOutcome, latency: Duration) {
        let labels = AttemptLabels {
            partner: partner_name.to_owned(),
            outcome: outcome.as_str(),
        };
        self.inner.attempts.get_or_create(&labels).inc();
        self.inner
            .attempt_duration
            .get_or_create(&PartnerLabels {
                partner: labels.partner,
            })
            .observe(latency.as_secs_f64());
    }

    /// A callback from `partner` was recorded with `disposition`.
    pub fn callback(&self, partner_name: &str, disposition: Disposition) {
        self.inner
            .callbacks
            .get_or_create(&CallbackLabels {
                partner: partner_name.to_owned(),
                disposition: disposition.as_str(),
            })
            .inc();
    }

    /// A callback arrived for a name that is no configured partner. It has
    /// no partner label: those names come from whoever posts, and would
    /// make a series each.
    pub fn callback_to_unknown_partner(&self) {
        self.inner.callbacks_unknown.inc();
    }

    /// A callback from the configured partner `partner` failed verification
    /// past its hourly cap of stored bodies
    /// ([`crate::engine::EngineSettings::unverified_bodies_per_hour`]): it
    /// was kept as metadata only.
    pub fn unverified_body_dropped(&self, partner_name: &str) {
        self.inner
            .unverified_dropped
            .get_or_create(&partner(partner_name))
            .inc();
    }

    /// An alert of problem `class` (a `ProblemClass` name) opened for `partner`.
    pub fn alert_opened(&self, partner_name: &str, class: &str) {
        self.inner
            .alerts
            .get_or_create(&AlertLabels {
                partner: partner_name.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    /// A try of an alert notification to `sink` ended with `outcome`:
    /// `delivered`, `retrying` (failed, tried again later) or `failed`
    /// (for good).
    pub fn alert_notification(&self, sink: &str, outcome: &'static str) {
        self.inner
            .notifications
            .get_or_create(&NotificationLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A submission to `partner` got its final result `seconds` after it was
    /// enqueued. A negative figure (clock skew) counts as 0; a non-finite one
    /// is ignored, as it would poison the histogram's sum.
    pub fn time_to_result(&self, partner_name: &str, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        self.inner
            .time_to_result
            .get_or_create(&partner(partner_name))
            .observe(seconds.max(0.0));
    }

    /// [`Metrics::time_to_result`] for a submission enqueued at `enqueued_at`
    /// that got its final result now.
    pub(crate) fn result_now(
        &self,
        partner_name: &str,
        enqueued_at: chrono::DateTime<chrono::Utc>,
    ) {
        let took = (chrono::Utc::now() - enqueued_at).num_milliseconds() as f64 / 1000.0;
        self.time_to_result(partner_name, took);
    }

    /// A worker's lease on a submission to `partner` expired before it reported.
    pub fn lease_expired(&self, partner_name: &str) {
        self.inner
            .leases_expired
            .get_or_create(&partner(partner_name))
            .inc();
    }

    /// The reaper dead-lettered a submission to `partner` whose lease
    /// expired once too often: the worker crashed or hung on it
    /// ([`crate::engine::Partner::max_lease_expiries`]), or its attempts or
    /// age ran out with that expired lease.
    pub fn poison_dead_lettered(&self, partner_name: &str) {
        self.inner
            .poison_dead_letters
            .get_or_create(&partner(partner_name))
            .inc();
    }

    /// Sets the gauges from `health` and returns every metric in the
    /// OpenMetrics text format (ending `# EOF`), to serve with
    /// [`Metrics::CONTENT_TYPE`].
    ///
    /// The gauges describe exactly the partners in `health`: a partner that
    /// left the report loses its gauge series. Counters and histograms keep
    /// counting across renders. Families come in a fixed order; the series
    /// within a family do not (scrapers do not care).
    pub fn render(&self, health: &HealthReport) -> String {
        let inner = &*self.inner;
        let _one_at_a_time = inner.render.lock().unwrap_or_else(PoisonError::into_inner);
        for family in [
            &inner.oldest_queued,
            &inner.circuit_state,
            &inner.deadline_at_risk,
            &inner.deadline_missed,
            &inner.verdict,
        ] {
            family.clear();
        }
        inner.value_at_risk.clear();
        inner.submissions.clear();
        for p in &health.partners {
            inner.set_gauges(p);
        }
        inner.last_beat.clear();
        let mut live = 0u64;
        for i in &health.instances {
            live += u64::from(i.live);
            inner
                .last_beat
                .get_or_create(&InstanceLabels {
                    instance: i.instance.id.clone(),
                    host: i.instance.host.clone(),
                })
                .set(i.instance.last_beat_at.timestamp());
        }
        inner.instances_live.set(saturating_i64(live));
        let failing: std::collections::BTreeSet<(&str, &str)> = health
            .partners
            .iter()
            .flat_map(|p| &p.undelivered_alerts)
            .map(|f| (f.owner.as_str(), f.sink.as_str()))
            .collect();
        inner
            .sinks_failing
            .set(saturating_i64(failing.len() as u64));

        let mut text = String::new();
        // Writing to a `String` cannot fail, and no metric here refuses to be
        // encoded as text (only native-only histograms do).
        if let Err(e) = encode(&mut text, &inner.registry) {
            tracing::error!(error = %e, "encoding the metrics failed");
        }
        text
    }
}

impl Inner {
    fn set_gauges(&self, p: &PartnerHealth) {
        for state in SubmissionState::ALL {
            let count = p.by_state.get(&state).map_or(0, |t| t.count);
            self.submissions
                .get_or_create(&StateLabels {
                    partner: p.partner.clone(),
                    state: state.as_str(),
                })
                .set(saturating_i64(count));
        }
        let labels = partner(&p.partner);
        self.oldest_queued
            .get_or_create(&labels)
            .set(saturating_i64(p.oldest_queued_secs.unwrap_or(0)));
        if let Some(circuit) = p.circuit {
            self.circuit_state
                .get_or_create(&labels)
                .set(circuit_code(circuit));
        }
        self.value_at_risk
            .get_or_create(&CurrencyLabels {
                partner: p.partner.clone(),
                currency: "unspecified",
            })
            .set(p.at_risk.value.get(None));
        for (currency, minor) in p.at_risk.value.iter() {
            if let Some(currency) = currency {
                self.value_at_risk
                    .get_or_create(&CurrencyLabels {
                        partner: p.partner.clone(),
                        currency: currency.code(),
                    })
                    .set(minor);
            }
        }
        self.deadline_at_risk
            .get_or_create(&labels)
            .set(saturating_i64(p.deadlines.at_risk.count));
        self.deadline_missed
            .get_or_create(&labels)
            .set(saturating_i64(p.deadlines.missed.count));
        self.verdict
            .get_or_create(&labels)
            .set(verdict_code(p.verdict));
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// 0 closed, 1 half-open, 2 open: higher is worse.
fn circuit_code(state: CircuitState) -> i64 {
    match state {
        CircuitState::Closed => 0,
        CircuitState::HalfOpen => 1,
        CircuitState::Open => 2,
    }
}

/// 0 healthy, 1 degraded, 2 down: higher is worse.
fn verdict_code(verdict: Verdict) -> i64 {
    match verdict {
        Verdict::Healthy => 0,
        Verdict::Degraded => 1,
        Verdict::Down => 2,
    }
}

#[cfg(test)]
mod exposition;
#[cfg(test)]
mod tests;
