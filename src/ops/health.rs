//! The health report.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::circuit::CircuitState;
use crate::model::submission::SubmissionState;
use crate::store::{AgeBand, DeadlineRisk, Outcomes, PartnerStats, Pause, Totals};

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
    pub callbacks: BTreeMap<crate::model::callback::Disposition, u64>,
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
}

/// What the engine knows about a partner that the store does not.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveState {
    pub(crate) circuit: Option<CircuitState>,
    pub(crate) callback_verification: Option<&'static str>,
    pub(crate) delay_budget: Option<Duration>,
    pub(crate) pause: Option<Pause>,
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
    if let Some(why) = deadline_reason(&stats.deadlines) {
        flag(Verdict::Degraded, why);
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
        at_risk: stats.at_risk.total,
        at_risk_by_kind: stats.at_risk.by_kind,
        at_risk_by_age: stats.at_risk.by_age,
        deadlines: stats.deadlines,
        past_delay_budget: stats.past_delay_budget,
        paused: live.pause.clone(),
        callbacks: stats.callbacks,
    }
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
