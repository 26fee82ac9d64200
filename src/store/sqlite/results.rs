//! The transactional result handler on SQLite: the host's writes and the
//! acknowledgement of the delivery in one transaction on the outbox's file.

use std::sync::Arc;

use rusqlite::Connection;

use super::SqliteStore;
use super::driver::{Sql, run};
use crate::engine::FinishedSubmission;
use crate::error::{BoxError, Error, Result};
use crate::store::{DeliveryEnd, DeliveryLease, flow};

/// A result handler that writes into the host's tables on the outbox's own
/// SQLite file, in liaison's write transaction: the host's writes and the
/// acknowledgement of the delivery commit together or not at all — each
/// finished submission lands in the host's database exactly once. The
/// mirror of [`SqliteStore::enqueue_in_transaction`]. Register it with
/// [`crate::Partner::results_in_sqlite`] (or
/// [`crate::engine::LiaisonBuilder::results_in_sqlite`]).
///
/// It runs on the store's writer thread, inside the open transaction (do
/// not `BEGIN` or `COMMIT`): keep it to a few statements, with no network
/// calls or waits — every other write of the outbox waits for it. It may
/// be run again if the writer retries its transaction group, so it must
/// only write to the database it is given. An error (or a panic) rolls back
/// what it wrote and the delivery is retried under the partner's retry
/// policy, then parked; nothing is acknowledged that the host did not
/// commit.
///
/// ```
/// use liaison::{BoxError, FinishedSubmission};
/// use liaison::store::SqliteResultHandler;
/// use liaison::rusqlite::{Connection, params};
///
/// #[derive(Debug)]
/// struct Claims;
///
/// impl SqliteResultHandler for Claims {
///     fn handle(&self, conn: &Connection, finished: &FinishedSubmission) -> Result<(), BoxError> {
///         let paid = finished.document().and_then(|d| d["paid"].as_i64());
///         conn.execute(
///             "UPDATE claims SET status = ?2, paid = ?3 WHERE claim_id = ?1",
///             params![finished.submission.idempotency_key, finished.final_state().as_str(), paid],
///         )?;
///         Ok(())
///     }
/// }
/// ```
pub trait SqliteResultHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Write one finished submission into the host's tables, on `conn`,
    /// inside the transaction that acknowledges it.
    fn handle(&self, conn: &Connection, finished: &FinishedSubmission) -> Result<(), BoxError>;
}

impl SqliteStore {
    /// Acknowledge `lease`'s delivery and run `handler` in one write
    /// transaction. [`Error::Handler`] when the handler failed (nothing of
    /// it, nor the acknowledgement, is kept); [`Error::StaleLease`] when the
    /// lease is no longer the delivery's (the handler is not run).
    pub(crate) async fn deliver_in_transaction(
        &self,
        lease: &DeliveryLease,
        finished: FinishedSubmission,
        handler: Arc<dyn SqliteResultHandler>,
    ) -> Result<()> {
        let lease = lease.clone();
        self.inner
            .writer
            .write(move |conn| {
                // The lease first: a stale one runs no host code.
                run(flow::finish_delivery(
                    &Sql(conn),
                    &lease,
                    &DeliveryEnd::Delivered,
                    crate::clock::now(),
                ))?;
                handler
                    .handle(conn, &finished)
                    .map_err(|source| Error::Handler { source })
            })
            .await
    }
}
