//! The single writer: one thread owns the write connection and groups the
//! operations waiting for it into one `BEGIN IMMEDIATE` transaction.
//!
//! A group runs optimistically: its operations one after the other, with no
//! savepoint between them, then one `COMMIT`. Should one of them fail (an
//! error or a panic), the whole transaction is rolled back and the group is
//! run again, this time each operation inside its own savepoint, so the
//! failure undoes only its own changes and the others commit. Operations are
//! therefore `Fn`: they may run twice, and only the run that commits counts.
//! (Savepoints are not free: SQLite copies every page an operation touches
//! into the savepoint's journal first, which cost about a tenth of the
//! writer's time when every operation had one.)
//!
//! Callers are answered after the commit, so a returned `Ok` is durable (at
//! the configured `synchronous` level).
//!
//! Operations run in the order they were queued, so one queued after
//! another sees its changes, committed or not yet. An operation queued with
//! [`Writer::write_joining`] (a claim) may also join the group under way:
//! once the group's operations have run, the joining ones queued meanwhile
//! run in its transaction, up to the first that does not join (once: a
//! group is not held open for a stream). The engine's next claim so shares
//! the commit of the results that freed its slots ([`Writer::write_then`]):
//! one commit where there were two. Other operations wait for the next
//! group: letting every operation join cost 32 concurrent callback ingests
//! about 5% (measured, docs/performance.md), for no gain.
//!
//! With its queue empty, the writer may look again for a moment before it
//! parks its thread, while doing so keeps finding work ([`Linger`]).
//!
//! A small operation may instead run on its caller's thread
//! ([`Writer::write_small`]), when the writer is idle and the store allows
//! it ([`CallerWrites`]): a caller writing one submission after the other
//! then does not wait for two threads to wake on every write. The
//! connection sits behind a mutex that whoever writes holds; once the
//! writer's thread has work, no caller starts one of its own, so it waits
//! only for those already under way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::db::{db_err, is_busy};
use crate::error::{Error, Result};

/// Largest number of operations grouped into one transaction.
const MAX_GROUP: usize = 256;

/// Why a group's transaction failed, shared by every caller in the group.
#[derive(Clone)]
struct GroupFailure {
    operation: &'static str,
    cause: Arc<rusqlite::Error>,
}

impl GroupFailure {
    fn new(operation: &'static str, cause: rusqlite::Error) -> Self {
        GroupFailure {
            operation,
            cause: Arc::new(cause),
        }
    }

    fn to_error(&self) -> Error {
        Error::shared_storage(self.operation, self.cause.clone(), is_busy(&self.cause))
    }
}

/// One queued write operation.
trait Job: Send {
    /// Run inside the open transaction and keep the result (replacing that
    /// of an earlier, rolled-back run); `true` when it failed. With
    /// `savepoint`, a failure rolls back this operation's changes only.
    fn run(&mut self, conn: &Connection, savepoint: bool) -> bool;
    /// Answer the caller once the group's fate is known: `None` when its
    /// transaction committed (or, for a failed operation, was rolled back).
    fn answer(self: Box<Self>, failure: Option<&GroupFailure>);
    /// Whether it may join a group under way.
    fn joins(&self) -> bool;
}

struct Op<T, F> {
    joins: bool,
    op: F,
    result: Option<Result<T>>,
    /// The answer, and the operation itself: what it captured (a batch's
    /// payloads, say) is freed by the caller, off the writer's thread.
    reply: oneshot::Sender<(Result<T>, F)>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, savepoint: bool) -> bool {
        let op = &self.op;
        let result = if savepoint {
            in_savepoint(conn, |conn| guarded(op, conn))
        } else {
            guarded(op, conn)
        };
        let failed = result.is_err();
        self.result = Some(result);
        failed
    }

    fn joins(&self) -> bool {
        self.joins
    }

    fn answer(self: Box<Self>, failure: Option<&GroupFailure>) {
        let Op {
            op, result, reply, ..
        } = *self;
        // The caller may have gone away; what committed stays committed.
        let _ = reply.send((settled(result, failure), op));
    }
}

/// Run `op`. A panic in one operation must not take the writer thread (and
/// with it the store) down: it becomes that caller's error, and its changes
/// are rolled back like any failed operation's.
fn guarded<T>(op: &impl Fn(&Connection) -> Result<T>, conn: &Connection) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(conn)))
        .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
}

/// An operation's answer, once its group's fate is known: its own error,
/// else the group's, else its value.
fn settled<T>(result: Option<Result<T>>, failure: Option<&GroupFailure>) -> Result<T> {
    match (result, failure) {
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(_)) | None, Some(failure)) => Err(failure.to_error()),
        (Some(Ok(v)), None) => Ok(v),
        // Not reachable: a group is answered without failure only after
        // each of its operations ran.
        (None, None) => Err(Error::Storage {
            operation: "write",
            source: "the operation did not run".into(),
        }),
    }
}

