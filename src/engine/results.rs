//! The partner's answer on its way into the host: the state change a final
//! answer makes, with its result document kept under the partner's cap.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::dispatcher::PartnerRuntime;
use crate::error::{BoxError, Error};
use crate::model::delivery::{Delivery, DeliveryId};
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
    let (ends, ended) = mpsc::unbounded_channel();
    let store = Arc::clone(&shared.store);
    let finish = move |lease: DeliveryLease, end: DeliveryEnd| {
        let store = Arc::clone(&store);
        async move {
            let recorded = store.finish_delivery(&lease, end).await;
            (lease.delivery.id, recorded)
        }
    };
    let recorder = tokio::spawn(record_ends(finish, ended));
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
                        running.spawn(deliver(Arc::clone(&shared), lease, ends.clone()));
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
    // claimed again on the next start), and their ends are recorded.
    while running.join_next().await.is_some() {}
    drop(ends);
    if let Err(error) = recorder.await {
        tracing::error!(%error, "recording the ends of result deliveries failed");
    }
}

/// Ends of deliveries issued at once at most.
const MOST_ENDS: usize = 256;

/// A delivery's end, waiting to be recorded under its lease.
struct Ended {
    lease: DeliveryLease,
    end: DeliveryEnd,
}

/// Record the ends of deliveries as handlers finish them, together: each
/// handler finishes on its own, and each end recorded as it came was
/// mostly a transaction of its own (on SQLite a commit each). The ends that finished
/// at the same moment are gathered ([`super::completer::gather_burst`])
/// and issued at once, each its own write, so that the store writes them
/// in one transaction (SQLite's writer groups what is queued together);
/// while they are written, the next ones gather. `finish` records one
/// ([`crate::store::OutboxStore::finish_delivery`]). Returns once every
/// sender is gone and what they sent is recorded.
async fn record_ends<F, Fut>(finish: F, mut ended: mpsc::UnboundedReceiver<Ended>)
where
    F: Fn(DeliveryLease, DeliveryEnd) -> Fut,
    Fut: std::future::Future<Output = (DeliveryId, crate::Result<()>)> + Send + 'static,
{
    let mut gathered = Vec::with_capacity(MOST_ENDS);
    while ended.recv_many(&mut gathered, MOST_ENDS).await > 0 {
        super::completer::gather_burst(&mut ended, &mut gathered).await;
        let mut writing = JoinSet::new();
        for Ended { lease, end } in gathered.drain(..) {
            writing.spawn(finish(lease, end));
        }
        while let Some(done) = writing.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((delivery, Err(e))) if e.is_stale_lease() => tracing::warn!(
                    %delivery,
                    "the delivery's lease ended before its end was recorded; it runs again"
                ),
                Ok((delivery, Err(error))) => tracing::warn!(
                    %delivery,
                    %error,
                    "could not record the delivery's end; it runs again when its lease ends"
                ),
                Err(error) => tracing::error!(%error, "recording a delivery's end failed"),
            }
        }
    }
}

