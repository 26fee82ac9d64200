//! The partner's answer on its way into the host: the state change a final
//! answer makes, with its result document kept under the partner's cap.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::dispatcher::PartnerRuntime;
use crate::error::{BoxError, Error};
use crate::model::delivery::Delivery;
use crate::model::event::Event;
use crate::model::result::ResultDocument;
use crate::model::submission::{Submission, SubmissionState};
use crate::partner::Outcome;
use crate::retry::{RetryDecision, decide};
use crate::store::{DeliveryClaim, DeliveryEnd, DeliveryLease, StateChange};

/// The change a partner's final answer makes, carrying its result document
/// (capped at `max_result_bytes`). The caller adds actor and reason.
pub(crate) fn outcome_change(outcome: Outcome, max_result_bytes: usize) -> StateChange {
    let (change, result) = match outcome {
        Outcome::Succeeded { result } => (StateChange::to(SubmissionState::Succeeded), result),
        Outcome::Failed { reason, result } => (
            StateChange::to(SubmissionState::Failed).error(reason),
            result,
        ),
    };
    match result {
        Some(document) => change.result(ResultDocument::capture(document, max_result_bytes)),
        None => change,
    }
}

/// A finished submission, handed to the host's [`ResultHandler`]: the
/// submission as it is now (with its result document), the timeline line
/// that finished it, and the delivery it comes with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FinishedSubmission {
    /// The delivery: its id (stable across retries: a natural key for the
    /// host's own idempotency), the state that finished the submission, and
    /// how many times a handler was called for it (1 the first time).
    pub delivery: Delivery,
    /// The submission as it is when the handler is called.
    pub submission: Submission,
    /// The timeline line of the change that finished it (who, why, when).
    pub event: Option<Event>,
}

impl FinishedSubmission {
    /// The state that finished the submission: what to tell the host.
    pub fn final_state(&self) -> SubmissionState {
        self.delivery.final_state
    }

    /// The partner's result document, when one was kept.
    pub fn document(&self) -> Option<&Value> {
        self.submission
            .result
            .as_ref()
            .and_then(ResultDocument::document)
    }
}

/// The host's side of a result delivery: called once per finished
/// submission (Succeeded, Failed, DeadLettered, Cancelled,
/// ResolvedManually), at least once — a call whose success was not recorded
/// (a crash, a lost lease) is made again, so make it idempotent, e.g. keyed
/// by [`FinishedSubmission::delivery`]'s id or the submission id.
///
/// An error or a panic is retried under the partner's retry policy; after
/// its limits the delivery is parked (the problem class "results not
/// delivered to the host" opens) until someone re-runs it. Results of one
/// ordering key are handed over in enqueue order; a slow or failing result
/// holds back the later ones of its key only.
///
/// ```
/// use async_trait::async_trait;
/// use liaison::{BoxError, FinishedSubmission, ResultHandler};
///
/// #[derive(Debug)]
/// struct Claims;
///
/// #[async_trait]
/// impl ResultHandler for Claims {
///     async fn handle(&self, finished: &FinishedSubmission) -> Result<(), BoxError> {
///         let paid = finished.document().and_then(|d| d["paid"].as_i64());
///         println!("{} is {} (paid {paid:?})", finished.submission.idempotency_key, finished.final_state());
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait ResultHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Take one finished submission into the host.
    async fn handle(&self, finished: &FinishedSubmission) -> Result<(), BoxError>;
}

/// Where a partner's results go.
#[derive(Clone, Debug)]
pub(crate) enum Results {
    /// To a handler; the engine acknowledges after it returned.
    Handler(Arc<dyn ResultHandler>),
    /// To a handler writing on the outbox's SQLite file, in the transaction
    /// that acknowledges the delivery.
    #[cfg(feature = "sqlite")]
    Sqlite(
        crate::store::SqliteStore,
        Arc<dyn crate::store::SqliteResultHandler>,
    ),
    /// To a handler writing in the PostgreSQL transaction that acknowledges
    /// the delivery.
    #[cfg(feature = "postgres")]
    Postgres(
        crate::store::PostgresStore,
        Arc<dyn crate::store::PostgresResultHandler>,
    ),
}

