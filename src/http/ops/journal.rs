//! The operations journal as a table: who paused, resumed, acknowledged,
//! reprocessed or dismissed by filter, when and why (on the partner page
//! and the alert page).

use maud::{Markup, html};

use super::html::{CELL_CHARS, DETAIL_CHARS, shown, when};
use crate::ops::JournalEntry;

/// Lines shown on a page.
pub(super) const JOURNAL_ROWS: usize = 50;

/// The lines, newest first, or a sentence when there are none.
pub(super) fn table(entries: &[JournalEntry]) -> Markup {
    html! {
        h2 #journal { "Operations journal" }
        @if entries.is_empty() {
            p { "Nobody has acted here yet." }
        } @else {
            table.journal {
                thead { tr { th { "When" } th { "Who" } th { "What" } th { "On" } th { "Why" } } }
                tbody {
                    @for e in entries {
                        tr data-journal=(e.action) {
                            td.nowrap { (when(e.at)) }
                            td { (shown(e.actor.as_str(), CELL_CHARS)) }
                            td { (shown(e.action_words(), CELL_CHARS)) }
                            td { (shown(e.target.as_deref().unwrap_or(""), CELL_CHARS)) }
                            td data-field="journal-reason" { (shown(&e.reason, DETAIL_CHARS)) }
                        }
                    }
                }
            }
            @if entries.len() >= JOURNAL_ROWS {
                p.muted { "The latest " (JOURNAL_ROWS) " lines; `liaison journal` reads further." }
            }
        }
    }
}
