//! The health report.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::alert::ProblemClass;
use crate::model::callback::Disposition;
use crate::model::circuit::CircuitState;
use crate::model::notification::SinkFailure;
use crate::model::submission::SubmissionState;
use crate::model::traffic::{ExpectedTraffic, TrafficKind, period_words};
use crate::store::common::saturating_after;
use crate::store::{AgeBand, DeadlineRisk, Instance, Outcomes, PartnerStats, Pause, Totals};

/// One word for how a partner integration is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Working as expected.
    Healthy,
    /// Working, with problems someone should look at.
    Degraded,
    /// Not working: the partner is unreachable or nothing succeeds.
    Down,
}

/// How the success rate moved against the previous window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trend {
    /// Up by more than 5 percentage points.
    Improving,
    /// Within 5 points.
    Steady,
    /// Down by more than 5 points.
    Worsening,
    /// One of the windows had no outcomes.
    Unknown,
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// Samples the figures come from.
    pub samples: usize,
    /// Median.
    pub p50_ms: Option<i64>,
    /// 90th percentile.
    pub p90_ms: Option<i64>,
    /// 99th percentile.
    pub p99_ms: Option<i64>,
}

impl Percentiles {
    pub(crate) fn of(mut samples: Vec<i64>) -> Self {
        samples.sort_unstable();
        let at = |p: f64| -> Option<i64> {
            if samples.is_empty() {
                return None;
            }
            // Nearest rank: ceil(p * n), 1-based.
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples.get(rank.clamp(1, samples.len()) - 1).copied()
        };
        Percentiles {
            samples: samples.len(),
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
        }
    }
}

/// What ended in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WindowOutcomes {
    /// Ended `Succeeded`.
    pub succeeded: u64,
    /// Ended `Failed` (the partner reported failure).
    pub failed: u64,
    /// Ended `DeadLettered` (we gave up sending).
    pub dead_lettered: u64,
    /// Ended otherwise (cancelled, resolved manually).
    pub other: u64,
    /// `succeeded / (succeeded + failed + dead_lettered)`, if any ended.
    pub success_rate: Option<f64>,
    /// `(failed + dead_lettered) / (succeeded + failed + dead_lettered)`.
    pub failure_rate: Option<f64>,
}

impl WindowOutcomes {
    fn of(o: &Outcomes) -> Self {
        let succeeded = o.get(SubmissionState::Succeeded);
        let failed = o.get(SubmissionState::Failed);
        let dead_lettered = o.get(SubmissionState::DeadLettered);
        let decided = succeeded + failed + dead_lettered;
        let rate = |n: u64| (decided > 0).then(|| n as f64 / decided as f64);
        WindowOutcomes {
            succeeded,
            failed,
            dead_lettered,
            other: o.total() - decided,
            success_rate: rate(succeeded),
            failure_rate: rate(failed + dead_lettered),
        }
    }
}

