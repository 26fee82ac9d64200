//! Records what attempts finish, a batch at a time (River's completer is
//! the model): each attempt hands its result over and waits for its answer;
//! one task takes whatever has gathered meanwhile and records it with
//! [`OutboxStore::complete_batch`], one transaction for the lot. While a
//! batch is being written the next one gathers, so under load batches grow
//! by themselves and an idle engine writes each result at once. Up to
//! [`OutboxStore::concurrent_completions`] batches are written at once
//! (one on SQLite, whose writes are one at a time anyway).
//!
//! Each attempt hands over, with its result, what to do once the store has
//! taken it ([`HandOver`]): the dispatcher gives the attempt's concurrency
//! slot back then, not once the result is committed. On SQLite that is as
//! soon as the batch is in the writer's queue, so the claim those slots
//! make runs after the results and, taken in while their transaction is
//! under way, commits with them: one commit per cycle of claim and results
//! where there were two.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};
use crate::model::submission::Submission;
use crate::store::{AttemptReport, FinishedAttempt, HandOver, Lease, OutboxStore, StateChange};

/// Results recorded in one transaction at most.
const MAX_BATCH: usize = 256;

/// Results that open a second lane beside a batch being written.
const SPLIT_AT: usize = 16;

/// One result waiting to be recorded, and where its answer goes.
struct Pending {
    finished: FinishedAttempt,
    reply: oneshot::Sender<Result<Submission>>,
    /// Run once the store has taken the result (or failed to).
    hand_over: HandOver,
}

/// The attempts' side: hand a result over, wait for its answer. Clones
/// share one task; it ends once every clone is gone.
#[derive(Debug, Clone)]
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("submission", &self.finished.lease.submission.id)
            .finish_non_exhaustive()
    }
}

impl Completer {
    /// Start the task that records results in `store`.
    pub(crate) fn start(store: Arc<dyn OutboxStore>) -> (Completer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Completer { tx }, tokio::spawn(run(store, rx)))
    }

    /// Record an attempt's result: what [`OutboxStore::complete`] answers.
    /// `hand_over` runs once the store has taken it (see the module
    /// documentation), at the latest when it is answered.
    pub(crate) async fn complete(
        &self,
        lease: &Lease,
        report: AttemptReport,
        change: StateChange,
        hand_over: HandOver,
    ) -> Result<Submission> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            finished: FinishedAttempt::new(lease.clone(), report, change),
            reply,
            hand_over,
        };
        self.tx.send(pending).map_err(|_| Error::Closed)?;
        // The task answers every result it takes (it is never cancelled
        // while a clone of this sender lives).
        answer.await.unwrap_or(Err(Error::Closed))
    }
}

async fn run(store: Arc<dyn OutboxStore>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let lanes = store.concurrent_completions().max(1);
    let mut writing = JoinSet::new();
    let mut gathered: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut open = true;
    loop {
        if !gathered.is_empty() && writes_now(gathered.len(), writing.len(), lanes, open) {
            if writing.is_empty() && open {
                gather_burst(&mut rx, &mut gathered).await;
            }
            // Never more than MAX_BATCH: each receive takes what fits.
            let batch = std::mem::replace(&mut gathered, Vec::with_capacity(MAX_BATCH));
            let store = Arc::clone(&store);
            writing.spawn(async move { record(store.as_ref(), batch).await });
            continue;
        }
        if !open && gathered.is_empty() {
            break;
        }
        let room = MAX_BATCH.saturating_sub(gathered.len());
        tokio::select! {
            received = rx.recv_many(&mut gathered, room), if open && room > 0 => {
                if received == 0 {
                    open = false;
                }
            }
            // A batch that ends frees a lane; look again.
            Some(done) = writing.join_next() => reap(Some(done)),
        }
    }
    while let Some(done) = writing.join_next().await {
        reap(Some(done));
    }
}

/// Whether `gathered` results are written now, with `writing` batches
/// being written and `lanes` allowed: at once when nothing is being
/// written (an idle engine's result is not held back); beside another
/// batch only once a batch's worth has gathered, so that under load
/// results are written in batches that grow, not one transaction each;
/// and whatever is left once no more can come.
fn writes_now(gathered: usize, writing: usize, lanes: usize, open: bool) -> bool {
    writing < lanes && (writing == 0 || gathered >= SPLIT_AT || !open)
}

/// Scheduler passes a lone batch waits at most for results that finished
/// with its first one.
const GATHER_PASSES: usize = 4;