/// Register this instance as the one delivering the results of the
/// partners with a handler: from now on, the store records a delivery with
/// every change that finishes one of their submissions. Retried until it
/// succeeds or the engine stops; `false` when it stopped first.
pub(crate) async fn register(
    shared: &Shared,
    rt: &PartnerRuntime,
    stop: &CancellationToken,
) -> bool {
    if rt.config.results.is_none() {
        return true;
    }
    let mut wait = Duration::from_millis(100);
    loop {
        match shared
            .store
            .set_result_delivery(&rt.config.name, true)
            .await
        {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(partner = %rt.config.name, %error, "could not register the result handler; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Deliveries handed to handlers at once, over all partners.
const CONCURRENT_DELIVERIES: usize = 32;

/// The delivery loop: claim due deliveries of the partners with a handler
/// and hand each to its handler, until `stop`.
pub(crate) async fn run_results(shared: Arc<Shared>, stop: CancellationToken) {
    let partners: Vec<String> = shared
        .partners
        .values()
        .filter(|rt| rt.config.results.is_some())
        .map(|rt| rt.config.name.clone())
        .collect();
    if partners.is_empty() {
        return;
    }
    let lease_for = shared
        .partners
        .values()
        .map(|rt| rt.config.attempt_timeout)
        .max()
        .unwrap_or(Duration::from_secs(30))
        .saturating_add(shared.settings.lease_margin);
    let mut running: JoinSet<()> = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        let room = CONCURRENT_DELIVERIES.saturating_sub(running.len());
        let mut claimed = 0;
        if room > 0 {
            // Dated by the store's clock (on PostgreSQL the database's),
            // by which deliveries fall due and their leases end: by this
            // host's, a clock running ahead would take other instances'
            // deliveries before their leases end.
            let claim = DeliveryClaim::new(partners.clone(), room, lease_for).at(shared.now());
            match shared.store.claim_deliveries(claim).await {
                Ok(leases) => {
                    claimed = leases.len();
                    for lease in leases {
                        running.spawn(deliver(Arc::clone(&shared), lease));
                    }
                }
                Err(error) => tracing::warn!(%error, "could not claim result deliveries"),
            }
        }
        if claimed > 0 && claimed == room {
            // More may be due: claim again once half the slots are free,
            // so claims stay batched instead of one row per transaction.
            while running.len() > CONCURRENT_DELIVERIES / 2 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = running.join_next() => {}
                }
            }
            if stop.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = shared.activity.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = tokio::time::sleep(shared.settings.poll_interval) => {}
        }
    }
    // Deliveries under way finish (or their leases expire and they are
    // claimed again on the next start).
    while running.join_next().await.is_some() {}
}

/// Hand one claimed delivery to its handler and record how it ended.
async fn deliver(shared: Arc<Shared>, lease: DeliveryLease) {
    let delivery = &lease.delivery;
    let span = tracing::info_span!(
        "result delivery",
        partner = %delivery.partner,
        submission = %delivery.submission_id,
        attempt = delivery.attempts,
    );
    async {
        let Some(rt) = shared.partners.get(&delivery.partner).cloned() else {
            return;
        };
        let Some(results) = rt.config.results.clone() else {
            return;
        };
        let outcome = match finished(&shared, delivery).await {
            Ok(finished) => match results {
                Results::Handler(handler) => {
                    call(handler, finished, rt.config.attempt_timeout).await
                }
                #[cfg(feature = "sqlite")]
                Results::Sqlite(store, handler) => {
                    let run = store.deliver_in_transaction(&lease, finished, handler).await;
                    match acknowledged(run) {
                        None => return,
                        Some(error) => Err(error),
                    }
                }
                #[cfg(feature = "postgres")]
                Results::Postgres(store, handler) => {
                    let timeout = rt.config.attempt_timeout;
                    let run = store.deliver_in_transaction(&lease, &finished, handler);
                    match tokio::time::timeout(timeout, run).await {
                        Ok(run) => match acknowledged(run) {
                            None => return,
                            Some(error) => Err(error),
                        },
                        Err(_) => Err(format!(
                            "the result handler did not finish within {timeout:?}; its transaction was rolled back"
                        )),
                    }
                }
            },
            Err(error) => Err(format!("could not read the finished submission: {error}")),
        };
        let end = match outcome {
            Ok(()) => DeliveryEnd::Delivered,
            Err(error) => failed(&rt, delivery, error, shared.now()),
        };
        match &end {
            DeliveryEnd::Delivered => tracing::debug!("result delivered to the host"),
            DeliveryEnd::Retry { error, .. } => {
                tracing::warn!(%error, "the host's result handler failed; retry scheduled")
            }
            DeliveryEnd::Parked { error } => {
                tracing::error!(%error, "the host's result handler keeps failing; delivery parked")
            }
        }
        match shared.store.finish_delivery(&lease, end).await {
            Ok(()) => {}
            Err(e) if e.is_stale_lease() => {
                tracing::warn!("the delivery's lease ended before its end was recorded; it runs again")
            }
            Err(error) => tracing::warn!(%error, "could not record the delivery's end; it runs again when its lease ends"),
        }
    }
    .instrument(span)
    .await;
}

async fn finished(shared: &Shared, delivery: &Delivery) -> crate::Result<FinishedSubmission> {
    let submission = shared.store.get(delivery.submission_id).await?;
    let event = shared
        .store
        .timeline(delivery.submission_id)
        .await?
        .into_iter()
        .rev()
        .find(|e| e.to_state == Some(delivery.final_state));
    Ok(FinishedSubmission {
        delivery: delivery.clone(),
        submission,
        event,
    })
}

/// What a transactional handler's run leaves to record: nothing when the
/// delivery was acknowledged in the host's transaction, or when its lease
/// is gone (another claim runs it); otherwise the failure, in words.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn acknowledged(run: crate::Result<()>) -> Option<String> {
    match run {
        Ok(()) => {
            tracing::debug!("result written into the host's tables");
            None
        }
        Err(e) if e.is_stale_lease() => {
            tracing::warn!("the delivery's lease ended before it ran; it runs again");
            None
        }
        Err(Error::Handler { source }) => Some(source.to_string()),
        Err(error) => Some(with_causes(&error)),
    }
}

