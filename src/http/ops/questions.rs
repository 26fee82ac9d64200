//! The four questions at the top of the overview, each answered yes or no
//! with its reason (worded once, in [`crate::ops::questions`], as the CLI's
//! `status` words them) and a link to the list behind it.

use maud::{Markup, html};

use super::OpsState;
use crate::ops::{FourQuestions, Question};

/// The list behind an answer: (path, words).
fn link(q: &FourQuestions, question: Question) -> (&'static str, &'static str) {
    match question {
        Question::Working => ("/#partners", "partners"),
        Question::Noticed => ("/alerts", "alerts"),
        Question::Impact => ("/lists/failed", "failed work"),
        _ => {
            let to = if q.counts.replayable() > 0 {
                "/lists/stuck"
            } else if q.counts.quarantined_callbacks > 0 {
                "/quarantine"
            } else {
                "/deliveries"
            };
            (to, "the work to recover")
        }
    }
}

/// The answers as a row of boxes.
pub(super) fn render(state: &OpsState, q: &FourQuestions) -> Markup {
    html! {
        section.questions aria-label="The four questions" {
            @for a in q.answers() {
                @let (to, words) = link(q, a.question);
                div.question data-question=(a.question.as_str()) {
                    h3 { (a.question.words()) " "
                        span.badge.(if a.good { "ok" } else { "bad" }) data-field="answer" {
                            (if a.yes { "Yes" } else { "No" })
                        }
                    }
                    p { (super::html::shown(&a.reason, super::html::DETAIL_CHARS)) }
                    p { a href=(state.link(to)) { "See " (words) " →" } }
                }
            }
        }
    }
}
