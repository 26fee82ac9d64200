//! The four questions a support person asks first — is it working today, do
//! we notice when it breaks, is there an impact, can we recover — each
//! answered yes or no with its reason in plain words.
//!
//! Decided once, here: the `liaison status` command and the ops page's
//! overview both show these answers, worded the same.

use serde::Serialize;

use super::{HealthReport, Verdict};
use crate::model::submission::SubmissionState;

/// Which question an [`Answer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Question {
    /// "Is it working today?"
    Working,
    /// "Do we notice when it breaks?"
    Noticed,
    /// "Is there an impact?"
    Impact,
    /// "Can we recover?"
    Recoverable,
}

impl Question {
    /// A stable name: `working`, `noticed`, `impact`, `recoverable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Question::Working => "working",
            Question::Noticed => "noticed",
            Question::Impact => "impact",
            Question::Recoverable => "recoverable",
        }
    }

    /// The question, as a person asks it.
    pub fn words(self) -> &'static str {
        match self {
            Question::Working => "Is it working today?",
            Question::Noticed => "Do we notice when it breaks?",
            Question::Impact => "Is there an impact?",
            Question::Recoverable => "Can we recover?",
        }
    }
}

/// One question answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Answer {
    /// The question.
    pub question: Question,
    /// The yes or no.
    pub yes: bool,
    /// Whether this answer is the good one (a "yes" to "is there an
    /// impact?" is not).
    pub good: bool,
    /// Why, in plain words.
    pub reason: String,
}

/// What the answers count beyond the health report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ProblemCounts {
    /// Failed submissions, across partners.
    pub failed: u64,
    /// Dead-lettered submissions, across partners.
    pub dead_lettered: u64,
    /// Stuck submissions, across partners.
    pub stuck: u64,
    /// Callbacks in the quarantine.
    pub quarantined_callbacks: u64,
    /// Stored callbacks never verified or processed (disposition
    /// `received`), counted up to the list cap.
    pub unverified_callbacks: u64,
    /// Results parked: the host's handler gave up on them (up to the list
    /// cap).
    pub parked_results: u64,
    /// Whether `parked_results` (or `unverified_callbacks`) is the list cap:
    /// there may be more.
    pub capped: bool,
    /// Alert sinks failing to reach an owner now.
    pub undelivered_alerts: u64,
}

impl ProblemCounts {
    /// Failed, dead-lettered and stuck: work a person can replay, resolve or
    /// cancel.
    pub fn replayable(&self) -> u64 {
        self.failed + self.dead_lettered + self.stuck
    }

    /// Everything flagged as a problem.
    pub fn problems(&self) -> u64 {
        self.stuck
            + self.dead_lettered
            + self.unverified_callbacks
            + self.quarantined_callbacks
            + self.parked_results
    }
}

/// The four answers, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FourQuestions {
    /// Is it working today?
    pub working: Answer,
    /// Do we notice when it breaks?
    pub noticed: Answer,
    /// Is there an impact?
    pub impact: Answer,
    /// Can we recover?
    pub recoverable: Answer,
    /// The counts behind them.
    pub counts: ProblemCounts,
}

impl FourQuestions {
    /// The answers in the order they are asked.
    pub fn answers(&self) -> [&Answer; 4] {
        [
            &self.working,
            &self.noticed,
            &self.impact,
            &self.recoverable,
        ]
    }
}

/// "1 callback" / "2 callbacks".
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The counts the health report already holds; the caller adds what it
/// does not (unverified callbacks, parked results).
pub(crate) fn counts_from(report: &HealthReport) -> ProblemCounts {
    let in_state = |state: SubmissionState| -> u64 {
        report
            .partners
            .iter()
            .map(|p| p.by_state.get(&state).map_or(0, |t| t.count))
            .sum()
    };
    ProblemCounts {
        failed: in_state(SubmissionState::Failed),
        dead_lettered: in_state(SubmissionState::DeadLettered),
        stuck: in_state(SubmissionState::Stuck),
        quarantined_callbacks: report
            .partners
            .iter()
            .flat_map(|p| p.quarantined.values())
            .sum(),
        undelivered_alerts: report
            .partners
            .iter()
            .map(|p| p.undelivered_alerts.len() as u64)
            .sum(),
        ..ProblemCounts::default()
    }
}