/// An error with its causes, on one line (a panic in a transactional
/// handler arrives as the writer's error, the panic as its cause).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn with_causes(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Run the handler in a task of its own, so a panic is an error like any
/// other, bounded by `timeout`.
async fn call(
    handler: Arc<dyn ResultHandler>,
    finished: FinishedSubmission,
    timeout: Duration,
) -> Result<(), String> {
    let task = tokio::spawn(async move { handler.handle(&finished).await });
    let abort = task.abort_handle();
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(error.to_string()),
        Ok(Err(join)) if join.is_panic() => Err("the result handler panicked".to_owned()),
        Ok(Err(_)) => Err("the result handler was cancelled".to_owned()),
        Err(_) => {
            abort.abort();
            Err(format!(
                "the result handler did not finish within {timeout:?}"
            ))
        }
    }
}

/// A failed delivery's end: retried under the partner's policy and limits,
/// parked when they are spent.
fn failed(
    rt: &PartnerRuntime,
    delivery: &Delivery,
    error: String,
    now: chrono::DateTime<Utc>,
) -> DeliveryEnd {
    let age = (now - delivery.created_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    let as_error = crate::partner::PartnerError::transient(error.clone());
    match decide(
        rt.config.retry.as_ref(),
        &rt.config.limits,
        delivery.attempts,
        age,
        &as_error,
    ) {
        (RetryDecision::RetryAfter(delay), _) => DeliveryEnd::Retry {
            due_at: super::saturating_after(now, delay),
            error,
        },
        (_, why) => DeliveryEnd::Parked {
            error: format!("{why}: {error}"),
        },
    }
}