/// One partner's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PartnerHealth {
    /// The partner.
    pub partner: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in plain words (empty when healthy).
    pub reasons: Vec<String>,
    /// Submissions in each state now (with their value).
    pub by_state: BTreeMap<SubmissionState, Totals>,
    /// Outcomes in the window.
    pub window: WindowOutcomes,
    /// Outcomes in the window before it.
    pub previous_window: WindowOutcomes,
    /// Success rate against the previous window.
    pub trend: Trend,
    /// From enqueue to the partner's acceptance.
    pub enqueue_to_accepted: Percentiles,
    /// From acceptance to the partner's result.
    pub accepted_to_result: Percentiles,
    /// Age of the oldest queued submission, in seconds.
    pub oldest_queued_secs: Option<u64>,
    /// Submissions stuck without a result.
    pub stuck: u64,
    /// The partner's circuit, as every engine instance on the store shares
    /// it: known for the partners this process runs (closed until it ever
    /// opened) and for any partner whose circuit has opened before; `None`
    /// otherwise.
    pub circuit: Option<CircuitState>,
    /// How callbacks are verified (`unverified` is a risk), where known.
    pub callback_verification: Option<&'static str>,
    /// Impact: failed, dead-lettered and stuck submissions with their value
    /// per currency, plus unfinished ones past the delay budget.
    pub at_risk: Totals,
    /// [`PartnerHealth::at_risk`] by the submissions' kind.
    pub at_risk_by_kind: BTreeMap<String, Totals>,
    /// [`PartnerHealth::at_risk`] by how long ago the work was enqueued.
    pub at_risk_by_age: BTreeMap<AgeBand, Totals>,
    /// Open work near (within the lead time) or past its business deadline.
    pub deadlines: DeadlineRisk,
    /// Unfinished submissions past the partner's delay budget.
    pub past_delay_budget: Totals,
    /// The partner's announced pause, if one is in force.
    pub paused: Option<Pause>,
    /// Callbacks that arrived in the window, by disposition.
    pub callbacks: BTreeMap<Disposition, u64>,
    /// Callbacks in the quarantine now, by disposition (not reprocessed,
    /// not dismissed), whenever they arrived.
    pub quarantined: BTreeMap<Disposition, u64>,
    /// Dead-lettered submissions (not yet replayed, resolved or cancelled)
    /// that the reaper gave up because the worker crashed or hung on them:
    /// problem class `worker_crashed`. They are among the dead letters of
    /// `by_state` too.
    pub worker_crashed: u64,
    /// Whether an engine is sending its work.
    pub dispatcher: DispatcherHealth,
    /// Its expected traffic and whether it came, if it has an expectation.
    pub traffic: Option<TrafficHealth>,
    /// Sinks whose deliveries of this partner's alerts to their owner are
    /// failing now.
    pub undelivered_alerts: Vec<SinkFailure>,
}

/// Whether a live engine instance dispatches a partner's work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DispatcherHealth {
    /// Live engine instances serving the partner.
    pub live_instances: u64,
    /// The last beat of the last instance that served it, while none live
    /// does (`None` while one does, or when none ever did).
    pub last_beat_at: Option<DateTime<Utc>>,
    /// Work has been due for longer than three beats and no live instance
    /// serves the partner: nothing is sending it (the verdict is `Down`).
    pub missing: bool,
}

/// A partner's expected traffic against what came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TrafficHealth {
    /// The expectation in words: "at least 1 per hour on weekdays
    /// 08:00-18:00 Europe/Berlin".
    pub expected: String,
    /// What counts: finished submissions or callbacks.
    pub kind: TrafficKind,
    /// Whether it is checked now: inside its windows, a whole period in
    /// (and the partner not paused).
    pub checked: bool,
    /// What counted over the last period, up to the expected least.
    pub counted: u64,
    /// Checked, and less came than expected.
    pub silent: bool,
    /// When silent, in plain words: "no submission reached a result in
    /// the last 1 h; at least 1 per hour is expected on weekdays
    /// 08:00-18:00 Europe/Berlin".
    pub reason: Option<String>,
}

/// One engine instance as health sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InstanceHealth {
    /// As it recorded itself.
    #[serde(flatten)]
    pub instance: Instance,
    /// It beat within three of its own intervals and has not stopped.
    pub live: bool,
}

impl PartnerHealth {
    /// [`PartnerHealth::deadlines`] in plain words ("2 submission(s) will
    /// miss their business deadline within 24 h (EUR 250.00); 1 already
    /// missed it"), or `None` when no open work is near or past its deadline.
    pub fn deadline_words(&self) -> Option<String> {
        deadline_reason(&self.deadlines)
    }
}

/// Health of every partner, rolled up.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// When it was computed.
    pub generated_at: DateTime<Utc>,
    /// The window, in seconds.
    pub window_secs: u64,
    /// The worst partner verdict.
    pub verdict: Verdict,
    /// Every partner's reasons, prefixed with its name.
    pub reasons: Vec<String>,
    /// Total value at risk across partners, per currency.
    pub at_risk: Totals,
    /// Per partner.
    pub partners: Vec<PartnerHealth>,
    /// The engine instances recorded in the store, the latest beat first.
    pub instances: Vec<InstanceHealth>,
}

