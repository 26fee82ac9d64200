//! The four questions at the top of the overview, each answered yes or no
//! with its reason and a link to the list behind it: is it working today,
//! do we notice when it breaks, is there an impact, can we recover.

use maud::{Markup, html};

use super::OpsState;
use crate::model::submission::SubmissionState;
use crate::ops::{HealthReport, Verdict};

/// One answer.
pub(super) struct Answer {
    pub(super) id: &'static str,
    pub(super) question: &'static str,
    /// The yes or no.
    pub(super) yes: bool,
    /// Whether a "yes" is the good answer (for "is there an impact?" it is not).
    pub(super) yes_is_good: bool,
    pub(super) reason: String,
    pub(super) link: &'static str,
    pub(super) link_words: &'static str,
}

/// What the answers count beyond the health report.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    /// Results parked: the host's handler gave up on them.
    pub(super) parked: usize,
    /// Whether `parked` is the list cap (there may be more).
    pub(super) parked_capped: bool,
}

/// Answer the four questions from the health report.
pub(super) fn answer(report: &HealthReport, counts: Counts) -> [Answer; 4] {
    let in_state = |state: SubmissionState| -> u64 {
        report
            .partners
            .iter()
            .map(|p| p.by_state.get(&state).map_or(0, |t| t.count))
            .sum()
    };
    let (failed, dead, stuck) = (
        in_state(SubmissionState::Failed),
        in_state(SubmissionState::DeadLettered),
        in_state(SubmissionState::Stuck),
    );
    let quarantined: u64 = report
        .partners
        .iter()
        .flat_map(|p| p.quarantined.values())
        .sum();
    let undelivered: usize = report
        .partners
        .iter()
        .map(|p| p.undelivered_alerts.len())
        .sum();

    let working = Answer {
        id: "working",
        question: "Is it working today?",
        yes: report.verdict != Verdict::Down,
        yes_is_good: true,
        reason: match (report.verdict, report.reasons.first()) {
            (Verdict::Healthy, _) if report.partners.is_empty() => {
                "nothing has been sent yet".to_owned()
            }
            (Verdict::Healthy, _) => "every partner is working".to_owned(),
            (Verdict::Degraded, Some(first)) => {
                format!(
                    "with problems to look at: {first}{}",
                    more(report.reasons.len())
                )
            }
            (_, Some(first)) => format!("{first}{}", more(report.reasons.len())),
            (_, None) => "see the partners".to_owned(),
        },
        link: "/#partners",
        link_words: "partners",
    };
    let problems = stuck + dead + quarantined + counts.parked as u64;
    let noticed = Answer {
        id: "noticed",
        question: "Do we notice when it breaks?",
        yes: undelivered == 0,
        yes_is_good: true,
        reason: if undelivered > 0 {
            format!(
                "{undelivered} alert owner(s) could not be notified: their alerts did not reach them"
            )
        } else {
            format!(
                "{problems} problem(s) flagged ({stuck} stuck, {dead} dead-lettered, \
                 {quarantined} callback(s) in quarantine, {} result(s) not delivered); \
                 alert notifications are getting through",
                counts.parked
            )
        },
        link: "/alerts",
        link_words: "alerts",
    };
    let impact = Answer {
        id: "impact",
        question: "Is there an impact?",
        yes: report.at_risk.count > 0,
        yes_is_good: false,
        reason: if report.at_risk.count == 0 {
            "no work is at risk".to_owned()
        } else {
            format!(
                "{} submission(s) worth {} at risk (failed, dead-lettered, stuck or late){}",
                report.at_risk.count,
                report.at_risk.value,
                deadlines(report)
            )
        },
        link: "/lists/failed",
        link_words: "failed work",
    };
    let replayable = failed + dead + stuck;
    let nothing = replayable + quarantined == 0 && counts.parked == 0;
    let recover = Answer {
        id: "recoverable",
        question: "Can we recover?",
        yes: true,
        yes_is_good: true,
        reason: if nothing {
            "nothing needs recovering".to_owned()
        } else {
            format!(
                "{replayable} submission(s) to replay, resolve or cancel; {quarantined} \
                 quarantined callback(s) to reprocess or dismiss; {}{} result(s) to re-run",
                if counts.parked_capped {
                    "at least "
                } else {
                    ""
                },
                counts.parked
            )
        },
        link: if replayable > 0 {
            "/lists/stuck"
        } else if quarantined > 0 {
            "/quarantine"
        } else {
            "/deliveries"
        },
        link_words: "the work to recover",
    };
    [working, noticed, impact, recover]
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

/// The answers as a row of boxes.
pub(super) fn render(state: &OpsState, answers: &[Answer]) -> Markup {
    html! {
        section.questions aria-label="The four questions" {
            @for a in answers {
                @let good = a.yes == a.yes_is_good;
                div.question data-question=(a.id) {
                    h3 { (a.question) " "
                        span.badge.(if good { "ok" } else { "bad" }) data-field="answer" {
                            (if a.yes { "Yes" } else { "No" })
                        }
                    }
                    p { (super::html::shown(&a.reason, super::html::DETAIL_CHARS)) }
                    p { a href=(state.link(a.link)) { "See " (a.link_words) " →" } }
                }
            }
        }
    }
}
