//! Recovery: cancel, replay (one or by filter), and manual resolution. Every
//! action names its actor and reason and is journaled; an action that does
//! not fit the submission's state is refused and changes nothing.

use serde::Serialize;

use super::Liaison;
use crate::error::{Error, Result};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::event::{Actor, AttemptOutcome, EventKind};
use crate::model::result::{DEFAULT_MAX_RESULT_BYTES, ResultDocument};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::ops::journal::{JournalLine, OpsAction};
use crate::partner::Outcome;
use crate::store::{DeliveryFilter, ListFilter, Note, Pause, Replay, StateChange};

/// What [`Liaison::replay_where`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BulkReport {
    /// Submissions that matched the filter and can be replayed.
    pub matched: usize,
    /// Submissions replayed (0 in a dry run).
    pub replayed: usize,
    /// Submissions whose replay was refused, with the reason (a state that
    /// changed meanwhile, a purged payload).
    pub refused: Vec<(SubmissionId, String)>,
}

fn require_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::invalid("reason", "say why; it goes on the timeline"));
    }
    Ok(())
}

impl Liaison {
    /// Pause a partner until `until` for its announced maintenance: nothing
    /// is sent to it, its work stays queued (nothing is lost), health shows
    /// the pause, and alerts raised for it meanwhile are marked as expected.
    /// Shared through the store with every host instance. Journaled in the
    /// operations journal ([`Liaison::ops_journal`]) with `actor`, `reason`
    /// and the until-time, in the pause's own transaction.
    pub async fn pause(
        &self,
        partner: &str,
        until: chrono::DateTime<chrono::Utc>,
        actor: Actor,
        reason: &str,
    ) -> Result<()> {
        require_reason(reason)?;
        if until <= self.store().now() {
            return Err(Error::invalid("until", "a pause must end in the future"));
        }
        let pause = Pause {
            partner: partner.to_owned(),
            until,
            actor: actor.clone(),
            reason: reason.to_owned(),
        };
        let line = JournalLine::new(
            self.store().now(),
            actor.clone(),
            OpsAction::PausePartner,
            reason.trim(),
        )
        .partner(partner)
        .target(format!(
            "until {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        self.store()
            .set_pause_journaled(partner, Some(pause), line)
            .await?;
        if let Some(rt) = self.shared.partners.get(partner) {
            rt.set_paused(Some(until));
        }
        tracing::warn!(partner, %until, %actor, reason, "partner paused");
        Ok(())
    }

    /// Lift a partner's pause now; its queued work goes out at once.
    /// Journaled like [`Liaison::pause`].
    pub async fn resume(&self, partner: &str, actor: Actor, reason: &str) -> Result<()> {
        require_reason(reason)?;
        let line = JournalLine::new(
            self.store().now(),
            actor.clone(),
            OpsAction::ResumePartner,
            reason.trim(),
        )
        .partner(partner);
        self.store()
            .set_pause_journaled(partner, None, line)
            .await?;
        if let Some(rt) = self.shared.partners.get(partner) {
            rt.set_paused(None);
            rt.wake.notify_one();
        }
        tracing::warn!(partner, %actor, reason, "partner resumed");
        Ok(())
    }

    /// Cancel a submission in any state that is not terminal: queued
    /// (including a retry that is waiting), in flight (the attempt's late
    /// result will be journaled and ignored), awaiting its result, or stuck.
    pub async fn cancel(&self, id: SubmissionId, actor: Actor, reason: &str) -> Result<Submission> {
        require_reason(reason)?;
        self.store()
            .transition(
                id,
                StateChange::to(SubmissionState::Cancelled)
                    .actor(actor)
                    .reason(reason),
            )
            .await
    }

    /// Settle a `Failed`, `DeadLettered` or `Stuck` submission by hand — the
    /// manual fallback when the work was done another way (by phone, on the
    /// partner's portal). The outcome is kept on the timeline; a result
    /// document attached to it ([`Outcome::with_result`], e.g. what the
    /// partner's portal showed) is kept with the submission, under the
    /// partner's cap, and handed to the host's result handler like one the
    /// partner sent.
    pub async fn resolve_manually(
        &self,
        id: SubmissionId,
        outcome: Outcome,
        actor: Actor,
        note: &str,
    ) -> Result<Submission> {
        require_reason(note)?;
        let summary = outcome.summary();
        let mut change = StateChange::to(SubmissionState::ResolvedManually)
            .actor(actor)
            .reason(note)
            .data(summary);
        if let Some(document) = outcome.result() {
            let partner = self.store().get(id).await?.partner;
            let limit = self
                .shared
                .partners
                .get(&partner)
                .map_or(DEFAULT_MAX_RESULT_BYTES, |rt| rt.config.max_result_bytes);
            change = change.result(ResultDocument::capture(document.clone(), limit));
        }
        self.store().transition(id, change).await
    }

    /// Result deliveries to the host matching `filter`, oldest first; the
    /// parked ones are `DeliveryFilter::default().state(DeliveryState::Parked)`.
    pub async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
        self.store().deliveries(filter).await
    }

    /// Hand a parked result delivery to the host's handler again, with a
    /// fresh retry budget (after fixing what made the handler fail). The
    /// re-run is journaled on the submission's timeline.
    pub async fn rerun_delivery(
        &self,
        id: DeliveryId,
        actor: Actor,
        reason: &str,
    ) -> Result<Delivery> {
        require_reason(reason)?;
        let note = Note::new(EventKind::ResultDeliveryRerun, actor).reason(reason);
        let delivery = self.store().rerun_delivery(id, note).await?;
        self.shared.activity.notify_waiters();
        Ok(delivery)
    }

    /// Send a `Failed`, `DeadLettered` or `Stuck` submission again, with a
    /// fresh retry budget.
    ///
    /// The idempotency key: kept where the partner may hold the original
    /// (a `Stuck` submission it accepted, or one dead-lettered after
    /// transient failures, timeouts or rate limits — a kept key keeps the
    /// partner from processing it twice); a fresh key derived from it
    /// (`<key>~replay<n>`) where the partner refused it (`Failed`, or
    /// dead-lettered after a permanent refusal) and would answer a repeat
    /// with its stored refusal. [`Liaison::replay_with`] chooses explicitly.
    pub async fn replay(&self, id: SubmissionId, actor: Actor, reason: &str) -> Result<Submission> {
        let submission = self.store().get(id).await?;
        let fresh_key = match submission.state {
            SubmissionState::Failed => true,
            SubmissionState::DeadLettered => {
                let attempts = self.store().attempts(id).await?;
                attempts
                    .last()
                    .is_some_and(|a| a.outcome == Some(AttemptOutcome::Permanent))
            }
            _ => false,
        };
        self.replay_with(id, Replay::new(actor, reason).fresh_key(fresh_key))
            .await
    }

    /// Replay with an explicit choice of key.
    pub async fn replay_with(&self, id: SubmissionId, replay: Replay) -> Result<Submission> {
        require_reason(&replay.reason)?;
        let partner = self.store().get(id).await?.partner;
        let replayed = self.store().replay(id, replay).await?;
        if let Some(rt) = self.shared.partners.get(&partner) {
            rt.wake.notify_one();
        }
        Ok(replayed)
    }

    /// Replay every `Failed`, `DeadLettered` or `Stuck` submission matching
    /// `filter` (its state list, if any, is narrowed to those three), each as
    /// [`Liaison::replay`] would. With `dry_run` nothing changes and the
    /// report says how many would be replayed.
    pub async fn replay_where(
        &self,
        filter: &ListFilter,
        actor: Actor,
        reason: &str,
        dry_run: bool,
    ) -> Result<BulkReport> {
        require_reason(reason)?;
        let replayable = [
            SubmissionState::Failed,
            SubmissionState::DeadLettered,
            SubmissionState::Stuck,
        ];
        let states: Vec<SubmissionState> = if filter.states.is_empty() {
            replayable.to_vec()
        } else {
            filter
                .states
                .iter()
                .copied()
                .filter(|s| replayable.contains(s))
                .collect()
        };
        let mut report = BulkReport::default();
        if states.is_empty() {
            return Ok(report);
        }
        let mut page = ListFilter {
            states,
            limit: Some(ListFilter::MAX_LIMIT),
            ..filter.clone()
        };
        // Collect first: replaying moves rows out of the filter while paging.
        let mut ids = Vec::new();
        loop {
            let batch = self.store().list(&page).await?;
            let Some(last) = batch.last() else { break };
            page.after = Some(last.id);
            ids.extend(batch.iter().map(|s| s.id));
            if batch.len() < ListFilter::MAX_LIMIT {
                break;
            }
        }
        report.matched = ids.len();
        if dry_run {
            return Ok(report);
        }
        for id in ids {
            match self.replay(id, actor.clone(), reason).await {
                Ok(_) => report.replayed += 1,
                Err(e) if e.is_invalid_transition() || e.is_not_found() => {
                    report.refused.push((id, e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