/// Before a batch goes out with nothing else being written, let the
/// attempts that finished at the same moment as its results hand theirs
/// over: yield to the scheduler, take what arrived, and again while each
/// pass brings more (at most [`GATHER_PASSES`]). Without it, of a burst of
/// attempts finishing together the first is written alone (its own
/// transaction, and on SQLite its own commit) and the rest wait for it; an
/// idle engine's result waits one pass of the scheduler. (The ends of
/// result deliveries are gathered the same way: `results::record_ends`.)
pub(super) async fn gather_burst<T>(rx: &mut mpsc::UnboundedReceiver<T>, gathered: &mut Vec<T>) {
    for _ in 0..GATHER_PASSES {
        if gathered.len() >= MAX_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let before = gathered.len();
        while gathered.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => gathered.push(pending),
                // Empty, or closed (the main loop sees that next).
                Err(_) => break,
            }
        }
        if gathered.len() == before {
            return;
        }
    }
}

/// A batch's task ended. Should it have panicked, its attempts were
/// answered [`Error::Closed`] (their replies dropped) and their leases
/// expire; the other batches go on.
fn reap(done: Option<std::result::Result<(), tokio::task::JoinError>>) {
    if let Some(Err(error)) = done
        && error.is_panic()
    {
        tracing::error!(
            "recording a batch of results panicked; its leases will expire and the work be retried"
        );
    }
}

/// Record a batch and answer each, running the results' hand-overs once
/// the store has taken the batch. Should a batch of several fail as a whole
/// (a storage error), each is recorded on its own, so one result's trouble
/// is its own.
async fn record(store: &dyn OutboxStore, mut batch: Vec<Pending>) {
    // Reliability tests: a batch's task panics before it writes anything.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("liaison::completer::record");
    let hand_overs: Vec<HandOver> = batch
        .iter_mut()
        .map(|p| std::mem::replace(&mut p.hand_over, HandOver::nothing()))
        .collect();
    let hand_over = HandOver::new(move || drop(hand_overs));
    let finished = batch.iter().map(|p| p.finished.clone()).collect();
    match store.complete_batch_handing_over(finished, hand_over).await {
        Ok(answers) if answers.len() == batch.len() => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                // The attempt may have been cut off meanwhile: nobody waits.
                let _ = pending.reply.send(answer);
            }
        }
        // One result: its own trouble already.
        Err(error) if batch.len() == 1 => {
            if let Some(pending) = batch.pop() {
                let _ = pending.reply.send(Err(error));
            }
        }
        Ok(_) => record_each(store, batch).await,
        Err(error) => {
            tracing::warn!(%error, size = batch.len(), "recording a batch of results failed; recording them one by one");
            record_each(store, batch).await;
        }
    }
}