/// Answer the four questions from the health report and the counts.
pub fn answer(report: &HealthReport, counts: ProblemCounts) -> FourQuestions {
    let c = counts;
    let working = Answer {
        question: Question::Working,
        yes: report.verdict != Verdict::Down,
        good: report.verdict != Verdict::Down,
        reason: match (report.verdict, report.reasons.first()) {
            (Verdict::Healthy, _) if report.partners.is_empty() => {
                "nothing has been sent yet".to_owned()
            }
            (Verdict::Healthy, _) => "every partner is working".to_owned(),
            (Verdict::Degraded, Some(first)) => format!(
                "with problems to look at: {first}{}",
                more(report.reasons.len())
            ),
            (_, Some(first)) => format!("{first}{}", more(report.reasons.len())),
            (_, None) => "see the partners".to_owned(),
        },
    };
    let at_least = if c.capped { "at least " } else { "" };
    let noticed = Answer {
        question: Question::Noticed,
        yes: c.undelivered_alerts == 0,
        good: c.undelivered_alerts == 0,
        reason: if c.undelivered_alerts > 0 {
            format!(
                "{} could not reach an owner: their alerts did not arrive",
                count(c.undelivered_alerts, "alert sink", "alert sinks")
            )
        } else {
            format!(
                "{at_least}{} flagged: {} stuck, {} dead-lettered, {}, {}, {}; alert \
                 notifications are getting through",
                count(c.problems(), "problem", "problems"),
                c.stuck,
                c.dead_lettered,
                count(
                    c.unverified_callbacks,
                    "callback stored but never verified",
                    "callbacks stored but never verified"
                ),
                count(
                    c.quarantined_callbacks,
                    "callback in quarantine",
                    "callbacks in quarantine"
                ),
                count(
                    c.parked_results,
                    "result not delivered to the host",
                    "results not delivered to the host"
                ),
            )
        },
    };
    let at_risk = report.at_risk.count > 0;
    let impact = Answer {
        question: Question::Impact,
        yes: at_risk,
        good: !at_risk,
        reason: if at_risk {
            format!(
                "{} worth {} at risk (failed, dead-lettered, stuck or past the delay \
                 budget){}",
                count(report.at_risk.count, "submission", "submissions"),
                report.at_risk.value,
                deadlines(report)
            )
        } else {
            "no work is at risk".to_owned()
        },
    };
    let replayable = c.replayable();
    let nothing = replayable + c.quarantined_callbacks + c.parked_results == 0;
    let recoverable = Answer {
        question: Question::Recoverable,
        yes: true,
        good: true,
        reason: if nothing {
            "nothing needs recovering".to_owned()
        } else {
            format!(
                "{} ({} failed, {} dead-lettered, {} stuck) to replay, resolve or cancel; \
                 {} to reprocess or dismiss; {}{} to re-run",
                count(
                    replayable,
                    "replayable submission",
                    "replayable submissions"
                ),
                c.failed,
                c.dead_lettered,
                c.stuck,
                count(
                    c.quarantined_callbacks,
                    "quarantined callback",
                    "quarantined callbacks"
                ),
                at_least,
                count(c.parked_results, "parked result", "parked results"),
            )
        },
    };
    FourQuestions {
        working,
        noticed,
        impact,
        recoverable,
        counts,
    }
}

fn more(reasons: usize) -> String {
    if reasons > 1 {
        format!(" (and {} more)", reasons - 1)
    } else {
        String::new()
    }
}

fn deadlines(report: &HealthReport) -> String {
    let words: Vec<String> = report
        .partners
        .iter()
        .filter_map(|p| p.deadline_words().map(|w| format!("{}: {w}", p.partner)))
        .collect();
    if words.is_empty() {
        String::new()
    } else {
        format!("; business deadlines: {}", words.join("; "))
    }
}
