//! The single writer: one thread owns the write connection and groups the
//! operations waiting for it into one `BEGIN IMMEDIATE` transaction.
//!
//! Each operation runs inside its own savepoint, so one operation's error
//! rolls back only its own changes. Callers are answered after the commit,
//! so a returned `Ok` is durable (at the configured `synchronous` level).

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::sql::{db_err, is_busy};
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
    fn to_error(&self) -> Error {
        Error::shared_storage(self.operation, self.cause.clone(), is_busy(&self.cause))
    }
}

/// Called once the group's commit is known: `None` when committed.
type Reply = Box<dyn FnOnce(Option<&GroupFailure>) + Send>;

/// What running one operation left: its reply, and whether it failed.
struct Ran {
    reply: Reply,
    failed: bool,
}

/// One queued write operation.
trait Job: Send {
    /// Run inside the open transaction; the reply is called after the commit.
    /// `alone`: the only operation of its group, so the group's transaction
    /// is its own and needs no savepoint (a failure rolls it all back).
    fn run(self: Box<Self>, conn: &Connection, alone: bool) -> Ran;
    /// The transaction could not begin: answer without running.
    fn fail(self: Box<Self>, failure: &GroupFailure);
}

struct Op<T, F> {
    op: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection, alone: bool) -> Ran {
        let Op { op, reply } = *self;
        // A panic in one operation must not take the writer thread (and
        // with it the store) down: it becomes that caller's error, and its
        // changes are rolled back like any failed operation's.
        let guarded = move |conn: &Connection| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(conn)))
                .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
        };
        let result = if alone {
            guarded(conn)
        } else {
            in_savepoint(conn, guarded)
        };
        let failed = result.is_err();
        let reply = Box::new(move |failure: Option<&GroupFailure>| {
            let answer = match (result, failure) {
                (Err(e), _) => Err(e),
                (Ok(_), Some(failure)) => Err(failure.to_error()),
                (Ok(v), None) => Ok(v),
            };
            // The caller may have gone away; what committed stays committed.
            let _ = reply.send(answer);
        });
        Ran { reply, failed }
    }

    fn fail(self: Box<Self>, failure: &GroupFailure) {
        let _ = self.reply.send(Err(failure.to_error()));
    }
}

/// The error for an operation that panicked (a bug in liaison).
fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!(%message, "a write operation panicked; it was rolled back");
    Error::Storage {
        operation: "write",
        source: format!("the operation panicked: {message}").into(),
    }
}

#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn spawn(conn: Connection) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Box<dyn Job>>(4 * MAX_GROUP);
        let thread = std::thread::Builder::new()
            .name("liaison-sqlite-writer".into())
            .spawn(move || run(conn, receiver))
            .map_err(|e| Error::Storage {
                operation: "start writer thread",
                source: Box::new(e),
            })?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Run `op` in the writer's next transaction and return its result once
    /// that transaction has committed.
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op { op, reply });
        let sender = self.sender.as_ref().ok_or(Error::Closed)?;
        sender.send(job).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
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

fn run(conn: Connection, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(cause) = control(&conn, "BEGIN IMMEDIATE") {
            let failure = GroupFailure {
                operation: "begin write transaction",
                cause: Arc::new(cause),
            };
            for job in group.drain(..) {
                job.fail(&failure);
            }
            continue;
        }
        let alone = group.len() == 1;
        let ran: Vec<Ran> = group.drain(..).map(|job| job.run(&conn, alone)).collect();
        if alone && ran.iter().any(|r| r.failed) {
            // A lone operation runs without a savepoint: its failure undoes
            // the whole transaction, which holds nothing else.
            if let Err(e) = control(&conn, "ROLLBACK") {
                tracing::error!(error = %e, "rolling back a failed operation failed");
            }
            for r in ran {
                (r.reply)(None);
            }
            continue;
        }
        let replies = ran.into_iter().map(|r| r.reply);
        let failure = match control(&conn, "COMMIT") {
            Ok(()) => None,
            Err(cause) => {
                if let Err(e) = control(&conn, "ROLLBACK") {
                    tracing::error!(error = %e, "rollback after a failed commit failed");
                }
                Some(GroupFailure {
                    operation: "commit",
                    cause: Arc::new(cause),
                })
            }
        };
        for reply in replies {
            reply(failure.as_ref());
        }
    }
}

#[cfg(test)]
mod panic_tests {
    use super::*;

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
        let rows: Vec<i64> = writer
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
            .unwrap();
        assert_eq!(rows, [2, 4]);
    }
}