async fn record_each(store: &dyn OutboxStore, batch: Vec<Pending>) {
    for pending in batch {
        let FinishedAttempt {
            lease,
            report,
            change,
        } = pending.finished;
        let answer = store.complete(&lease, report, change).await;
        let _ = pending.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::{GATHER_PASSES, MAX_BATCH, SPLIT_AT, gather_burst, writes_now};

    #[tokio::test]
    async fn a_lone_result_takes_along_those_that_finished_with_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(0).unwrap();
        let mut gathered = Vec::new();
        rx.recv_many(&mut gathered, MAX_BATCH).await;
        // Attempts that finished at the same moment, not yet run: each
        // hands its result over when it runs. One of them finishes only
        // after another (a second pass).
        for i in 1..=3 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tx.send(i).unwrap();
                if i == 3 {
                    tokio::spawn(async move { tx.send(4).unwrap() });
                }
            });
        }
        gather_burst(&mut rx, &mut gathered).await;
        assert_eq!(gathered, [0, 1, 2, 3, 4]);
        // An idle engine's lone result goes after one pass, alone.
        tx.send(5).unwrap();
        let mut lone = Vec::new();
        rx.recv_many(&mut lone, MAX_BATCH).await;
        gather_burst(&mut rx, &mut lone).await;
        assert_eq!(lone, [5]);
    }

    #[tokio::test]
    async fn a_steady_stream_of_results_holds_a_batch_back_for_a_few_passes_only() {
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        // A task that hands a result over on every pass, forever.
        let stream = tokio::spawn(async move {
            for i in 0.. {
                if tx.send(i).is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        });
        let mut gathered = Vec::new();
        gather_burst(&mut rx, &mut gathered).await;
        assert!(!gathered.is_empty());
        assert!(
            gathered.len() <= GATHER_PASSES,
            "{} results after {GATHER_PASSES} passes",
            gathered.len()
        );
        // Never more than a batch, whatever has arrived.
        let mut full: Vec<usize> = (0..MAX_BATCH).collect();
        gather_burst(&mut rx, &mut full).await;
        assert_eq!(full.len(), MAX_BATCH);
        stream.abort();
    }

    #[test]
    fn an_idle_engine_writes_at_once_and_a_busy_one_gathers_a_batch_first() {
        // Nothing being written: even one result goes at once.
        assert!(writes_now(1, 0, 4, true));
        // A batch being written: a few results wait for it or for more.
        assert!(!writes_now(1, 1, 4, true));
        assert!(!writes_now(SPLIT_AT - 1, 3, 4, true));
        // A batch's worth opens another lane, while lanes are free.
        assert!(writes_now(SPLIT_AT, 1, 4, true));
        assert!(!writes_now(SPLIT_AT, 4, 4, true));
        // One lane (SQLite): one batch at a time, however many gathered.
        assert!(!writes_now(200, 1, 1, true));
        assert!(writes_now(200, 0, 1, true));
        // Nothing more can come: what is left goes as lanes free up.
        assert!(writes_now(1, 1, 4, false));
        assert!(!writes_now(1, 4, 4, false));
    }

    /// A store at `path` with one submission of partner `bank` per key of
    /// `keys`, each claimed: its lease, in the order of `keys`.
    async fn leased(
        path: &std::path::Path,
        keys: &[&str],
    ) -> (crate::store::SqliteStore, Vec<crate::store::Lease>) {
        use std::time::Duration;

        use crate::model::submission::NewSubmission;
        use crate::store::{ClaimRequest, OutboxStore, SqliteStore};

        let store = SqliteStore::open(path).unwrap();
        for key in keys {
            let new = NewSubmission::new("bank", "claim.submit", serde_json::json!({ "k": key }))
                .idempotency_key(*key);
            store.enqueue(new).await.unwrap();
        }
        let leases = store
            .claim(ClaimRequest::new("bank", keys.len(), Duration::from_secs(30)).at(store.now()))
            .await
            .unwrap();
        assert_eq!(leases.len(), keys.len());
        (store, leases)
    }

    /// [`leased`], in a store whose writes of attempts fail for the
    /// submissions in `failing` (a trigger added through a second
    /// connection to its file, as a disk or a constraint would fail them).
    async fn refusing_store(
        dir: &std::path::Path,
        keys: &[&str],
        failing: &[usize],
    ) -> (crate::store::SqliteStore, Vec<crate::store::Lease>) {
        let path = dir.join("refusing.db");
        let (store, leases) = leased(&path, keys).await;
        let ids: Vec<String> = failing
            .iter()
            .map(|&i| format!("'{}'", leases[i].submission.id))
            .collect();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TRIGGER refuse_finish BEFORE UPDATE ON liaison_attempts \
             WHEN NEW.submission_id IN ({}) \
             BEGIN SELECT RAISE(ABORT, 'the disk refused the write'); END;",
            ids.join(", ")
        ))
        .unwrap();
        (store, leases)
    }

    /// What the store holds of a submission: its state and whether its
    /// latest attempt is finished.
    async fn held(
        store: &crate::store::SqliteStore,
        lease: &crate::store::Lease,
    ) -> (crate::model::submission::SubmissionState, bool) {
        use crate::store::OutboxStore;
        let id = lease.submission.id;
        let submission = store.get(id).await.unwrap();
        let attempts = store.attempts(id).await.unwrap();
        let finished = attempts.last().unwrap().finished_at.is_some();
        (submission.state, finished)
    }

    /// A result the completer hands over, with a flag set by its hand-over.
    fn handing(
        completer: &super::Completer,
        lease: &crate::store::Lease,
    ) -> (
        tokio::task::JoinHandle<crate::error::Result<crate::model::submission::Submission>>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use crate::AttemptOutcome;
        use crate::model::submission::SubmissionState;
        use crate::store::{AttemptReport, HandOver, StateChange};

        let handed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&handed);
        let completer = completer.clone();
        let lease = lease.clone();
        let answer = tokio::spawn(async move {
            completer
                .complete(
                    &lease,
                    AttemptReport::new(AttemptOutcome::Succeeded),
                    StateChange::to(SubmissionState::Succeeded),
                    HandOver::new(move || flag.store(true, Ordering::SeqCst)),
                )
                .await
        });
        (answer, handed)
    }

    /// A lone result the store cannot take is answered the store's error,
    /// its hand-over still runs (the attempt's slot comes back), and
    /// nothing of it is written: the lease stays for its holder or the
    /// reaper.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_result_the_store_refuses_is_answered_its_error_and_handed_over() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        use crate::model::submission::SubmissionState;

        let dir = tempfile::tempdir().unwrap();
        let (store, leases) = refusing_store(dir.path(), &["k1"], &[0]).await;
        let (completer, task) = super::Completer::start(Arc::new(store.clone()));

        let (answer, handed) = handing(&completer, &leases[0]);
        let error = answer.await.unwrap().expect_err("the store refused it");
        assert!(error.is_storage(), "{error:?}");
        let cause = std::error::Error::source(&error).map(|e| e.to_string());
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("the disk refused the write")),
            "{error}: {cause:?}"
        );
        assert!(handed.load(Ordering::SeqCst), "its slot came back");
        assert_eq!(
            held(&store, &leases[0]).await,
            (SubmissionState::InFlight, false),
            "nothing of the refused result was written"
        );
        drop(completer);
        task.await.unwrap();
    }

    /// A batch the store refuses as a whole is recorded one result at a
    /// time: the result the store cannot take is answered its error, the
    /// others are recorded, and every hand-over runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_the_store_refuses_is_recorded_one_by_one() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        use crate::model::submission::SubmissionState;
        use crate::store::SqliteStore;

        let dir = tempfile::tempdir().unwrap();
        let (store, leases) = refusing_store(dir.path(), &["k1", "k2", "k3"], &[1]).await;
        let (completer, task) = super::Completer::start(Arc::new(store.clone()));

        // The three go out in one batch: they gather while the writer is
        // held by something else.
        let (release, busy) = SqliteStore::hold_writer(&store).await;
        let handing: Vec<_> = leases.iter().map(|l| handing(&completer, l)).collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();

        let mut answers = Vec::new();
        for (answer, handed) in handing {
            answers.push(answer.await.unwrap());
            assert!(handed.load(Ordering::SeqCst), "every slot came back");
        }
        assert_eq!(
            answers[0].as_ref().unwrap().state,
            SubmissionState::Succeeded
        );
        let error = answers[1].as_ref().expect_err("the store refused it");
        assert!(error.is_storage(), "{error:?}");
        assert_eq!(
            answers[2].as_ref().unwrap().state,
            SubmissionState::Succeeded
        );
        assert_eq!(
            held(&store, &leases[0]).await,
            (SubmissionState::Succeeded, true)
        );
        assert_eq!(
            held(&store, &leases[1]).await,
            (SubmissionState::InFlight, false),
            "nothing of the refused result was written"
        );
        assert_eq!(
            held(&store, &leases[2]).await,
            (SubmissionState::Succeeded, true)
        );
        drop(completer);
        task.await.unwrap();
    }

    /// An attempt's hand-over runs once the store has taken its result, not
    /// once the result is answered: on SQLite while the writer is still
    /// busy with something else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_is_handed_over_once_the_store_has_taken_it() {
        use std::sync::Arc;
        use std::time::Duration;

        use super::Completer;
        use crate::AttemptOutcome;
        use crate::model::submission::SubmissionState;
        use crate::store::{AttemptReport, HandOver, StateChange};

        let dir = tempfile::tempdir().unwrap();
        let (store, mut leases) = leased(&dir.path().join("handed.db"), &["k1"]).await;
        let lease = leases.remove(0);
        let (completer, task) = Completer::start(Arc::new(store.clone()));

        let (release, busy) = store.hold_writer().await;
        let (handed_tx, handed) = tokio::sync::oneshot::channel();
        let answer = {
            let completer = completer.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                completer
                    .complete(
                        &lease,
                        AttemptReport::new(AttemptOutcome::Succeeded),
                        StateChange::to(SubmissionState::Succeeded),
                        HandOver::new(move || {
                            let _ = handed_tx.send(());
                        }),
                    )
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(30), handed)
            .await
            .expect("handed over while the writer is busy")
            .unwrap();
        assert!(!answer.is_finished(), "not answered yet");
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let after = answer.await.unwrap().unwrap();
        assert_eq!(after.state, SubmissionState::Succeeded);
        drop(completer);
        task.await.unwrap();
    }
}