/// Hand one claimed delivery to its handler and pass how it ended to
/// `ends` to be recorded ([`record_ends`]).
async fn deliver(shared: Arc<Shared>, lease: DeliveryLease, ends: mpsc::UnboundedSender<Ended>) {
    let delivery = &lease.delivery;
    let span = tracing::info_span!(
        "result delivery",
        partner = %delivery.partner,
        submission = %delivery.submission_id,
        attempt = delivery.attempts,
    );
    let end = async {
        let rt = shared.partners.get(&delivery.partner).cloned()?;
        let results = rt.config.results.clone()?;
        let outcome = match finished(&shared, delivery).await {
            Ok(finished) => match results {
                Results::Handler(handler) => {
                    call(handler, finished, rt.config.attempt_timeout).await
                }
                #[cfg(feature = "sqlite")]
                Results::Sqlite(store, handler) => {
                    let run = store.deliver_in_transaction(&lease, finished, handler).await;
                    match acknowledged(run) {
                        None => return None,
                        Some(error) => Err(error),
                    }
                }
                #[cfg(feature = "postgres")]
                Results::Postgres(store, handler) => {
                    let timeout = rt.config.attempt_timeout;
                    let run = store.deliver_in_transaction(&lease, &finished, handler);
                    match tokio::time::timeout(timeout, run).await {
                        Ok(run) => match acknowledged(run) {
                            None => return None,
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
        Some(end)
    }
    .instrument(span)
    .await;
    if let Some(end) = end {
        // Only gone once `run_results` has returned, which waits for this.
        let _ = ends.send(Ended { lease, end });
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::model::delivery::DeliveryState;
    use crate::model::submission::SubmissionId;
    use crate::store::LeaseToken;

    fn ended() -> Ended {
        let delivery = Delivery {
            id: DeliveryId::new(),
            submission_id: SubmissionId::new(),
            partner: "lab".into(),
            final_state: SubmissionState::Succeeded,
            state: DeliveryState::Pending,
            attempts: 1,
            due_at: Utc::now(),
            created_at: Utc::now(),
            delivered_at: None,
            last_error: None,
        };
        Ended {
            lease: DeliveryLease {
                delivery,
                token: LeaseToken::fresh(),
                expires_at: Utc::now(),
            },
            end: DeliveryEnd::Delivered,
        }
    }

    /// What a recorder did: the ends it recorded, and the most it had
    /// under way at once.
    #[derive(Default)]
    struct Seen {
        recorded: Mutex<Vec<DeliveryId>>,
        under_way: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    type Finishing = std::pin::Pin<
        Box<dyn std::future::Future<Output = (DeliveryId, crate::Result<()>)> + Send>,
    >;

    /// A `finish` that notes what it records; each takes a few scheduler
    /// passes, as a write waiting for its commit does.
    fn noting(seen: Arc<Seen>) -> impl Fn(DeliveryLease, DeliveryEnd) -> Finishing {
        move |lease, _end| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                let now = seen.under_way.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most_at_once.fetch_max(now, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                seen.under_way.fetch_sub(1, Ordering::SeqCst);
                seen.recorded.lock().unwrap().push(lease.delivery.id);
                (lease.delivery.id, Ok(()))
            })
        }
    }

    /// Ends that finished together are issued together (so that SQLite's
    /// writer takes them into one transaction), not one after the other.
    #[tokio::test]
    async fn ends_that_finish_together_are_recorded_together() {
        let seen = Arc::new(Seen::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let ends: Vec<Ended> = (0..8).map(|_| ended()).collect();
        let mut ids: Vec<DeliveryId> = ends.iter().map(|e| e.lease.delivery.id).collect();
        for end in ends {
            tx.send(end).unwrap();
        }
        drop(tx);
        record_ends(noting(Arc::clone(&seen)), rx).await;
        assert_eq!(seen.most_at_once.load(Ordering::SeqCst), 8);
        let mut recorded = seen.recorded.lock().unwrap().clone();
        recorded.sort();
        ids.sort();
        assert_eq!(recorded, ids, "each end recorded once");
    }

    /// More ends than one round takes, some sent while a round is being
    /// written: each is recorded once, and the recorder returns once its
    /// senders are gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_end_is_recorded_once_and_the_recorder_ends_with_its_senders() {
        let seen = Arc::new(Seen::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_ends(noting(Arc::clone(&seen)), rx));
        let mut ids = Vec::new();
        for round in 0..4 {
            for _ in 0..(MOST_ENDS / 2 + round) {
                let end = ended();
                ids.push(end.lease.delivery.id);
                tx.send(end).unwrap();
            }
            tokio::task::yield_now().await;
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(30), recorder)
            .await
            .expect("the recorder ends once its senders are gone")
            .unwrap();
        let mut recorded = seen.recorded.lock().unwrap().clone();
        recorded.sort();
        ids.sort();
        assert_eq!(recorded, ids);
        assert!(seen.most_at_once.load(Ordering::SeqCst) <= MOST_ENDS);
    }
}
