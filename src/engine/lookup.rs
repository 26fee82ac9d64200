//! Reads for the host: one submission by id or by its own key, and lists
//! by filter (by correlation field, by time of change). The store does the
//! work; these are here so the host needs only its `Liaison`.

use super::Liaison;
use crate::error::Result;
use crate::model::submission::{Submission, SubmissionId};
use crate::store::ListFilter;

impl Liaison {
    /// One submission by id ([`crate::store::OutboxStore::get`]).
    pub async fn get(&self, id: SubmissionId) -> Result<Submission> {
        self.store().get(id).await
    }

    /// The submission `partner` enqueued under `idempotency_key`, the host's
    /// own key; [`crate::Error::NotFound`] when there is none. After a replay
    /// under a fresh key, the original key finds it too while the ledger
    /// keeps it: see [`crate::store::OutboxStore::get_by_key`].
    ///
    /// ```
    /// # use liaison::{Liaison, NewSubmission, store::SqliteStore};
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// # liaison.store().enqueue(
    /// #     NewSubmission::new("clearinghouse", "claim.submit", json!({"claim": "C-1042"}))
    /// #         .idempotency_key("C-1042"),
    /// # ).await?;
    /// let claim = liaison.get_by_key("clearinghouse", "C-1042").await?;
    /// println!("{} is {}", claim.idempotency_key, claim.state);
    ///
    /// let missing = liaison.get_by_key("clearinghouse", "C-9999").await.unwrap_err();
    /// assert!(missing.is_not_found());
    /// # Ok(()) }
    /// ```
    pub async fn get_by_key(&self, partner: &str, idempotency_key: &str) -> Result<Submission> {
        self.store().get_by_key(partner, idempotency_key).await
    }

    /// Submissions matching `filter`, in enqueue order
    /// ([`crate::store::OutboxStore::list`]).
    ///
    /// ```
    /// # use liaison::{Liaison, NewSubmission, store::{ListFilter, SqliteStore}};
    /// # use serde_json::json;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// # liaison.store().enqueue(
    /// #     NewSubmission::new("lab", "order.place", json!({"tests": ["TSH"]}))
    /// #         .correlation("order_no", "SO-9913"),
    /// # ).await?;
    /// // Every submission about the host's order SO-9913.
    /// let order = ListFilter::default().partner("lab").correlation("order_no", "SO-9913");
    /// let found = liaison.list(&order).await?;
    /// assert_eq!(found.len(), 1);
    ///
    /// // What changed in the last five minutes, page by page.
    /// let since = chrono::Utc::now() - chrono::Duration::minutes(5);
    /// let mut page = ListFilter::default().updated_since(since).limit(100);
    /// loop {
    ///     let batch = liaison.list(&page).await?;
    ///     let Some(last) = batch.last() else { break };
    ///     page = page.after(last.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Submission>> {
        self.store().list(filter).await
    }
}