/// The error for an operation that panicked (a bug in liaison).
fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = crate::error::panic_message(panic);
    tracing::error!(%message, "a write operation panicked; it was rolled back");
    Error::Storage {
        operation: "write",
        source: format!("the operation panicked: {message}").into(),
    }
}

/// When a small operation may run on its caller's thread
/// ([`Writer::write_small`]), shared by the writer, its callers and the
/// write-ahead log's hook ([`super::checkpoint`]).
///
/// A commit on a caller's thread must stay short: it never waits for
/// another process's write lock (that wait is the writer thread's), and it
/// never checkpoints. Should the log reach the checkpoint backstop during
/// one, the hook leaves the checkpoint owed, and small operations go
/// through the writer's thread until one of its commits has seen to it.
#[derive(Debug)]
pub(crate) struct CallerWrites {
    /// The connection's busy timeout, restored after a caller's `BEGIN`
    /// (which runs with none).
    busy_timeout: Duration,
    /// Set while a caller's thread runs an operation.
    running: AtomicBool,
    /// Set when the log reached the backstop during such an operation.
    owed: AtomicBool,
    /// Set while the writer's thread has an operation to run.
    writer_busy: AtomicBool,
}

impl CallerWrites {
    pub(crate) fn new(busy_timeout: Duration) -> Self {
        CallerWrites {
            busy_timeout,
            running: AtomicBool::new(false),
            owed: AtomicBool::new(false),
            writer_busy: AtomicBool::new(false),
        }
    }

    /// For the log's hook, at the backstop: whether this commit is a
    /// caller's (then the checkpoint is left owed, to the writer's thread).
    pub(crate) fn defer_checkpoint(&self) -> bool {
        if self.running.load(Ordering::Acquire) {
            self.owed.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// For the log's hook: a commit on the writer's thread saw the log
    /// below the backstop, or checkpointed.
    pub(crate) fn checkpoint_made(&self) {
        if !self.running.load(Ordering::Acquire) {
            self.owed.store(false, Ordering::Release);
        }
    }
}

/// The writer thread's name. Linux keeps 15 bytes of a thread's name (what
/// `top -H`, `perf` and a debugger's list of threads show), so it fits
/// there whole and differs from the checkpointer's
/// ([`super::checkpoint::CHECKPOINT_THREAD`]) within them.
pub(crate) const WRITER_THREAD: &str = "liaison-writer";

#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    /// The write connection; `None` once the writer's thread has closed it.
    conn: Arc<Mutex<Option<Connection>>>,
    /// Set when small operations may run on their caller's thread.
    callers: Option<Arc<CallerWrites>>,
}

impl Writer {
    /// A writer whose operations all run on its own thread.
    pub(crate) fn spawn(conn: Connection) -> Result<Self> {
        Self::start(conn, None)
    }

    /// A writer that lets small operations run on their caller's thread
    /// while it is idle, as `callers` allows.
    pub(crate) fn spawn_sharing(conn: Connection, callers: Arc<CallerWrites>) -> Result<Self> {
        Self::start(conn, Some(callers))
    }

