//! Result deadlines: an accepted submission whose result is overdue is
//! polled where the adapter can, and otherwise marked `Stuck`. Unmatched
//! callbacks past their window are quarantined here too.

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Liaison, Shared};
use crate::callback::Disposition;
use crate::model::event::{Actor, EventKind};
use crate::model::submission::{Submission, SubmissionState};
use crate::partner::{PollError, PollStatus};
use crate::store::CallbackFilter;
use crate::store::{Note, OverdueClaim, StateChange};

/// Most overdue submissions handled per round.
const BATCH: usize = 100;

pub(crate) async fn run_deadlines(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        if let Err(error) = round(&shared).await {
            tracing::warn!(%error, "checking result deadlines failed");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(shared.settings.deadline_interval) => {}
        }
    }
}

/// A callback still `received` this long after arrival was stored but never
/// settled (a crash, or a storage error between the two steps): process it.
const STRANDED_AFTER: chrono::Duration = chrono::Duration::seconds(10);

async fn round(shared: &Arc<Shared>) -> crate::Result<()> {
    let now = shared.now();
    let liaison = Liaison {
        shared: Arc::clone(shared),
    };
    // Per partner, the oldest first: a backlog is worked through in order of
    // arrival instead of the newest batch always taking the round.
    for name in shared.partners.keys() {
        let stranded = shared
            .store
            .list_callbacks(
                &CallbackFilter::default()
                    .partner(name.clone())
                    .disposition(Disposition::Received)
                    .oldest_first()
                    .limit(BATCH),
            )
            .await?;
        for callback in stranded
            .into_iter()
            .filter(|c| c.received_at < now - STRANDED_AFTER)
        {
            match liaison.reprocess_callback(callback.id).await {
                Ok(receipt) => tracing::warn!(
                    callback_id = %callback.id,
                    disposition = receipt.disposition.as_str(),
                    "a callback left unsettled was processed"
                ),
                // Another instance settled it meanwhile.
                Err(e) if e.is_already_settled() => {}
                Err(error) => tracing::warn!(%error, "could not process an unsettled callback"),
            }
        }
    }
    let expired = shared.store.expire_unmatched(now).await?;
    if expired > 0 {
        tracing::warn!(
            count = expired,
            "unmatched callbacks quarantined after their matching window"
        );
    }
    // Each partner this instance serves: take its overdue results (hidden
    // from other instances for the poll's time budget) and poll them
    // concurrently, within the partner's concurrency limit.
    let mut polls = tokio::task::JoinSet::new();
    for (name, rt) in &shared.partners {
        let claim = OverdueClaim {
            partner: name.clone(),
            now,
            hold: rt
                .config
                .attempt_timeout
                .saturating_add(shared.settings.lease_margin),
            limit: BATCH,
        };
        let overdue_now = match shared.store.claim_overdue(claim).await {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(partner = %name, %error, "taking overdue results failed");
                continue;
            }
        };
        let permits = Arc::new(tokio::sync::Semaphore::new(rt.config.concurrency.max(1)));
        for submission in overdue_now {
            let span = tracing::info_span!(
                "liaison.deadline",
                submission_id = %submission.id,
                partner = %submission.partner,
                key = %submission.idempotency_key,
            );
            let (shared, permits) = (Arc::clone(shared), Arc::clone(&permits));
            polls.spawn(
                async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    overdue(&shared, submission).await;
                }
                .instrument(span),
            );
        }
    }
    // The round ends when its polls do, so rounds never overlap.
    while polls.join_next().await.is_some() {}
    Ok(())
}

