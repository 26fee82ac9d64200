//! WAL checkpoints off the writer thread.
//!
//! By default SQLite checkpoints in the connection that commits, once the
//! write-ahead log holds 1,000 pages: the committing thread copies those
//! pages into the database file and syncs it, and every caller whose
//! operation was in that group waits for it. Measured on the enqueue path,
//! that was more than a third of a commit's cost under `synchronous=NORMAL`.
//!
//! Here the writer's connection only signals a checkpointer thread, which
//! has a connection of its own and runs passive checkpoints (they never
//! wait for a lock, and the writer goes on appending meanwhile). Under
//! continuous writes such a checkpoint seldom catches up with the last
//! frame, and SQLite only starts the log over once every frame is copied;
//! so should the log reach [`BACKSTOP_PAGES`], the writer checkpoints
//! itself, as SQLite would have, which lets its next transaction start the
//! log over. Most of the pages are copied by then, so that checkpoint is
//! short. Should the checkpointer be at work right then, the writer waits
//! for it to finish first (its checkpoint would otherwise be refused as
//! busy while the log grows on under load), so the log stays below about
//! [`BACKSTOP_PAGES`] pages (32 MiB) plus one group's commit.
//!
//! Only under `synchronous=NORMAL`. Under `FULL` every commit syncs the log
//! anyway, and a checkpoint syncing the database file at the same time
//! slowed those commits down more than running it inline did (one-per-call
//! enqueue 0.46-0.50x of the raw insert against 0.57x), so there SQLite
//! checkpoints as it always does.

use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::writer::CallerWrites;
use super::{SqliteConfig, Synchronous, connect};
use crate::error::{Error, Result};

/// Pages in the log after which the checkpointer is asked to run (SQLite's
/// own automatic checkpoint threshold).
pub(super) const CHECKPOINT_PAGES: c_int = 1000;

/// Pages in the log after which the writer checkpoints itself.
pub(super) const BACKSTOP_PAGES: c_int = 8 * CHECKPOINT_PAGES;

/// The checkpointer thread's name: whole within the 15 bytes of a name
/// Linux keeps, and told apart there from the writer's
/// ([`super::writer::WRITER_THREAD`]).
pub(crate) const CHECKPOINT_THREAD: &str = "liaison-checkpt";

/// How long dropping the store waits for the checkpointer thread to end.
/// A passive checkpoint in progress is let finish (it copies at most
/// [`BACKSTOP_PAGES`] pages); past this the thread is left to end on its
/// own, and the wait is logged, so a host's shutdown never hangs on it.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// The checkpointer thread. Dropping this stops it through a signal of its
/// own (never through the writer's connection, whose WAL hook only asks
/// for checkpoints) and waits for it at most [`STOP_WAIT`].
#[derive(Debug)]
pub(super) struct Checkpointer {
    worker: Option<Worker>,
}

#[derive(Debug)]
struct Worker {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    /// Our own sender: wakes the thread to see `stop`.
    wake: mpsc::SyncSender<()>,
    /// Disconnected when the thread has ended.
    ended: Mutex<mpsc::Receiver<()>>,
}

/// When the checkpointer is asked to run and when the writer steps in.
#[derive(Debug, Clone, Copy)]
struct Thresholds {
    /// New pages in the log between two requests to the checkpointer.
    ask: c_int,
    /// Pages in the log from which the writer checkpoints itself.
    backstop: c_int,
}

const THRESHOLDS: Thresholds = Thresholds {
    ask: CHECKPOINT_PAGES,
    backstop: BACKSTOP_PAGES,
};

impl Checkpointer {
    /// Start the checkpointer for the database at `path` and hook it to the
    /// writer's connection (which stops checkpointing by itself below
    /// [`BACKSTOP_PAGES`]); under `synchronous=FULL`, nothing.
    /// A commit that reaches the backstop on a caller's thread (see
    /// [`CallerWrites`]) leaves the checkpoint to the writer's thread.
    pub(super) fn start(
        writer: &mut Connection,
        path: &Path,
        config: &SqliteConfig,
        callers: &Arc<CallerWrites>,
    ) -> Result<Self> {
        Self::start_with(writer, path, config, THRESHOLDS, callers)
    }

