//! A small pool of read connections. WAL lets them read while the writer
//! writes; each read runs on tokio's blocking pool. At most
//! `read_connections` reads run at once; more wait for a connection to come
//! back rather than open one of their own (opening a connection parses the
//! whole schema, which cost more than the reads themselves when 32 result
//! deliveries read at once).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::{SqliteConfig, connect};
use crate::error::{Error, Result};

#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    config: SqliteConfig,
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection the pool may hold.
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, config: SqliteConfig) -> Self {
        ReadPool {
            permits: Arc::new(Semaphore::new(config.read_connections.max(1))),
            path,
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn checkout(&self) -> Result<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => {
                let conn = connect(&self.path, &self.config)?;
                conn.execute_batch("PRAGMA query_only = ON")
                    .map_err(super::db::db_err("open read connection"))?;
                Ok(conn)
            }
        }
    }

    fn checkin(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.read_connections {
            idle.push(conn);
        }
    }

    /// Run `f` on a read connection off the async threads.
    pub(super) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // The permit goes with the read and is released once its connection
        // is back in `idle` (even when the caller stopped waiting): a holder
        // always finds a connection there or may open one.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| Error::Storage {
                operation: "read connection",
                source: Box::new(e),
            })?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = pool.checkout()?;
            let result = f(&conn);
            pool.checkin(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| Error::Storage {
            operation: "read task",
            source: Box::new(e),
        })?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A burst of reads larger than the pool runs at most
    /// `read_connections` at once, each on a pooled connection, and every
    /// read gets its answer; afterwards the pool holds no more than that.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_reads_waits_for_the_pools_connections() {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::default().read_connections(2);
        let pool = Arc::new(ReadPool::new(dir.path().join("outbox.db"), config));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..16_i64 {
            let (pool, running, most) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&most));
            reads.spawn(async move {
                pool.read(move |conn| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    let value: i64 = conn
                        .query_row("SELECT ?1 * 2", [i], |row| row.get(0))
                        .unwrap();
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(value)
                })
                .await
                .map(|value| (i, value))
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = reads.join_next().await {
            answers.push(answer.unwrap().unwrap());
        }
        answers.sort_unstable();
        assert_eq!(answers, (0..16).map(|i| (i, i * 2)).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} reads at once");
        let kept = pool.idle.lock().unwrap().len();
        assert!((1..=2).contains(&kept), "{kept} connections kept");
    }
}