/// What the engine knows about a partner that the store does not.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveState {
    pub(crate) circuit: Option<CircuitState>,
    pub(crate) callback_verification: Option<&'static str>,
    pub(crate) delay_budget: Option<Duration>,
    pub(crate) pause: Option<Pause>,
    pub(crate) expected_traffic: Option<ExpectedTraffic>,
    pub(crate) undelivered_alerts: Vec<SinkFailure>,
}

/// How often an engine beats unless told otherwise; also what "three
/// beats" means for a partner no instance has ever served.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Beats an instance may miss before it counts as gone.
const BEATS: u32 = 3;

/// Three of `interval`, saturating.
fn three_beats(interval: Duration) -> Duration {
    interval.saturating_mul(BEATS)
}

/// An instance is live while `now` is before its last beat plus three of
/// its own intervals, and it has not stopped. Every reader (the engine,
/// the CLI, another host) judges it from the same row.
pub(crate) fn is_live(instance: &Instance, now: DateTime<Utc>) -> bool {
    instance.stopped_at.is_none()
        && now < saturating_after(instance.last_beat_at, three_beats(instance.beat_interval))
}

/// Whether a live instance dispatches `partner`'s work, and if not, whether
/// its due work has waited longer than three beats: of the last instance
/// that served it, or, when none ever did, of [`DEFAULT_HEARTBEAT`].
fn dispatcher(
    partner: &str,
    instances: &[Instance],
    stats: &PartnerStats,
    now: DateTime<Utc>,
) -> DispatcherHealth {
    let serving: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.partners.iter().any(|p| p == partner))
        .collect();
    let live = serving.iter().filter(|i| is_live(i, now)).count() as u64;
    if live > 0 {
        return DispatcherHealth {
            live_instances: live,
            last_beat_at: None,
            missing: false,
        };
    }
    let last = serving.iter().max_by_key(|i| i.last_beat_at);
    let last_beat_at = match (last.map(|i| i.last_beat_at), stats.last_served_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let beat = last.map_or(DEFAULT_HEARTBEAT, |i| i.beat_interval);
    let missing = stats
        .oldest_due_at
        .is_some_and(|due| saturating_after(due, three_beats(beat)) <= now);
    DispatcherHealth {
        live_instances: 0,
        last_beat_at,
        missing,
    }
}

/// The expected traffic against what the store counted.
fn traffic(
    expected: &ExpectedTraffic,
    counted: Option<u64>,
    paused: bool,
    now: DateTime<Utc>,
) -> TrafficHealth {
    let counted = counted.unwrap_or(0);
    // Nothing is sent during a pause: no results are expected either.
    let checked = !paused && expected.checked_at(now);
    let silent = checked && counted < u64::from(expected.at_least());
    TrafficHealth {
        expected: expected.to_string(),
        kind: expected.kind(),
        checked,
        counted,
        silent,
        reason: silent.then(|| silence_words(expected, counted)),
    }
}

/// "no submission reached a result in the last 1 h; at least 1 per hour is
/// expected on weekdays 08:00-18:00 Europe/Berlin".
fn silence_words(expected: &ExpectedTraffic, counted: u64) -> String {
    let what = match (expected.kind(), counted) {
        (TrafficKind::Finished, 0) => "no submission reached a result".to_owned(),
        (TrafficKind::Finished, n) => format!("only {n} submission(s) reached a result"),
        (TrafficKind::Callbacks, 0) => "no callback arrived".to_owned(),
        (TrafficKind::Callbacks, n) => format!("only {n} callback(s) arrived"),
    };
    format!(
        "{what} in the last {}; at least {} {} is expected{}",
        period_words(expected.period()),
        expected.at_least(),
        expected.per_words(),
        expected.window_words()
    )
}

