//! The transactional result handler on PostgreSQL: the host's writes and
//! the acknowledgement of the delivery in one transaction.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use crate::store::OutboxStore as _;
use async_trait::async_trait;
use futures_util::FutureExt;

use super::{PostgresStore, begin, commit, in_tx, keep_unless_lost, rolled_back};
use crate::engine::FinishedSubmission;
use crate::error::{BoxError, Error, Result};
use crate::store::{DeliveryEnd, DeliveryLease, flow};

/// A result handler that writes into the host's tables on the store's
/// PostgreSQL database, in the transaction that acknowledges the delivery:
/// the host's writes and the acknowledgement commit together or not at all
/// — each finished submission lands in the host's database exactly once.
/// The mirror of [`PostgresStore::enqueue_in_transaction`]. Register it with
/// [`crate::Partner::results_in_postgres`] (or
/// [`crate::engine::LiaisonBuilder::results_in_postgres`]).
///
/// The transaction is open when it is called (do not commit or roll it
/// back); it holds a pooled connection and the delivery's row until the
/// handler returns, so keep it short — it is bounded by the partner's
/// `attempt_timeout`, after which everything is rolled back and the
/// delivery retried. An error, a panic or a timeout rolls back what it
/// wrote and the delivery is retried under the partner's retry policy, then
/// parked.
///
/// ```
/// use async_trait::async_trait;
/// use liaison::{BoxError, FinishedSubmission};
/// use liaison::store::PostgresResultHandler;
///
/// #[derive(Debug)]
/// struct Claims;
///
/// #[async_trait]
/// impl PostgresResultHandler for Claims {
///     async fn handle(
///         &self,
///         tx: &tokio_postgres::Transaction<'_>,
///         finished: &FinishedSubmission,
///     ) -> Result<(), BoxError> {
///         let paid = finished.document().and_then(|d| d["paid"].as_i64());
///         tx.execute(
///             "UPDATE claims SET status = $2, paid = $3 WHERE claim_id = $1",
///             &[&finished.submission.idempotency_key, &finished.final_state().as_str(), &paid],
///         )
///         .await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait PostgresResultHandler: Send + Sync + std::fmt::Debug + 'static {
    /// Write one finished submission into the host's tables, in `tx`, the
    /// transaction that acknowledges it.
    async fn handle(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        finished: &FinishedSubmission,
    ) -> Result<(), BoxError>;
}

impl PostgresStore {
    /// Acknowledge `lease`'s delivery and run `handler` in one transaction.
    /// [`Error::Handler`] when the handler failed or panicked (nothing of
    /// it, nor the acknowledgement, is kept); [`Error::StaleLease`] when the
    /// lease is no longer the delivery's (the handler is not run).
    pub(crate) async fn deliver_in_transaction(
        &self,
        lease: &DeliveryLease,
        finished: &FinishedSubmission,
        handler: Arc<dyn PostgresResultHandler>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let result = async {
            let tx = begin(&mut conn).await?;
            // The lease first: a stale one runs no host code.
            let acknowledged =
                flow::finish_delivery(&in_tx(&tx), lease, &DeliveryEnd::Delivered, self.now())
                    .await;
            if let Err(error) = acknowledged {
                return Err(rolled_back(tx, error).await);
            }
            let handled = AssertUnwindSafe(handler.handle(&tx, finished))
                .catch_unwind()
                .await;
            let failed = match handled {
                Ok(Ok(())) => return commit(tx).await,
                Ok(Err(source)) => Error::Handler { source },
                Err(_) => Error::Handler {
                    source: "the result handler panicked".into(),
                },
            };
            // Nothing of the handler's writes, nor the acknowledgement, stays.
            Err(rolled_back(tx, failed).await)
        }
        .await;
        keep_unless_lost(conn, &result);
        result
    }
}
