//! The operations surface: is it working, what is the impact.
//!
//! [`HealthReport`] answers, per partner and overall, from what the store
//! keeps: counts by state, outcomes and their trend, latencies, the oldest
//! queued work, stuck work, the circuit, and the value at risk — rolled up
//! into a verdict with the reasons that produced it.

pub mod alerts;
pub(crate) mod health;
pub mod journal;
mod metrics;
pub mod questions;

pub use health::{
    DispatcherHealth, HealthReport, InstanceHealth, PartnerHealth, Percentiles, TrafficHealth,
    Trend, Verdict, WindowOutcomes,
};
pub use journal::{JournalEntry, JournalFilter, JournalLine, OpsAction};
pub use metrics::Metrics;
pub use questions::{Answer, FourQuestions, ProblemCounts, Question};
