//! What the store reports for health: counts kept by the store, outcomes in
//! a time window, latency samples.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::submission::SubmissionState;

/// Most latency samples returned per partner and measure.
pub const MAX_LATENCY_SAMPLES: usize = 10_000;

/// Which statistics to gather.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// The end of the window.
    pub now: DateTime<Utc>,
    /// The window: outcomes and latencies in `[now - window, now)`, compared
    /// with the window before it.
    pub window: Duration,
    /// Only these partners; empty means every partner the store knows.
    pub partners: Vec<String>,
    /// Per partner, how long a submission may stay unfinished before the
    /// business must know.
    pub delay_budgets: BTreeMap<String, Duration>,
}

/// A count and its summed business value (minor units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// How many.
    pub count: u64,
    /// Their summed `business_value`.
    pub value: i64,
}

/// Submissions that reached a terminal state in a window, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Reached each terminal state.
    pub by_state: BTreeMap<SubmissionState, u64>,
}

impl Outcomes {
    /// How many reached `state`.
    pub fn get(&self, state: SubmissionState) -> u64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    /// All that ended in the window.
    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }
}

/// One partner's raw statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartnerStats {
    /// The partner.
    pub partner: String,
    /// Submissions in each state now, with their value.
    pub by_state: BTreeMap<SubmissionState, Totals>,
    /// Outcomes in the window.
    pub window: Outcomes,
    /// Outcomes in the window before.
    pub previous: Outcomes,
    /// Milliseconds from enqueue to acceptance, accepted in the window.
    pub enqueue_to_accepted_ms: Vec<i64>,
    /// Milliseconds from acceptance to the result, settled in the window.
    pub accepted_to_result_ms: Vec<i64>,
    /// When the oldest queued submission was enqueued.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Unfinished submissions older than the partner's delay budget.
    pub past_delay_budget: Totals,
    /// Callbacks that arrived in the window, by disposition.
    pub callbacks: BTreeMap<crate::callback::Disposition, u64>,
}

/// An alert to open (or keep open) for a (partner, class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    /// The partner.
    pub partner: String,
    /// The class of problem.
    pub class: crate::ops::alerts::ProblemClass,
    /// Its owner.
    pub owner: crate::ops::alerts::Owner,
    /// The condition, in words (updated while the alert stays open).
    pub details: String,
    /// Raised during an announced pause.
    pub expected: bool,
    /// Now.
    pub at: DateTime<Utc>,
}