async fn overdue(shared: &Shared, submission: Submission) {
    let Some(rt) = shared.partners.get(&submission.partner) else {
        // Another host instance may serve this partner.
        return;
    };
    let actor = Actor::system("deadlines");
    let polls_so_far = match shared.store.timeline(submission.id).await {
        Ok(events) => events
            .iter()
            .filter(|e| e.kind == EventKind::Polled)
            .count(),
        Err(error) => {
            tracing::warn!(%error, "could not read the timeline");
            return;
        }
    };
    let answer = tokio::time::timeout(
        rt.config.attempt_timeout,
        rt.config.adapter.poll_status(&submission),
    )
    .await;
    let change = match answer {
        Ok(Err(PollError::Unsupported)) => Some(
            StateChange::to(SubmissionState::Stuck)
                .actor(actor)
                .reason("no result before the deadline, and the partner cannot be polled"),
        ),
        Ok(Ok(PollStatus::Done(outcome))) => Some(
            super::results::outcome_change(outcome, rt.config.max_result_bytes)
                .actor(actor)
                .reason("result obtained by polling the partner after the deadline"),
        ),
        pending_or_failed => {
            let what = match pending_or_failed {
                Ok(Ok(_)) => "the partner reports it still in progress".to_owned(),
                Ok(Err(e)) => format!("the poll failed: {e}"),
                Err(_) => "the poll timed out".to_owned(),
            };
            let polls = u32::try_from(polls_so_far + 1).unwrap_or(u32::MAX);
            if polls >= rt.config.max_polls {
                Some(
                    StateChange::to(SubmissionState::Stuck)
                        .actor(actor)
                        .reason(format!("no result after {polls} polls; last: {what}")),
                )
            } else {
                let next = super::saturating_after(shared.now(), rt.config.poll_every);
                let note = Note::new(EventKind::Polled, actor)
                    .reason(what)
                    .data(json!({ "poll": polls, "next_deadline": next }));
                if let Err(error) = shared.store.defer_deadline(submission.id, next, note).await {
                    tracing::warn!(%error, "could not record the poll");
                }
                None
            }
        }
    };
    if let Some(change) = change {
        match shared.store.transition(submission.id, change).await {
            Ok(s) => {
                tracing::warn!(state = s.state.as_str(), "overdue result settled");
                if matches!(
                    s.state,
                    SubmissionState::Succeeded | SubmissionState::Failed
                ) {
                    shared.metrics.result_now(&s.partner, s.created_at);
                }
            }
            // A callback may have settled it meanwhile: that is fine.
            Err(e) if e.is_invalid_transition() => {}
            Err(error) => tracing::warn!(%error, "could not settle an overdue result"),
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::callback::{JsonMatcher, Unverified};
    use crate::engine::Partner;
    use crate::partner::{AttemptContext, PartnerAdapter, PartnerError, SubmitOutcome};
    use crate::store::{NewCallback, OutboxStore, SqliteStore};

    #[derive(Debug)]
    struct Idle;

    #[async_trait]
    impl PartnerAdapter for Idle {
        async fn submit(
            &self,
            _: &AttemptContext,
            _: &Submission,
        ) -> Result<SubmitOutcome, PartnerError> {
            Ok(SubmitOutcome::AwaitResult { external_ref: None })
        }
    }

    #[tokio::test]
    async fn stranded_callbacks_are_processed_oldest_first() {
        let store = SqliteStore::open_temporary().unwrap();
        let liaison = Liaison::builder(store.clone())
            .partner(
                Partner::new("lab", Idle)
                    .callbacks(JsonMatcher::builder(Unverified).build().unwrap()),
            )
            .build()
            .unwrap();
        // More stranded callbacks than one round takes, all older than the
        // grace period, in order of arrival.
        let start = chrono::Utc::now() - chrono::Duration::minutes(10);
        let mut ids = Vec::new();
        for i in 0..BATCH + 30 {
            let body = format!(r#"{{"reference":"R-{i}","status":"succeeded"}}"#);
            let at = start + chrono::Duration::seconds(i as i64);
            let id = store
                .record_callback(NewCallback::new("lab", body.into_bytes()).received_at(at))
                .await
                .unwrap();
            ids.push(id);
        }
        round(&liaison.shared).await.unwrap();
        let mut left = Vec::new();
        for id in &ids {
            if store.callback(*id).await.unwrap().disposition == Disposition::Received {
                left.push(*id);
            }
        }
        assert_eq!(left, ids[BATCH..], "the oldest {BATCH} are processed first");
        // The next round takes the rest.
        round(&liaison.shared).await.unwrap();
        for id in &ids {
            assert_ne!(
                store.callback(*id).await.unwrap().disposition,
                Disposition::Received
            );
        }
    }
}