/// Queued work older than this (without a delay budget) degrades a partner.
const QUEUE_AGE_LIMIT: Duration = Duration::from_secs(300);
/// A failure rate above this degrades a partner.
const FAILURE_RATE_LIMIT: f64 = 0.10;
/// With at least this many outcomes in the window and none a success, the
/// partner is down.
const DOWN_MIN_OUTCOMES: u64 = 3;

fn trend(now: &WindowOutcomes, before: &WindowOutcomes) -> Trend {
    match (now.success_rate, before.success_rate) {
        (Some(a), Some(b)) if a - b > 0.05 => Trend::Improving,
        (Some(a), Some(b)) if b - a > 0.05 => Trend::Worsening,
        (Some(_), Some(_)) => Trend::Steady,
        _ => Trend::Unknown,
    }
}

/// A duration in the words of a reason: "15 min", "2 h", "90 s".
pub(crate) fn span(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{} ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// What a quarantined callback of each disposition is, in plain words.
fn quarantine_words(d: Disposition) -> &'static str {
    match d {
        Disposition::Malformed => "malformed callback(s)",
        Disposition::Expired => "unmatched callback(s)",
        Disposition::Rejected => "callback(s) that failed verification",
        _ => "conflicting callback(s)",
    }
}

/// The problems about items that remain now, each with its class and its
/// plain words: dead letters not recovered (replayed, resolved or
/// cancelled) and callbacks in the quarantine (not reprocessed or
/// dismissed), whenever they happened; the window adds how many of them
/// are recent. The verdict and the alert conditions both read this, so a
/// problem stays in both until its items are recovered.
pub(crate) fn item_problems(
    by_state: &BTreeMap<SubmissionState, Totals>,
    worker_crashed: u64,
    window_outcomes: &WindowOutcomes,
    quarantined: &BTreeMap<Disposition, u64>,
    window_callbacks: &BTreeMap<Disposition, u64>,
    window: Duration,
) -> Vec<(ProblemClass, String)> {
    let recent = |n: u64| {
        if n > 0 {
            format!(" ({n} in the last {})", span(window))
        } else {
            String::new()
        }
    };
    let mut found = Vec::new();
    // Dead letters the reaper left because the worker crashed on them are
    // the host's problem (`worker_crashed`), not the partner's refusal.
    let dead = by_state
        .get(&SubmissionState::DeadLettered)
        .map_or(0, |t| t.count)
        .saturating_sub(worker_crashed);
    if dead > 0 {
        found.push((
            ProblemClass::RejectedByPartner,
            format!(
                "{dead} dead-lettered submission(s) not recovered{}",
                recent(window_outcomes.dead_lettered.min(dead))
            ),
        ));
    }
    for d in Disposition::QUARANTINED {
        let Some(class) = ProblemClass::of_quarantined(d) else {
            continue;
        };
        let n = quarantined.get(&d).copied().unwrap_or(0);
        if n > 0 {
            let arrived = window_callbacks.get(&d).copied().unwrap_or(0).min(n);
            found.push((
                class,
                format!(
                    "{n} {} in quarantine{}",
                    quarantine_words(d),
                    recent(arrived)
                ),
            ));
        }
    }
    found
}

