//! Personal data on request: `forget` erases one finished submission's,
//! found by its id or by the key the host enqueued it under.

use super::Liaison;
use crate::error::Result;
use crate::model::event::Actor;
use crate::model::submission::{Submission, SubmissionId};

/// Which submission [`Liaison::forget`] erases.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForgetTarget {
    /// By its id.
    Id(SubmissionId),
    /// By the partner and the idempotency key the host enqueued it under
    /// (found as [`crate::store::OutboxStore::get_by_key`] finds it).
    Key {
        /// The partner.
        partner: String,
        /// The host's idempotency key.
        key: String,
    },
}

impl ForgetTarget {
    /// The submission `partner` enqueued under `key`.
    pub fn key(partner: impl Into<String>, key: impl Into<String>) -> Self {
        ForgetTarget::Key {
            partner: partner.into(),
            key: key.into(),
        }
    }
}

impl From<SubmissionId> for ForgetTarget {
    fn from(id: SubmissionId) -> Self {
        ForgetTarget::Id(id)
    }
}

impl Liaison {
    /// Erase a finished submission's personal data on request (a data
    /// subject's erasure request, say): its payload, result, correlation
    /// values, partner reference and errors, its attempts' errors, every
    /// reason and data on its timeline, and the bodies and headers of the
    /// callbacks matched to it. The skeleton stays — ids, states, times,
    /// event kinds and actors — and so does the idempotency key, so the
    /// ledger still answers an enqueue of it (with the forgotten
    /// submission). The erasure is journaled on the timeline
    /// ([`crate::EventKind::Forgotten`]) with `actor` and `reason`.
    ///
    /// Only finished work is erased: a submission still queued, in flight,
    /// awaiting its result or stuck is refused with
    /// [`crate::Error::Unfinished`] (cancel or resolve it first, then
    /// forget it). A forgotten failed or dead-lettered submission cannot be
    /// replayed (its payload is gone).
    ///
    /// ```
    /// use liaison::{Actor, ForgetTarget, Liaison, NewSubmission, SubmissionState};
    /// use liaison::store::{OutboxStore, SqliteStore};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// let s = liaison
    ///     .store()
    ///     .enqueue(NewSubmission::new("lab", "order", json!({"patient": "Ada"})).idempotency_key("o-1"))
    ///     .await?
    ///     .submission;
    /// // Unfinished work is refused: cancel it first.
    /// let dpo = Actor::person("dpo@example.com");
    /// let refused = liaison.forget(ForgetTarget::key("lab", "o-1"), dpo.clone(), "erasure request 7").await;
    /// assert!(refused.unwrap_err().is_unfinished());
    /// liaison.cancel(s.id, dpo.clone(), "erasure request 7").await?;
    /// let forgotten = liaison.forget(s.id, dpo, "erasure request 7").await?;
    /// assert_eq!(forgotten.state, SubmissionState::Cancelled);
    /// assert!(forgotten.payload.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn forget(
        &self,
        target: impl Into<ForgetTarget>,
        actor: Actor,
        reason: &str,
    ) -> Result<Submission> {
        let id = match target.into() {
            ForgetTarget::Id(id) => id,
            ForgetTarget::Key { partner, key } => self.store().get_by_key(&partner, &key).await?.id,
        };
        let forgotten = self
            .store()
            .forget(id, actor.clone(), reason.to_owned())
            .await?;
        tracing::info!(submission_id = %id, %actor, "submission's personal data erased");
        Ok(forgotten)
    }
}