    fn start(conn: Connection, callers: Option<Arc<CallerWrites>>) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>(4 * MAX_GROUP);
        let conn = Arc::new(Mutex::new(Some(conn)));
        let shared = Arc::clone(&conn);
        let busy = callers.clone();
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || run(&shared, receiver, busy.as_deref()))
            .map_err(|e| Error::Storage {
                operation: "start writer thread",
                source: Box::new(e),
            })?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
            conn,
            callers,
        })
    }

    /// Whether small operations may run on their caller's thread.
    #[cfg(test)]
    pub(crate) fn shares_with_callers(&self) -> bool {
        self.callers.is_some()
    }

    /// Like [`Writer::write`], for an operation of a few statements (one
    /// submission's enqueue): while the writer is idle, it runs here, on
    /// the caller's thread, in a transaction of its own, if the write lock
    /// is free at once; otherwise (another process writes, the writer is
    /// at work, a checkpoint is owed) it waits its turn in the queue.
    pub(crate) async fn write_small<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        let op = match self.try_here(op) {
            Ok(answer) => return answer,
            Err(op) => op,
        };
        self.write(op).await
    }

    /// Run `op` on this thread if the writer is idle and the write lock is
    /// free at once; `Err(op)` otherwise.
    fn try_here<T, F>(&self, op: F) -> std::result::Result<Result<T>, F>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        let (Some(callers), Some(sender)) = (self.callers.as_deref(), self.sender.as_ref()) else {
            return Err(op);
        };
        if sender.capacity() < sender.max_capacity()
            || callers.writer_busy.load(Ordering::Acquire)
            || callers.owed.load(Ordering::Acquire)
        {
            return Err(op);
        }
        let Ok(guard) = self.conn.try_lock() else {
            return Err(op);
        };
        let Some(conn) = guard.as_ref() else {
            return Err(op);
        };
        // No waiting for another process's lock on this thread.
        if conn.busy_timeout(Duration::ZERO).is_err() {
            return Err(op);
        }
        let begun = control(conn, "BEGIN IMMEDIATE");
        if let Err(cause) = conn.busy_timeout(callers.busy_timeout) {
            if begun.is_ok() {
                rollback(conn);
            }
            return Ok(Err(db_err("set busy timeout")(cause)));
        }
        match begun {
            Err(cause) if is_busy(&cause) => return Err(op),
            Err(cause) => {
                return Ok(Err(
                    GroupFailure::new("begin write transaction", cause).to_error()
                ));
            }
            Ok(()) => {}
        }
        callers.running.store(true, Ordering::Release);
        let result = guarded(&op, conn);
        let failure = if result.is_err() {
            rollback(conn);
            None
        } else {
            commit(conn)
        };
        callers.running.store(false, Ordering::Release);
        drop(guard);
        Ok(settled(Some(result), failure.as_ref()))
    }

    /// Run `op` in the writer's next transaction and return its result once
    /// that transaction has committed.
    ///
    /// `op` may run more than once (see the module documentation); only
    /// the run whose transaction commits counts.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.write_then(op, || {}).await
    }

    /// [`Writer::write`] for an operation that may join a group under way,
    /// after the group's own operations (see the module documentation).
    pub(crate) async fn write_joining<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.send(op, || {}, true).await
    }

    /// [`Writer::write`], running `queued` as soon as `op` is in the
    /// writer's queue (or could not be queued): from then on every
    /// operation queued runs after it, in its transaction or a later one.
    pub(crate) async fn write_then<T, F>(&self, op: F, queued: impl FnOnce()) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        self.send(op, queued, false).await
    }

    async fn send<T, F>(&self, op: F, queued: impl FnOnce(), joins: bool) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op {
            joins,
            op,
            result: None,
            reply,
        });
        let Some(sender) = self.sender.as_ref() else {
            queued();
            return Err(Error::Closed);
        };
        let sent = sender.send(job).await;
        queued();
        sent.map_err(|_| Error::Closed)?;
        let (answer, op) = rx.await.map_err(|_| Error::Closed)?;
        drop(op);
        answer
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and exit.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Run one statement through the statement cache (transaction control
/// statements run for every group and operation, so parsing them each time
/// is measurable).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn in_savepoint<T>(conn: &Connection, op: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    control(conn, "SAVEPOINT liaison_op").map_err(db_err("savepoint"))?;
    match op(conn) {
        Ok(v) => {
            control(conn, "RELEASE liaison_op").map_err(db_err("release savepoint"))?;
            Ok(v)
        }
        Err(e) => {
            // Undo this operation only; the rest of the group stays.
            let undone = control(conn, "ROLLBACK TO liaison_op")
                .and_then(|()| control(conn, "RELEASE liaison_op"));
            if let Err(rollback) = undone {
                tracing::error!(error = %rollback, "rolling back a failed operation failed");
            }
            Err(e)
        }
    }
}

/// How long the writer, finding its queue empty after a group, goes on
/// looking before it parks its thread (see [`Linger`]).
const LINGER: Duration = Duration::from_micros(100);

/// Most idle turns the writer parks at once after lingering in vain.
const MAX_SKIP: u32 = 64;

/// Whether the writer lingers before it parks.
///
/// A parked thread takes tens of microseconds to wake on a virtual
/// machine, and a caller writing one operation after the other (an
/// enqueue per request) pays that on every write: measured, nearly a
/// third of each one-per-call enqueue under `synchronous=NORMAL`. When
/// the next operation comes within [`LINGER`], lingering saves it. When it does
/// not (the next burst is still being prepared elsewhere), lingering takes
/// a CPU that the rest of the host could have used, which slowed the
/// busy scenarios down by about a tenth. So the writer lingers only while
/// it pays: after a linger in vain it parks at once for the next 1, 2,
/// 4 ... [`MAX_SKIP`] idle turns, and a linger that finds work starts over.
#[derive(Debug, Default)]
struct Linger {
    /// Idle turns to park at once, since the last linger in vain.
    skip: u32,
    /// Of those, how many have passed.
    skipped: u32,
}