pub(crate) fn partner_health(
    stats: PartnerStats,
    live: &LiveState,
    instances: &[Instance],
    now: DateTime<Utc>,
    window_length: Duration,
) -> PartnerHealth {
    let dispatcher = dispatcher(&stats.partner, instances, &stats, now);
    let traffic = live
        .expected_traffic
        .as_ref()
        .map(|e| traffic(e, stats.traffic, live.pause.is_some(), now));
    let window = WindowOutcomes::of(&stats.window);
    let previous_window = WindowOutcomes::of(&stats.previous);
    let stuck = stats
        .by_state
        .get(&SubmissionState::Stuck)
        .cloned()
        .unwrap_or_default();
    let oldest_queued_secs = stats
        .oldest_queued_at
        .map(|at| (now - at).num_seconds().max(0).unsigned_abs());

    let mut verdict = Verdict::Healthy;
    let mut reasons = Vec::new();
    let mut flag = |v: Verdict, why: String| {
        verdict = verdict.max(v);
        reasons.push(why);
    };
    if let Some(pause) = &live.pause {
        flag(
            Verdict::Degraded,
            format!(
                "paused until {} by {} ({}): nothing is sent, work waits in the queue",
                pause.until.format("%Y-%m-%d %H:%M UTC"),
                pause.actor,
                pause.reason
            ),
        );
    }
    match live.circuit {
        Some(CircuitState::Open) => flag(
            Verdict::Down,
            "the partner is unreachable: its circuit is open and nothing is being sent".into(),
        ),
        Some(CircuitState::HalfOpen) => flag(
            Verdict::Down,
            "the partner was unreachable: a probe is testing whether it is back".into(),
        ),
        _ => {}
    }
    let decided = window.succeeded + window.failed + window.dead_lettered;
    if decided >= DOWN_MIN_OUTCOMES && window.succeeded == 0 {
        flag(
            Verdict::Down,
            format!("nothing succeeded in the window ({decided} outcomes, none a success)"),
        );
    } else if let Some(rate) = window.failure_rate
        && rate > FAILURE_RATE_LIMIT
    {
        flag(
            Verdict::Degraded,
            format!(
                "{:.0}% of the submissions that ended in the window failed",
                rate * 100.0
            ),
        );
    }
    if stuck.count > 0 {
        flag(
            Verdict::Degraded,
            format!("{} submission(s) stuck without a result", stuck.count),
        );
    }
    // Dead letters and quarantined callbacks count while they remain, not
    // only in the window.
    for (_, words) in item_problems(
        &stats.by_state,
        stats.worker_crashed,
        &window,
        &stats.quarantined,
        &stats.callbacks,
        window_length,
    ) {
        flag(Verdict::Degraded, words);
    }
    let queue_limit = live.delay_budget.unwrap_or(QUEUE_AGE_LIMIT);
    if let Some(age) = oldest_queued_secs
        && age > queue_limit.as_secs()
    {
        flag(
            Verdict::Degraded,
            format!("the oldest queued submission has waited {age} s"),
        );
    }
    if stats.past_delay_budget.count > 0 {
        flag(
            Verdict::Degraded,
            format!(
                "{} unfinished submission(s) are past the delay budget",
                stats.past_delay_budget.count
            ),
        );
    }
    if stats.worker_crashed > 0 {
        flag(
            Verdict::Degraded,
            worker_crashed_words(stats.worker_crashed),
        );
    }
    if let Some(why) = deadline_reason(&stats.deadlines) {
        flag(Verdict::Degraded, why);
    }
    for f in &live.undelivered_alerts {
        flag(Verdict::Degraded, alerts_not_reaching(f));
    }
    if live.callback_verification == Some("unverified") {
        flag(
            Verdict::Degraded,
            "callbacks from this partner are not verified".into(),
        );
    }
    if dispatcher.missing {
        flag(
            Verdict::Down,
            match dispatcher.last_beat_at {
                Some(at) => format!(
                    "no dispatcher is running for {} since {}: work is due and no engine sends it",
                    stats.partner,
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                None => format!(
                    "no dispatcher is running for {}: work is due and no engine has ever served it",
                    stats.partner
                ),
            },
        );
    }
    if let Some(reason) = traffic.as_ref().and_then(|t| t.reason.clone()) {
        flag(Verdict::Degraded, reason);
    }

    PartnerHealth {
        partner: stats.partner,
        verdict,
        reasons,
        by_state: stats.by_state,
        trend: trend(&window, &previous_window),
        window,
        previous_window,
        enqueue_to_accepted: Percentiles::of(stats.enqueue_to_accepted_ms),
        accepted_to_result: Percentiles::of(stats.accepted_to_result_ms),
        oldest_queued_secs,
        stuck: stuck.count,
        circuit: live.circuit,
        callback_verification: live.callback_verification,
        at_risk: stats.at_risk.total,
        at_risk_by_kind: stats.at_risk.by_kind,
        at_risk_by_age: stats.at_risk.by_age,
        deadlines: stats.deadlines,
        past_delay_budget: stats.past_delay_budget,
        paused: live.pause.clone(),
        callbacks: stats.callbacks,
        worker_crashed: stats.worker_crashed,
        dispatcher,
        traffic,
        quarantined: stats.quarantined,
        undelivered_alerts: live.undelivered_alerts.clone(),
    }
}

/// The verdict's reason and the `worker_crashed` alert's details for `n`
/// dead letters of crashed or hung workers.
pub(crate) fn worker_crashed_words(n: u64) -> String {
    format!("{n} submission(s) dead-lettered because the worker crashed or hung on them")
}

/// Business deadlines in plain words: "2 submission(s) will miss their
/// business deadline within 24 h (EUR 250.00); 1 already missed it
/// (EUR 10.00)". `None` when nothing is near or past its deadline.
pub(crate) fn deadline_reason(d: &DeadlineRisk) -> Option<String> {
    let worth = |t: &Totals| {
        if t.value.is_zero() {
            String::new()
        } else {
            format!(" ({})", t.value)
        }
    };
    let missed = (d.missed.count > 0).then(|| {
        format!(
            "{} open submission(s) already missed their business deadline{}",
            d.missed.count,
            worth(&d.missed)
        )
    });
    let near = (d.at_risk.count > 0).then(|| {
        format!(
            "{} submission(s) will miss their business deadline within {}{}",
            d.at_risk.count,
            lead_words(d.lead_time_secs),
            worth(&d.at_risk)
        )
    });
    match (near, missed) {
        (None, None) => None,
        (Some(near), None) => Some(near),
        (None, Some(missed)) => Some(missed),
        (Some(near), Some(_)) => Some(format!(
            "{near}; {} already missed it{}",
            d.missed.count,
            worth(&d.missed)
        )),
    }
}

/// A lead time in words: "24 h", "90 min", "45 s".
fn lead_words(secs: u64) -> String {
    if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// "alerts are not reaching <owner> (<sink>: <error>) since <time>".
fn alerts_not_reaching(f: &SinkFailure) -> String {
    format!(
        "alerts are not reaching {} ({}: {}) since {}",
        f.owner,
        f.sink,
        f.error,
        f.since.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

pub(crate) fn roll_up(
    partners: Vec<PartnerHealth>,
    instances: Vec<Instance>,
    now: DateTime<Utc>,
    window: Duration,
) -> HealthReport {
    let verdict = partners
        .iter()
        .map(|p| p.verdict)
        .max()
        .unwrap_or(Verdict::Healthy);
    let reasons = partners
        .iter()
        .flat_map(|p| p.reasons.iter().map(move |r| format!("{}: {r}", p.partner)))
        .collect();
    let at_risk = partners.iter().fold(Totals::default(), |mut acc, p| {
        acc.add(&p.at_risk);
        acc
    });
    HealthReport {
        generated_at: now,
        window_secs: window.as_secs(),
        verdict,
        reasons,
        at_risk,
        partners,
        instances: instances
            .into_iter()
            .map(|instance| InstanceHealth {
                live: is_live(&instance, now),
                instance,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().collect());
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms),
            (Some(50), Some(90), Some(99))
        );
        assert_eq!(Percentiles::of(vec![]).p50_ms, None);
        assert_eq!(Percentiles::of(vec![7]).p99_ms, Some(7));
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn instance(partners: &[&str], last_beat: i64, every: u64) -> Instance {
        let mut i = Instance::this_process(
            partners.iter().map(|p| p.to_string()).collect(),
            Duration::from_secs(every),
        );
        i.last_beat_at = at(last_beat);
        i
    }

    fn stats(partner: &str, oldest_due: Option<i64>) -> PartnerStats {
        PartnerStats {
            partner: partner.into(),
            oldest_due_at: oldest_due.map(at),
            ..PartnerStats::default()
        }
    }

    #[test]
    fn an_instance_lives_for_three_of_its_own_beats() {
        let i = instance(&["lab"], 0, 2);
        assert!(is_live(&i, at(5)));
        assert!(!is_live(&i, at(6)));
        let mut stopped = i.clone();
        stopped.stopped_at = Some(at(0));
        assert!(!is_live(&stopped, at(1)));
    }

    #[test]
    fn due_work_without_a_live_dispatcher_is_down_after_three_beats() {
        // Served by a live instance: fine, however old the work.
        let live = [instance(&["lab"], 100, 5)];
        let d = dispatcher("lab", &live, &stats("lab", Some(-10_000)), at(101));
        assert_eq!((d.live_instances, d.missing), (1, false));
        // Its instance died (last beat at 100, 10 s beats): the work due
        // since 90 counts once three of those beats passed since it came due.
        let dead = [instance(&["lab", "bank"], 100, 10)];
        let d = dispatcher("lab", &dead, &stats("lab", Some(90)), at(131));
        assert_eq!((d.live_instances, d.missing), (0, true));
        assert_eq!(d.last_beat_at, Some(at(100)));
        assert!(!dispatcher("lab", &dead, &stats("lab", Some(125)), at(131)).missing);
        // Other partners' instances do not serve it.
        let other = [instance(&["bank"], 130, 5)];
        let d = dispatcher("lab", &other, &stats("lab", Some(0)), at(131));
        assert!(d.missing && d.last_beat_at.is_none());
        // Nothing due, or not due yet: nothing missing.
        assert!(!dispatcher("lab", &dead, &stats("lab", None), at(500)).missing);
        assert!(!dispatcher("lab", &dead, &stats("lab", Some(600)), at(500)).missing);
        // Never served: three default beats (15 s) after the work came due.
        assert!(!dispatcher("lab", &[], &stats("lab", Some(0)), at(14)).missing);
        assert!(dispatcher("lab", &[], &stats("lab", Some(0)), at(15)).missing);
        // Pruned instances leave their last beat behind.
        let mut pruned = stats("lab", Some(0));
        pruned.last_served_at = Some(at(-50));
        let d = dispatcher("lab", &[], &pruned, at(100));
        assert_eq!((d.missing, d.last_beat_at), (true, Some(at(-50))));
    }

    #[test]
    fn the_verdict_says_who_is_missing_in_words() {
        let p = partner_health(
            stats("lab", Some(0)),
            &LiveState::default(),
            &[],
            at(20),
            Duration::from_secs(900),
        );
        assert_eq!(p.verdict, Verdict::Down);
        assert_eq!(
            p.reasons,
            ["no dispatcher is running for lab: work is due and no engine has ever served it"]
        );
        let dead = [instance(&["lab"], 3, 1)];
        let p = partner_health(
            stats("lab", Some(0)),
            &LiveState::default(),
            &dead,
            at(20),
            Duration::from_secs(900),
        );
        assert_eq!(
            p.reasons,
            [
                "no dispatcher is running for lab since 2027-01-15 08:00:03 UTC: work is due and no engine sends it"
            ]
        );
    }

    #[test]
    fn silence_is_degraded_only_while_checked() {
        let expected = ExpectedTraffic::callbacks(2).per(Duration::from_secs(7200));
        let live = LiveState {
            expected_traffic: Some(expected.clone()),
            ..LiveState::default()
        };
        let mut quiet = stats("lab", None);
        quiet.traffic = Some(1);
        let p = partner_health(quiet.clone(), &live, &[], at(0), Duration::from_secs(900));
        assert_eq!(p.verdict, Verdict::Degraded);
        assert_eq!(
            p.reasons,
            ["only 1 callback(s) arrived in the last 2 h; at least 2 per 2 h is expected"]
        );
        // Paused: nothing is expected.
        let paused = LiveState {
            pause: Some(Pause::new(
                "lab",
                at(100),
                crate::Actor::person("ops"),
                "maintenance",
            )),
            ..live.clone()
        };
        let p = partner_health(quiet.clone(), &paused, &[], at(0), Duration::from_secs(900));
        assert!(!p.traffic.as_ref().unwrap().checked);
        assert!(!p.reasons.iter().any(|r| r.contains("expected")));
        // Enough came.
        quiet.traffic = Some(2);
        let p = partner_health(quiet, &live, &[], at(0), Duration::from_secs(900));
        assert_eq!(p.verdict, Verdict::Healthy);
        assert!(!p.traffic.unwrap().silent);
    }

    #[test]
    fn item_problems_remain_past_the_window_and_say_what_is_recent() {
        let mut by_state = BTreeMap::new();
        let window = Duration::from_secs(15 * 60);
        let none = item_problems(
            &by_state,
            0,
            &WindowOutcomes::default(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            window,
        );
        assert!(none.is_empty());
        by_state.insert(SubmissionState::DeadLettered, Totals::of(3, None, 0));
        let quarantined = BTreeMap::from([(Disposition::Malformed, 2), (Disposition::Expired, 1)]);
        // Nothing happened in the window: the items still count.
        let old = item_problems(
            &by_state,
            0,
            &WindowOutcomes::default(),
            &quarantined,
            &BTreeMap::new(),
            window,
        );
        assert_eq!(
            old,
            vec![
                (
                    ProblemClass::RejectedByPartner,
                    "3 dead-lettered submission(s) not recovered".to_owned()
                ),
                (
                    ProblemClass::MalformedCallback,
                    "2 malformed callback(s) in quarantine".to_owned()
                ),
                (
                    ProblemClass::UnmatchedCallback,
                    "1 unmatched callback(s) in quarantine".to_owned()
                ),
            ]
        );
        let recent = item_problems(
            &by_state,
            0,
            &WindowOutcomes {
                dead_lettered: 1,
                ..WindowOutcomes::default()
            },
            &quarantined,
            &BTreeMap::from([(Disposition::Malformed, 1), (Disposition::Applied, 9)]),
            window,
        );
        assert_eq!(
            recent[0].1,
            "3 dead-lettered submission(s) not recovered (1 in the last 15 min)"
        );
        assert_eq!(
            recent[1].1,
            "2 malformed callback(s) in quarantine (1 in the last 15 min)"
        );
    }

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(Duration::from_secs(900)), "15 min");
        assert_eq!(span(Duration::from_secs(7200)), "2 h");
        assert_eq!(span(Duration::from_secs(90)), "90 s");
        assert_eq!(span(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn deadlines_read_in_plain_words() {
        let eur = crate::Currency::from_code("EUR").ok();
        let mut d = DeadlineRisk {
            lead_time_secs: 24 * 3600,
            ..DeadlineRisk::default()
        };
        assert_eq!(deadline_reason(&d), None);
        d.at_risk = Totals::of(2, eur, 25_000);
        assert_eq!(
            deadline_reason(&d).unwrap(),
            "2 submission(s) will miss their business deadline within 24 h (EUR 250.00)"
        );
        d.missed = Totals::of(1, None, 0);
        assert_eq!(
            deadline_reason(&d).unwrap(),
            "2 submission(s) will miss their business deadline within 24 h (EUR 250.00); 1 already missed it"
        );
        d.at_risk = Totals::default();
        d.missed = Totals::of(1, None, 500);
        assert_eq!(
            deadline_reason(&d).unwrap(),
            "1 open submission(s) already missed their business deadline (5.00 (currency unspecified))"
        );
        assert_eq!(lead_words(90 * 60), "90 min");
        assert_eq!(lead_words(45), "45 s");
    }

    #[test]
    fn trends_need_both_windows() {
        let w = |rate| WindowOutcomes {
            success_rate: rate,
            ..WindowOutcomes::default()
        };
        assert_eq!(trend(&w(Some(0.9)), &w(Some(0.5))), Trend::Improving);
        assert_eq!(trend(&w(Some(0.5)), &w(Some(0.9))), Trend::Worsening);
        assert_eq!(trend(&w(Some(0.9)), &w(Some(0.88))), Trend::Steady);
        assert_eq!(trend(&w(None), &w(Some(0.9))), Trend::Unknown);
    }
}
