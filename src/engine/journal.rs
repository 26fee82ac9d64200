//! The operations journal's read API, and the bulk actions on the callback
//! quarantine that journal one line for all the callbacks they touch.

use super::Liaison;
use crate::callback::CallbackId;
use crate::error::{Error, Result};
use crate::model::event::Actor;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine, OpsAction};

/// What a bulk action on quarantined callbacks did.
#[derive(Debug)]
#[non_exhaustive]
pub struct BulkOutcome {
    /// Callbacks asked about.
    pub asked: usize,
    /// Callbacks reprocessed or dismissed.
    pub changed: usize,
    /// Callbacks refused, each with why (nothing changed for them).
    pub refused: Vec<(CallbackId, Error)>,
    /// The journal line written for the whole action.
    pub journal: JournalEntry,
}

/// A bulk action's scope: the callbacks and the filter that chose them.
#[derive(Debug, Clone, Copy)]
pub struct BulkScope<'a> {
    /// The callbacks, as the filter matched them.
    pub ids: &'a [CallbackId],
    /// The filter in words, for the journal ("malformed callbacks of lab").
    pub filter: &'a str,
    /// The partner the filter names, if it names one.
    pub partner: Option<&'a str>,
}

impl Liaison {
    /// The operations journal, newest first: who paused or resumed a
    /// partner, acknowledged an alert, reprocessed a callback that concerns
    /// no submission, or reprocessed or dismissed callbacks by filter — when
    /// and why. Actions on a submission are on its timeline instead.
    ///
    /// ```
    /// # use liaison::{Actor, Liaison, store::SqliteStore};
    /// # use liaison::ops::JournalFilter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// let until = chrono::Utc::now() + chrono::Duration::hours(2);
    /// liaison.pause("lab", until, Actor::person("dana"), "lab maintenance").await?;
    /// let lines = liaison.ops_journal(&JournalFilter::default().partner("lab")).await?;
    /// assert_eq!(lines[0].action, "pause_partner");
    /// assert_eq!(lines[0].reason, "lab maintenance");
    /// # Ok(()) }
    /// ```
    pub async fn ops_journal(&self, filter: &JournalFilter) -> Result<Vec<JournalEntry>> {
        self.store().ops_journal(filter).await
    }

    /// Reprocess each of `scope.ids` ([`Liaison::reprocess_callback_by`]),
    /// then journal one line for all with the count: the filter is the
    /// target, the reason says how many of how many. Callbacks that concern
    /// a submission are on its timeline too; the others have only this line.
    ///
    /// Errors, changing nothing: [`Error::InvalidInput`] naming `actor` or
    /// `reason` when blank. A callback refused is in
    /// [`BulkOutcome::refused`].
    pub async fn reprocess_callbacks_by(
        &self,
        scope: BulkScope<'_>,
        actor: Actor,
        reason: &str,
    ) -> Result<BulkOutcome> {
        require(&actor, reason)?;
        let mut outcome = Vec::with_capacity(scope.ids.len());
        for id in scope.ids {
            let done = self
                .reprocess_journaled(*id, actor.clone(), reason, false)
                .await;
            outcome.push((*id, done.map(drop)));
        }
        self.journal_bulk(OpsAction::ReprocessCallbacks, scope, actor, reason, outcome)
            .await
    }

    /// Dismiss each of `scope.ids` ([`Liaison::dismiss_callback`]), then
    /// journal one line for all with the count, as
    /// [`Liaison::reprocess_callbacks_by`] does.
    pub async fn dismiss_callbacks(
        &self,
        scope: BulkScope<'_>,
        actor: Actor,
        reason: &str,
    ) -> Result<BulkOutcome> {
        require(&actor, reason)?;
        let mut outcome = Vec::with_capacity(scope.ids.len());
        for id in scope.ids {
            let done = self.dismiss_callback(*id, actor.clone(), reason).await;
            outcome.push((*id, done.map(drop)));
        }
        self.journal_bulk(OpsAction::DismissCallbacks, scope, actor, reason, outcome)
            .await
    }

    /// One line for a bulk action, after it (each callback's change commits
    /// on its own).
    async fn journal_bulk(
        &self,
        action: OpsAction,
        scope: BulkScope<'_>,
        actor: Actor,
        reason: &str,
        outcome: Vec<(CallbackId, Result<()>)>,
    ) -> Result<BulkOutcome> {
        let asked = outcome.len();
        let mut refused = Vec::new();
        for (id, done) in outcome {
            if let Err(e) = done {
                refused.push((id, e));
            }
        }
        let changed = asked - refused.len();
        let mut line = JournalLine::new(
            self.store().now(),
            actor,
            action,
            format!(
                "{changed} of {asked} callback(s){}: {}",
                if refused.is_empty() {
                    String::new()
                } else {
                    format!(", {} refused", refused.len())
                },
                reason.trim()
            ),
        )
        .target(scope.filter);
        if let Some(partner) = scope.partner {
            line = line.partner(partner);
        }
        let journal = self.store().journal(line).await?;
        Ok(BulkOutcome {
            asked,
            changed,
            refused,
            journal,
        })
    }
}

fn require(actor: &Actor, reason: &str) -> Result<()> {
    if actor.as_str().trim().is_empty() {
        return Err(Error::invalid("actor", "say who acts; it is journaled"));
    }
    if reason.trim().is_empty() {
        return Err(Error::invalid("reason", "say why; it is journaled"));
    }
    Ok(())
}