impl Linger {
    /// Whether to linger at this idle turn.
    fn now(&mut self) -> bool {
        if self.skipped < self.skip {
            self.skipped += 1;
            return false;
        }
        true
    }

    /// Work came while lingering.
    fn found(&mut self) {
        self.skip = 0;
        self.skipped = 0;
    }

    /// Nothing came while lingering.
    fn missed(&mut self) {
        self.skip = (self.skip * 2).clamp(1, MAX_SKIP);
        self.skipped = 0;
    }
}

/// The next operation, or `None` once every sender is gone: at once if one
/// is queued; else, when [`Linger`] says so, looking again for up to
/// [`LINGER`] (a few spins, then yielding the CPU); else parked.
fn next_job(
    receiver: &mut mpsc::Receiver<Box<dyn Job>>,
    linger: &mut Linger,
) -> Option<Box<dyn Job>> {
    match receiver.try_recv() {
        Ok(job) => return Some(job),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    if linger.now() {
        let started = Instant::now();
        let mut round = 0u32;
        while started.elapsed() < LINGER {
            if round < 6 {
                for _ in 0..(1u32 << round) {
                    std::hint::spin_loop();
                }
                round += 1;
            } else {
                std::thread::yield_now();
            }
            match receiver.try_recv() {
                Ok(job) => {
                    linger.found();
                    return Some(job);
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
        }
        linger.missed();
    }
    receiver.blocking_recv()
}

fn run(
    conn: &Mutex<Option<Connection>>,
    mut receiver: mpsc::Receiver<Box<dyn Job>>,
    callers: Option<&CallerWrites>,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    let mut linger = Linger::default();
    let busy = |now: bool| {
        if let Some(callers) = callers {
            callers.writer_busy.store(now, Ordering::Release);
        }
    };
    let mut carry: Option<Box<dyn Job>> = None;
    while let Some(first) = carry
        .take()
        .or_else(|| next_job(&mut receiver, &mut linger))
    {
        // From here no caller starts an operation of its own: only those
        // already under way are waited for.
        busy(true);
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        // Only this thread takes the connection, below: not reachable. The
        // group's callers would be answered `Closed`.
        let Some(open) = guard.as_ref() else { break };
        let failure = run_group(open, &mut group, &mut receiver, &mut carry);
        drop(guard);
        // An operation carried over to the next group is work: no caller
        // writes ahead of it.
        busy(carry.is_some());
        for job in group.drain(..) {
            job.answer(failure.as_ref());
        }
    }
    let last = conn.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(last) = last {
        close(last);
    }
}

/// Close the write connection, saying so should SQLite refuse (a statement
/// left unfinalized keeps it open, and with it whatever its hooks hold).
fn close(mut conn: Connection) {
    // The WAL hook's closure goes with the hook, whatever the close does.
    if let Err(error) = conn
        .wal_hook(None::<fn(&mut rusqlite::hooks::Wal, std::ffi::c_int) -> rusqlite::Result<()>>)
    {
        tracing::warn!(%error, "removing the write-ahead log hook failed");
    }
    if let Err((_conn, error)) = conn.close() {
        tracing::error!(%error, "closing the SQLite write connection failed; it stays open until the process ends");
    }
}

/// Run one group to its commit (or rollback); `Some` when the whole group
/// failed. Each operation keeps its own result for [`Job::answer`]. Once
/// the group's operations have run, the joining ones queued meanwhile join
/// it (up to [`MAX_GROUP`]), once; the first that does not join is left in
/// `carry`, to start the next group.
fn run_group(
    conn: &Connection,
    group: &mut Vec<Box<dyn Job>>,
    receiver: &mut mpsc::Receiver<Box<dyn Job>>,
    carry: &mut Option<Box<dyn Job>>,
) -> Option<GroupFailure> {
    if let Err(cause) = control(conn, "BEGIN IMMEDIATE") {
        return Some(GroupFailure::new("begin write transaction", cause));
    }
    // Optimistically, without savepoints: nearly every group gets through.
    let mut failed = group.iter_mut().any(|job| job.run(conn, false));
    if !failed {
        let first = group.len();
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) if job.joins() => group.push(job),
                Ok(job) => {
                    *carry = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        failed = group[first..].iter_mut().any(|job| job.run(conn, false));
    }
    if !failed {
        return commit(conn);
    }
    // One failed: undo the group. Alone, it simply failed.
    rollback(conn);
    if group.len() == 1 {
        return None;
    }
    // Again, each in its own savepoint, so only the failure is undone.
    if let Err(cause) = control(conn, "BEGIN IMMEDIATE") {
        return Some(GroupFailure::new("begin write transaction", cause));
    }
    for job in group.iter_mut() {
        job.run(conn, true);
    }
    commit(conn)
}

fn commit(conn: &Connection) -> Option<GroupFailure> {
    match control(conn, "COMMIT") {
        Ok(()) => None,
        Err(cause) => {
            rollback(conn);
            Some(GroupFailure::new("commit", cause))
        }
    }
}

fn rollback(conn: &Connection) {
    // Some errors (a full disk, an I/O error) already ended the transaction.
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = control(conn, "ROLLBACK") {
        tracing::error!(error = %e, "rolling back a write transaction failed");
    }
}

/// For tests: an operation that runs `first` and then, on its first run
/// only, waits until the returned sender is used or dropped; the receiver
/// answers once it waits. What is queued meanwhile waits behind it (or
/// joins its group, and may run it again: it does not wait then).
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn held_op(
    first: impl Fn(&Connection) -> Result<()> + Send + 'static,
) -> (
    impl Fn(&Connection) -> Result<()> + Send + 'static,
    std::sync::mpsc::Sender<()>,
    oneshot::Receiver<()>,
) {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let (started, running) = oneshot::channel::<()>();
    let wait = Mutex::new(wait);
    let started = Mutex::new(Some(started));
    let op = move |conn: &Connection| {
        first(conn)?;
        if let Some(started) = started.lock().unwrap().take() {
            let _ = started.send(());
            let _ = wait.lock().unwrap().recv();
        }
        Ok(())
    };
    (op, release, running)
}

#[cfg(test)]
mod linger_tests {
    use super::*;

    /// Of the next `turns` idle turns, which ones linger.
    fn pattern(linger: &mut Linger, turns: usize) -> Vec<bool> {
        (0..turns).map(|_| linger.now()).collect()
    }

    #[test]
    fn the_writer_lingers_while_it_pays_and_backs_off_when_it_does_not() {
        let mut linger = Linger::default();
        // A fresh writer lingers, and goes on lingering while work comes.
        for _ in 0..3 {
            assert!(linger.now());
            linger.found();
        }
        // In vain: the next idle turn parks at once, the one after lingers.
        assert!(linger.now());
        linger.missed();
        assert_eq!(pattern(&mut linger, 2), [false, true]);
        // In vain again: two turns park, then three more missed lingers
        // make it 4, 8 and 16.
        linger.missed();
        assert_eq!(pattern(&mut linger, 3), [false, false, true]);
        for skip in [4, 8, 16] {
            linger.missed();
            let turns = pattern(&mut linger, skip + 1);
            assert!(turns[..skip].iter().all(|l| !l), "{skip}: {turns:?}");
            assert!(turns[skip], "{skip}");
        }
        // The back-off stops growing at MAX_SKIP.
        for _ in 0..10 {
            linger.missed();
        }
        let turns = pattern(&mut linger, MAX_SKIP as usize + 1);
        assert_eq!(turns.iter().filter(|l| **l).count(), 1, "{turns:?}");
        assert!(turns[MAX_SKIP as usize]);
        // A linger that finds work starts over: the next turn lingers.
        linger.found();
        assert!(linger.now());
    }

    /// A writer dropped while it lingers (its caller gone the moment its
    /// answer came) still ends its thread, and what it committed stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_dropped_while_it_lingers_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linger.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        for round in 0..20 {
            let writer = Writer::spawn(Connection::open(&path).unwrap()).unwrap();
            writer
                .write(move |conn| {
                    conn.execute("INSERT INTO t VALUES (?1)", [round])
                        .map_err(db_err("insert"))
                })
                .await
                .unwrap();
            // Dropping joins the thread: a writer stuck in its linger (or
            // parked with its channel closed) would hang here.
            let dropped = tokio::task::spawn_blocking(move || drop(writer));
            tokio::time::timeout(std::time::Duration::from_secs(30), dropped)
                .await
                .expect("the writer's thread ends once it is dropped")
                .unwrap();
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 20);
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;

    /// What table `t` holds, in order.
    async fn rows_of_t(writer: &Writer) -> Vec<i64> {
        writer
            .write(|conn| {
                let mut stmt = conn
                    .prepare("SELECT x FROM t ORDER BY x")
                    .map_err(db_err("read"))?;
                let rows = stmt
                    .query_map([], |r| r.get(0))
                    .map_err(db_err("read"))?
                    .collect::<rusqlite::Result<Vec<i64>>>()
                    .map_err(db_err("read"))?;
                Ok(rows)
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_operation_fails_alone_and_the_writer_goes_on() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let writer = Writer::spawn(conn).unwrap();
        // Alone in its group: its insert is rolled back with it.
        let err = writer
            .write(|conn| -> Result<()> {
                conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
                panic!("boom");
            })
            .await
            .unwrap_err();
        assert!(err.is_storage(), "{err:?}");
        assert!(err.to_string().contains("write"), "{err}");
        // Grouped with others: only its own changes go.
        let (a, b, c) = tokio::join!(
            writer.write(|conn| {
                conn.execute("INSERT INTO t VALUES (2)", [])
                    .map_err(db_err("insert"))
            }),
            writer.write(|conn| -> Result<usize> {
                conn.execute("INSERT INTO t VALUES (3)", []).unwrap();
                panic!("boom again");
            }),
            writer.write(|conn| {
                conn.execute("INSERT INTO t VALUES (4)", [])
                    .map_err(db_err("insert"))
            }),
        );
        assert_eq!((a.unwrap(), c.unwrap()), (1, 1));
        assert!(b.unwrap_err().is_storage());
        let rows = rows_of_t(&writer).await;
        assert_eq!(rows, [2, 4]);
    }

    /// Hold the writer in an operation until the returned sender fires
    /// (or is dropped), so what is sent meanwhile waits in its queue and is
    /// grouped into the next transaction. Returns once the writer is held.
    pub(super) async fn hold(
        writer: &Arc<Writer>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (op, release, running) = held_op(|_| Ok(()));
        let writer = Arc::clone(writer);
        let held = tokio::spawn(async move { writer.write(op).await });
        running.await.unwrap();
        (release, held)
    }

    /// Wait until `n` operations sit in the writer's queue.
    pub(super) async fn queued(writer: &Writer, n: usize) {
        let sender = writer.sender.as_ref().unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while sender.max_capacity() - sender.capacity() < n {
                tokio::task::yield_now().await;
            }
        });
        waited.await.expect("operations reach the writer's queue");
    }

    fn insert(
        x: i64,
        fail: bool,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl Fn(&Connection) -> Result<()> + Send + 'static {
        let runs = Arc::clone(runs);
        move |conn| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map_err(db_err("insert"))?;
            if fail {
                return Err(Error::invalid("x", "refused after writing"));
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_runs_without_savepoints_and_again_with_them_when_one_fails() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let writer = Arc::new(Writer::spawn(conn).unwrap());
        let runs: Vec<Arc<AtomicUsize>> = (0..6).map(|_| Arc::new(AtomicUsize::new(0))).collect();

        // A group where everything succeeds: each operation runs once.
        let (release, held) = hold(&writer).await;
        let ok: Vec<_> = (0..3)
            .map(|i| {
                let w = Arc::clone(&writer);
                let op = insert(i as i64 + 1, false, &runs[i]);
                tokio::spawn(async move { w.write(op).await })
            })
            .collect();
        queued(&writer, 3).await;
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        for task in ok {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            runs[..3].iter().map(|r| r.load(SeqCst)).collect::<Vec<_>>(),
            [1, 1, 1]
        );

        // A group whose middle operation fails after writing: the group is
        // rolled back and run again in savepoints; the failure's row is
        // gone, the others' rows are there. The one before it ran twice,
        // the one after it only in the second pass.
        let (release, held) = hold(&writer).await;
        let mut tasks = Vec::new();
        for (i, x, fail) in [(3, 10, false), (4, 11, true), (5, 12, false)] {
            let w = Arc::clone(&writer);
            let op = insert(x, fail, &runs[i]);
            tasks.push(tokio::spawn(async move { w.write(op).await }));
            // Keep the order: each is queued before the next is sent.
            queued(&writer, tasks.len()).await;
        }
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        let results: Vec<Result<()>> = futures_join(tasks).await;
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(results[1].as_ref().unwrap_err().is_invalid_input());
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert_eq!(
            runs[3..].iter().map(|r| r.load(SeqCst)).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let rows = rows_of_t(&writer).await;
        assert_eq!(rows, [1, 2, 3, 10, 12]);
    }

    /// Insert `x`, held on the first run until `release` is used: answers
    /// once it runs, with the sender and the task that ends with its write.
    async fn held_insert(
        writer: &Arc<Writer>,
        x: i64,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let (op, release, running) = held_op(move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map(drop)
                .map_err(db_err("insert"))
        });
        let w = Arc::clone(writer);
        let task = tokio::spawn(async move { w.write(op).await });
        running.await.unwrap();
        (release, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_joining_operation_queued_while_a_group_runs_shares_its_commit_and_others_wait() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&commits);
        conn.commit_hook(Some(move || {
            counted.fetch_add(1, SeqCst);
            false
        }))
        .unwrap();
        let writer = Arc::new(Writer::spawn(conn).unwrap());

        // While the first runs: a joining operation that reads what the
        // first wrote, a plain one, another joining one.
        // Each says how many commits there were when it ran.
        let commits_then = |x: i64| {
            let commits = Arc::clone(&commits);
            move |conn: &Connection| {
                conn.execute("INSERT INTO t VALUES (?1)", [x])
                    .map_err(db_err("insert"))?;
                let firsts: i64 = conn
                    .query_row("SELECT COUNT(*) FROM t WHERE x = 1", [], |r| r.get(0))
                    .map_err(db_err("read"))?;
                Ok((firsts, commits.load(SeqCst)))
            }
        };
        let (release, first) = held_insert(&writer, 1).await;
        let mut later = Vec::new();
        for (x, joins) in [(2, true), (3, false), (4, true)] {
            let w = Arc::clone(&writer);
            let op = commits_then(x);
            later.push(tokio::spawn(async move {
                if joins {
                    w.write_joining(op).await
                } else {
                    w.write(op).await
                }
            }));
            queued(&writer, later.len()).await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        let seen: Vec<(i64, usize)> = futures_join_any(later).await;
        // The joining one ran in the first's transaction, after it; the
        // plain one waited for the next group, which the last one (queued
        // before that group began) went along with.
        assert_eq!(seen, [(1, 0), (1, 1), (1, 1)]);
        assert_eq!(commits.load(SeqCst), 2);
        assert_eq!(rows_of_t(&writer).await, [1, 2, 3, 4]);

        // A joining operation that fails: the group is run again with
        // savepoints, and only its own write is undone.
        let (release, first) = held_insert(&writer, 10).await;
        let w = Arc::clone(&writer);
        let failing = insert(11, true, &Arc::new(AtomicUsize::new(0)));
        let joining = tokio::spawn(async move { w.write_joining(failing).await });
        queued(&writer, 1).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert!(joining.await.unwrap().unwrap_err().is_invalid_input());
        assert_eq!(rows_of_t(&writer).await, [1, 2, 3, 4, 10]);
    }

    async fn futures_join_any<T>(tasks: Vec<tokio::task::JoinHandle<Result<T>>>) -> Vec<T> {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap().unwrap());
        }
        out
    }

    async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Result<()>>>) -> Vec<Result<()>> {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    }
}

#[cfg(test)]
mod caller_tests {
    use super::panic_tests::hold;
    use super::*;

    /// A writer sharing small operations with its callers, on a file
    /// database with table `t`, whose connection waits up to `busy` for
    /// another's write lock.
    fn sharing(dir: &std::path::Path, busy: Duration) -> Writer {
        let conn = Connection::open(dir.join("w.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .unwrap();
        conn.busy_timeout(busy).unwrap();
        Writer::spawn_sharing(conn, Arc::new(CallerWrites::new(busy))).unwrap()
    }

    /// Insert `x`, answering the name of the thread it ran on.
    fn insert(x: i64) -> impl Fn(&Connection) -> Result<String> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .map_err(db_err("insert"))?;
            Ok(std::thread::current().name().unwrap_or("").to_owned())
        }
    }

    fn rows(dir: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(dir.join("w.db")).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn a_small_write_runs_on_its_callers_thread_while_the_writer_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let writer = sharing(dir.path(), Duration::from_secs(5));
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_ne!(here, WRITER_THREAD);
        for x in 1..=3 {
            assert_eq!(writer.write_small(insert(x)).await.unwrap(), here);
        }
        // Committed: another connection reads them.
        assert_eq!(rows(dir.path()), [1, 2, 3]);
        // Any other operation still runs on the writer's thread.
        assert_eq!(writer.write(insert(4)).await.unwrap(), WRITER_THREAD);
    }

    #[tokio::test]
    async fn without_sharing_a_small_write_runs_on_the_writers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        let writer = Writer::spawn(conn).unwrap();
        assert_eq!(writer.write_small(insert(1)).await.unwrap(), WRITER_THREAD);
        assert_eq!(rows(dir.path()), [1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_write_waits_its_turn_while_the_writer_works() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Arc::new(sharing(dir.path(), Duration::from_secs(5)));
        let (release, held) = hold(&writer).await;
        let w = Arc::clone(&writer);
        let small = tokio::spawn(async move { w.write_small(insert(1)).await });
        // It waits for the writer (in its queue), not for the connection's
        // lock on a runtime thread: the row is not there while it is held.
        super::panic_tests::queued(&writer, 1).await;
        assert!(!small.is_finished());
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(small.await.unwrap().unwrap(), WRITER_THREAD);
        assert_eq!(rows(dir.path()), [1]);
    }

    /// Another connection (another process, say) holds the write lock: a
    /// small write does not wait for it on its caller's thread, which on a
    /// current-thread runtime would keep the holder itself from running.
    /// The writer's thread waits for the lock instead.
    #[tokio::test]
    async fn a_small_write_never_waits_for_another_connections_lock_on_its_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let busy = Duration::from_secs(20);
        let writer = Arc::new(sharing(dir.path(), busy));
        let other = Connection::open(dir.path().join("w.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .unwrap();
        let started = Instant::now();
        let w = Arc::clone(&writer);
        let small = tokio::spawn(async move { w.write_small(insert(2)).await });
        // This task runs again soon only if the write did not take the
        // runtime's one thread to wait out the other's lock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waited = started.elapsed();
        assert!(
            waited < busy / 2,
            "the caller's thread waited {waited:?} for another connection's lock"
        );
        assert!(!small.is_finished());
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(small.await.unwrap().unwrap(), WRITER_THREAD);
        assert_eq!(rows(dir.path()), [1, 2]);
    }

    #[tokio::test]
    async fn a_small_write_that_fails_or_panics_on_its_callers_thread_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let writer = sharing(dir.path(), Duration::from_secs(5));
        let err = writer
            .write_small(|conn| -> Result<()> {
                conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
                panic!("boom");
            })
            .await
            .unwrap_err();
        assert!(err.is_storage(), "{err:?}");
        let err = writer
            .write_small(|conn| -> Result<()> {
                conn.execute("INSERT INTO t VALUES (2)", [])
                    .map_err(db_err("insert"))?;
                Err(Error::invalid("x", "refused after writing"))
            })
            .await
            .unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
        // Nothing of either stayed, and the next one commits.
        let here = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(writer.write_small(insert(3)).await.unwrap(), here);
        assert_eq!(rows(dir.path()), [3]);
    }

    /// A job that inserts 1, then waits in its run until `go`, and in its
    /// answer until `resume`; it says when each wait begins.
    struct Paused {
        running: Option<oneshot::Sender<()>>,
        go: std::sync::mpsc::Receiver<()>,
        answering: Option<oneshot::Sender<()>>,
        resume: std::sync::mpsc::Receiver<()>,
    }

    impl Job for Paused {
        fn run(&mut self, conn: &Connection, _savepoint: bool) -> bool {
            conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
            if let Some(running) = self.running.take() {
                let _ = running.send(());
                let _ = self.go.recv();
            }
            false
        }

        fn answer(mut self: Box<Self>, _failure: Option<&GroupFailure>) {
            if let Some(answering) = self.answering.take() {
                let _ = answering.send(());
            }
            let _ = self.resume.recv();
        }

        fn joins(&self) -> bool {
            false
        }
    }

    /// An operation queued while a group ran, which the group did not take
    /// in, is carried to the next group; until that group begins the writer
    /// counts as busy, so a small write made meanwhile (here: while the
    /// writer answers the first group) waits in the queue behind it instead
    /// of running ahead of it on its caller's thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_write_waits_behind_an_operation_carried_to_the_next_group() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Arc::new(sharing(dir.path(), Duration::from_secs(5)));
        let (running, run_began) = oneshot::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let (answering, answer_began) = oneshot::channel();
        let (resume, resume_rx) = std::sync::mpsc::channel();
        let paused: Box<dyn Job> = Box::new(Paused {
            running: Some(running),
            go: go_rx,
            answering: Some(answering),
            resume: resume_rx,
        });
        writer.sender.as_ref().unwrap().send(paused).await.unwrap();
        run_began.await.unwrap();
        // Queued while the group runs, and not one that joins: carried.
        let w = Arc::clone(&writer);
        let carried = tokio::spawn(async move { w.write(insert(2)).await });
        super::panic_tests::queued(&writer, 1).await;
        go.send(()).unwrap();
        // The first group has committed and the writer answers it; the
        // carried operation has left the queue and not begun.
        answer_began.await.unwrap();
        assert!(!carried.is_finished());
        let w = Arc::clone(&writer);
        let small = tokio::spawn(async move { w.write_small(insert(3)).await });
        let ran_ahead = async {
            while !small.is_finished() {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            () = super::panic_tests::queued(&writer, 1) => {}
            () = ran_ahead => panic!("the small write ran ahead of the carried operation"),
        }
        resume.send(()).unwrap();
        assert_eq!(carried.await.unwrap().unwrap(), WRITER_THREAD);
        assert_eq!(small.await.unwrap().unwrap(), WRITER_THREAD);
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        let order: Vec<i64> = conn
            .prepare("SELECT x FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(order, [1, 2, 3]);
    }
}