    /// Whether the checkpointer runs (it does not under `synchronous=FULL`,
    /// where SQLite checkpoints in the committing connection).
    pub(super) fn is_running(&self) -> bool {
        self.worker.is_some()
    }

    fn start_with(
        writer: &mut Connection,
        path: &Path,
        config: &SqliteConfig,
        thresholds: Thresholds,
        callers: &Arc<CallerWrites>,
    ) -> Result<Self> {
        let Thresholds { ask, backstop } = thresholds;
        if config.synchronous == Synchronous::Full {
            return Ok(Checkpointer { worker: None });
        }
        let conn = connect(path, config)?;
        let (signal, wake) = mpsc::sync_channel::<()>(1);
        let (ended_tx, ended) = mpsc::channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        // Held by whoever checkpoints: the writer's backstop waits for the
        // checkpointer's pass rather than being refused as busy.
        let turn = Arc::new(Mutex::new(()));
        let checkpointer_turn = Arc::clone(&turn);
        let thread = std::thread::Builder::new()
            .name(CHECKPOINT_THREAD.into())
            .spawn(move || {
                // Dropped when the thread ends, however it ends.
                let _ended = ended_tx;
                run(&conn, &wake, &stopping, &checkpointer_turn);
            })
            .map_err(|e| Error::Storage {
                operation: "start checkpoint thread",
                source: Box::new(e),
            })?;
        // The log's size when the checkpointer was last asked to run: it is
        // asked once per `ask` new pages, as often as SQLite
        // would checkpoint, not after every commit (each checkpoint syncs
        // the database file, which competes with the log's own syncs).
        let mut asked_at: c_int = 0;
        let stop_signal = signal.clone();
        let callers = Arc::clone(callers);
        // Registering a hook replaces SQLite's automatic checkpoint.
        writer
            .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
                if pages < asked_at {
                    // The log started over.
                    asked_at = 0;
                }
                if pages >= backstop {
                    // A caller's commit stays short: the writer's thread
                    // checkpoints at its next commit.
                    if !callers.defer_checkpoint() {
                        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
                        match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                            Ok(_) => {}
                            // Another connection checkpoints (a host's): the
                            // next commit tries again.
                            Err(error) if super::db::is_busy(&error) => {
                                tracing::debug!(%error, pages, "write-ahead log checkpoint deferred");
                            }
                            Err(error) => {
                                tracing::warn!(%error, pages, "checkpointing the write-ahead log failed");
                            }
                        }
                        callers.checkpoint_made();
                    }
                } else {
                    callers.checkpoint_made();
                    if pages - asked_at >= ask {
                        asked_at = pages;
                        // Full: a request is already waiting, which is enough.
                        let _ = signal.try_send(());
                    }
                }
                // Never an error: the commit has happened, and an error
                // here would be reported as the commit's.
                Ok(())
            }))
            .map_err(super::db::db_err("hook the write-ahead log"))?;
        Ok(Checkpointer {
            worker: Some(Worker {
                thread,
                stop,
                wake: stop_signal,
                ended: Mutex::new(ended),
            }),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        worker.stop.store(true, Ordering::Release);
        // Full: a request is waiting already, and the thread sees `stop`
        // once it has taken it.
        let _ = worker.wake.try_send(());
        let ended = worker.ended.into_inner().unwrap_or_else(|p| p.into_inner());
        match ended.recv_timeout(STOP_WAIT) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = worker.thread.join();
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    waited = ?STOP_WAIT,
                    "the SQLite checkpoint thread did not stop in time; left to end on its own"
                );
            }
        }
    }
}

