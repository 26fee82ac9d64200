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
//! short. The log stays below about [`BACKSTOP_PAGES`] pages (32 MiB).
//!
//! Only under `synchronous=NORMAL`. Under `FULL` every commit syncs the log
//! anyway, and a checkpoint syncing the database file at the same time
//! slowed those commits down more than running it inline did (one-per-call
//! enqueue 0.46-0.50x of the raw insert against 0.57x), so there SQLite
//! checkpoints as it always does.

use std::ffi::c_int;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::{SqliteConfig, Synchronous, connect};
use crate::error::{Error, Result};

/// Pages in the log after which the checkpointer is asked to run (SQLite's
/// own automatic checkpoint threshold).
pub(super) const CHECKPOINT_PAGES: c_int = 1000;

/// Pages in the log after which the writer checkpoints itself.
pub(super) const BACKSTOP_PAGES: c_int = 8 * CHECKPOINT_PAGES;

/// The checkpointer thread. It ends when the writer's connection (whose
/// hook holds the other end of its channel) is closed; dropping this joins
/// it, so drop it after the writer.
#[derive(Debug)]
pub(super) struct Checkpointer {
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the checkpointer for the database at `path` and hook it to the
    /// writer's connection (which stops checkpointing by itself below
    /// [`BACKSTOP_PAGES`]); under `synchronous=FULL`, nothing.
    pub(super) fn start(
        writer: &mut Connection,
        path: &Path,
        config: &SqliteConfig,
    ) -> Result<Self> {
        if config.synchronous == Synchronous::Full {
            return Ok(Checkpointer { thread: None });
        }
        let conn = connect(path, config)?;
        let (signal, wake) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("liaison-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &wake))
            .map_err(|e| Error::Storage {
                operation: "start checkpoint thread",
                source: Box::new(e),
            })?;
        // The log's size when the checkpointer was last asked to run: it is
        // asked once per CHECKPOINT_PAGES new pages, as often as SQLite
        // would checkpoint, not after every commit (each checkpoint syncs
        // the database file, which competes with the log's own syncs).
        let mut asked_at: c_int = 0;
        // Registering a hook replaces SQLite's automatic checkpoint.
        writer
            .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
                if pages < asked_at {
                    // The log started over.
                    asked_at = 0;
                }
                if pages >= BACKSTOP_PAGES {
                    match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                        Ok(_) => {}
                        // The checkpointer is at it: the next commit tries again.
                        Err(error) if super::sql::is_busy(&error) => {
                            tracing::debug!(%error, pages, "write-ahead log checkpoint deferred");
                        }
                        Err(error) => {
                            tracing::warn!(%error, pages, "checkpointing the write-ahead log failed");
                        }
                    }
                } else if pages - asked_at >= CHECKPOINT_PAGES {
                    asked_at = pages;
                    // Full: a request is already waiting, which is enough.
                    let _ = signal.try_send(());
                }
                // Never an error: the commit has happened, and an error
                // here would be reported as the commit's.
                Ok(())
            }))
            .map_err(super::sql::db_err("hook the write-ahead log"))?;
        Ok(Checkpointer {
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, wake: &mpsc::Receiver<()>) {
    while wake.recv().is_ok() {
        // Passive: copies what no reader still needs, waits for nobody. A
        // busy database is not an error here; the next request retries.
        match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, done)) => tracing::trace!(log, done, "checkpointed the write-ahead log"),
            Err(error) => tracing::debug!(%error, "checkpointing the write-ahead log failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::sqlite::sql::db_err;
    use crate::store::sqlite::writer::Writer;

    fn open(dir: &Path, synchronous: Synchronous) -> (Writer, Checkpointer, std::path::PathBuf) {
        let path = dir.join("c.db");
        let config = SqliteConfig::default().synchronous(synchronous);
        let mut conn = connect(&path, &config).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER, pad BLOB)")
            .unwrap();
        let checkpointer = Checkpointer::start(&mut conn, &path, &config).unwrap();
        (Writer::spawn(conn).unwrap(), checkpointer, path)
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
        assert!(checkpointer.thread.is_some());
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
        let frame = 4096 + 24;
        let most = u64::try_from(BACKSTOP_PAGES).unwrap() * frame + 64 * frame;
        let log = size(&wal(&path));
        assert!(
            log > 0 && log <= most,
            "log of {log} bytes, at most {most} expected"
        );
        drop(writer);
        drop(checkpointer);
        let count: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, i64::from(BACKSTOP_PAGES) * 5 / 2);
    }

    #[test]
    fn under_full_sqlite_checkpoints_as_usual() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer, _) = open(dir.path(), Synchronous::Full);
        assert!(checkpointer.thread.is_none());
        drop(writer);
    }
}
