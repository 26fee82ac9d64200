//! The health report.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::circuit::CircuitState;
use crate::model::notification::SinkFailure;
use crate::model::submission::SubmissionState;
use crate::store::{Outcomes, PartnerStats, Pause, Totals};

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
    /// The circuit, where this process runs the partner.
    pub circuit: Option<CircuitState>,
    /// How callbacks are verified (`unverified` is a risk), where known.
    pub callback_verification: Option<&'static str>,
    /// Impact: failed, dead-lettered and stuck submissions with their value,
    /// plus unfinished ones past the delay budget.
    pub at_risk: Totals,
    /// Unfinished submissions past the partner's delay budget.
    pub past_delay_budget: Totals,
    /// The partner's announced pause, if one is in force.
    pub paused: Option<Pause>,
    /// Callbacks that arrived in the window, by disposition.
    pub callbacks: BTreeMap<crate::model::callback::Disposition, u64>,
    /// Sinks whose deliveries of this partner's alerts to their owner are
    /// failing now.
    pub undelivered_alerts: Vec<SinkFailure>,
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
    /// Total value at risk across partners.
    pub at_risk: Totals,
    /// Per partner.
    pub partners: Vec<PartnerHealth>,
}

/// What the engine knows about a partner that the store does not.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveState {
    pub(crate) circuit: Option<CircuitState>,
    pub(crate) callback_verification: Option<&'static str>,
    pub(crate) delay_budget: Option<Duration>,
    pub(crate) pause: Option<Pause>,
    pub(crate) undelivered_alerts: Vec<SinkFailure>,
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

pub(crate) fn partner_health(
    stats: PartnerStats,
    live: &LiveState,
    now: DateTime<Utc>,
) -> PartnerHealth {
    let window = WindowOutcomes::of(&stats.window);
    let previous_window = WindowOutcomes::of(&stats.previous);
    let state_totals = |s| stats.by_state.get(&s).copied().unwrap_or_default();
    let stuck = state_totals(SubmissionState::Stuck);
    let mut at_risk = Totals::default();
    for s in [
        SubmissionState::Failed,
        SubmissionState::DeadLettered,
        SubmissionState::Stuck,
    ] {
        let t = state_totals(s);
        at_risk.count = at_risk.count.saturating_add(t.count);
        at_risk.value = at_risk.value.saturating_add(t.value);
    }
    // Stuck work past the budget is already counted once.
    let unfinished_past_budget = Totals {
        count: stats.past_delay_budget.count.saturating_sub(stuck.count),
        value: stats
            .past_delay_budget
            .value
            .saturating_sub(stuck.value.min(stats.past_delay_budget.value)),
    };
    at_risk.count = at_risk.count.saturating_add(unfinished_past_budget.count);
    at_risk.value = at_risk.value.saturating_add(unfinished_past_budget.value);
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
    if window.dead_lettered > 0 {
        flag(
            Verdict::Degraded,
            format!(
                "{} submission(s) dead-lettered in the window",
                window.dead_lettered
            ),
        );
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
    for f in &live.undelivered_alerts {
        flag(Verdict::Degraded, alerts_not_reaching(f));
    }
    if live.callback_verification == Some("unverified") {
        flag(
            Verdict::Degraded,
            "callbacks from this partner are not verified".into(),
        );
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
        at_risk,
        past_delay_budget: stats.past_delay_budget,
        paused: live.pause.clone(),
        callbacks: stats.callbacks,
        undelivered_alerts: live.undelivered_alerts.clone(),
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
    let at_risk = partners.iter().fold(Totals::default(), |acc, p| Totals {
        count: acc.count.saturating_add(p.at_risk.count),
        value: acc.value.saturating_add(p.at_risk.value),
    });
    HealthReport {
        generated_at: now,
        window_secs: window.as_secs(),
        verdict,
        reasons,
        at_risk,
        partners,
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