fn run(conn: &Connection, wake: &mpsc::Receiver<()>, stop: &AtomicBool, turn: &Mutex<()>) {
    while wake.recv().is_ok() && !stop.load(Ordering::Acquire) {
        // Passive: copies what no reader still needs, waits for nobody. A
        // busy database is not an error here; the next request retries.
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, done)) => tracing::trace!(log, done, "checkpointed the write-ahead log"),
            Err(error) => tracing::debug!(%error, "checkpointing the write-ahead log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::sqlite::db::db_err;
    use crate::store::sqlite::writer::Writer;

    fn open(dir: &Path, synchronous: Synchronous) -> (Writer, Checkpointer, std::path::PathBuf) {
        open_with(dir, synchronous, THRESHOLDS)
    }

    fn open_with(
        dir: &Path,
        synchronous: Synchronous,
        thresholds: Thresholds,
    ) -> (Writer, Checkpointer, std::path::PathBuf) {
        open_as(dir, synchronous, thresholds, false)
    }

    /// As [`open_with`] under `NORMAL`, with a writer that lets small
    /// operations run on their caller's thread (as the store's does).
    fn open_sharing(
        dir: &Path,
        thresholds: Thresholds,
    ) -> (Writer, Checkpointer, std::path::PathBuf) {
        open_as(dir, Synchronous::Normal, thresholds, true)
    }

    fn open_as(
        dir: &Path,
        synchronous: Synchronous,
        thresholds: Thresholds,
        sharing: bool,
    ) -> (Writer, Checkpointer, std::path::PathBuf) {
        let path = dir.join("c.db");
        let config = SqliteConfig::default().synchronous(synchronous);
        let mut conn = connect(&path, &config).unwrap();
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER, pad BLOB)")
            .unwrap();
        let callers = Arc::new(CallerWrites::new(config.busy_timeout));
        let checkpointer =
            Checkpointer::start_with(&mut conn, &path, &config, thresholds, &callers).unwrap();
        let writer = if sharing {
            Writer::spawn_sharing(conn, callers)
        } else {
            Writer::spawn(conn)
        };
        (writer.unwrap(), checkpointer, path)
    }

    /// Check that the log holds at most `frames` pages, then drop the
    /// writer and the checkpointer and count the rows the file kept.
    fn bounded_then_kept(
        writer: Writer,
        checkpointer: Checkpointer,
        path: &Path,
        frames: u64,
    ) -> i64 {
        let most = frames * (4096 + 24);
        let log = size(&wal(path));
        assert!(
            log > 0 && log <= most,
            "log of {log} bytes, at most {most} expected"
        );
        drop(writer);
        drop(checkpointer);
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// Drop the writer, then the checkpointer (as the store does), on a
    /// thread of their own; fail should that take longer than `bound`.
    fn drop_within(writer: Writer, checkpointer: Checkpointer, bound: Duration) -> Duration {
        let started = Instant::now();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(writer);
            drop(checkpointer);
            let _ = done.send(());
        });
        finished
            .recv_timeout(bound)
            .expect("dropping the writer and the checkpointer hung");
        started.elapsed()
    }

    /// `n` commits, one row each with `pad` bytes.
    async fn commits(writer: &Writer, n: i64, pad: usize) {
        for i in 0..n {
            writer
                .write(move |conn| {
                    conn.prepare_cached("INSERT INTO t VALUES (?1, zeroblob(?2))")
                        .and_then(|mut s| s.execute(rusqlite::params![i, pad as i64]))
                        .map_err(db_err("insert"))
                })
                .await
                .unwrap();
        }
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    fn wal(path: &Path) -> std::path::PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push("-wal");
        name.into()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_copies_the_log_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer, path) = open(dir.path(), Synchronous::Normal);
        assert!(checkpointer.worker.is_some());
        let before = size(&path);
        // About 1,500 pages of log, well below the writer's own backstop:
        // only the checkpointer can have copied them into the file.
        commits(&writer, 1500, 3000).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while size(&path) <= before + 1000 * 4096 {
            assert!(
                Instant::now() < deadline,
                "the database file did not grow: {} -> {} bytes",
                before,
                size(&path)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Dropped in this order (as in the store), the thread ends.
        drop(writer);
        drop(checkpointer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_continuous_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer, path) = open(dir.path(), Synchronous::Normal);
        // Each commit adds at least one page: 2.5 times the backstop.
        commits(&writer, i64::from(BACKSTOP_PAGES) * 5 / 2, 0).await;
        let frames = u64::try_from(BACKSTOP_PAGES).unwrap() + 64;
        let count = bounded_then_kept(writer, checkpointer, &path, frames);
        assert_eq!(count, i64::from(BACKSTOP_PAGES) * 5 / 2);
    }

    /// A write connection that SQLite refuses to close (here: a statement
    /// left unfinalized) keeps its WAL hook, and the hook's end of the
    /// checkpointer's channel, alive for the process's life. The checkpointer
    /// must stop all the same: dropping the store once hung for ever here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_connection_that_cannot_close_does_not_hang_the_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer, _) = open(dir.path(), Synchronous::Normal);
        commits(&writer, 10, 0).await;
        writer
            .write(|conn| {
                let stmt = conn.prepare("SELECT x FROM t").map_err(db_err("prepare"))?;
                // Never finalized: sqlite3_close answers SQLITE_BUSY.
                std::mem::forget(stmt);
                Ok(())
            })
            .await
            .unwrap();
        drop_within(writer, checkpointer, Duration::from_secs(60));
    }

    /// Open, write past the backstop (so both the checkpointer and the
    /// writer's own checkpoint have run), drop: 200 times, with two threads
    /// spinning to keep the cores busy, each drop bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_after_writes_past_the_backstop_never_hangs_under_load() {
        let busy = Arc::new(AtomicBool::new(true));
        let spinners: Vec<_> = (0..2)
            .map(|_| {
                let busy = Arc::clone(&busy);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while busy.load(Ordering::Relaxed) {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                })
            })
            .collect();
        let small = Thresholds {
            ask: 8,
            backstop: 64,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut slowest = Duration::ZERO;
        for _ in 0..200 {
            let (writer, checkpointer, _) = open_with(dir.path(), Synchronous::Normal, small);
            // 4 pages a commit: 20 commits take the log past the backstop.
            commits(&writer, 20, 4 * 4096).await;
            slowest = slowest.max(drop_within(writer, checkpointer, Duration::from_secs(60)));
        }
        busy.store(false, Ordering::Relaxed);
        for spinner in spinners {
            spinner.join().unwrap();
        }
        eprintln!("slowest drop: {slowest:?}");
    }

    /// Commits on callers' threads never checkpoint: the one that takes
    /// the log to the backstop leaves it owed, the next small write goes to
    /// the writer's thread, which checkpoints, and the log stays bounded.
    /// (The checkpointer is never asked here: only the backstop copies.)
    #[tokio::test]
    async fn a_callers_commit_leaves_the_backstop_to_the_writers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let backstop = 64;
        let thresholds = Thresholds {
            ask: c_int::MAX,
            backstop,
        };
        let (writer, checkpointer, path) = open_sharing(dir.path(), thresholds);
        let here = std::thread::current().id();
        let (mut on_writer, n) = (0, 400);
        for i in 0..n {
            // A row of a page or two: the log passes the backstop every
            // few dozen commits.
            let ran_on = writer
                .write_small(move |conn| {
                    conn.prepare_cached("INSERT INTO t VALUES (?1, zeroblob(4096))")
                        .and_then(|mut s| s.execute([i]))
                        .map_err(db_err("insert"))?;
                    Ok(std::thread::current().id())
                })
                .await
                .unwrap();
            if ran_on != here {
                on_writer += 1;
            }
        }
        assert!(
            on_writer > 0 && on_writer < n / 4,
            "{on_writer} of {n} small writes ran on the writer's thread"
        );
        let frames = u64::try_from(backstop + 32).unwrap();
        let count = bounded_then_kept(writer, checkpointer, &path, frames);
        assert_eq!(count, n);
    }

    #[test]
    fn under_full_sqlite_checkpoints_as_usual() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer, _) = open(dir.path(), Synchronous::Full);
        assert!(checkpointer.worker.is_none());
        drop(writer);
    }
}
