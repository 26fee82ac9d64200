//! What a store offers the shared rules: reads (locking the rows read on
//! PostgreSQL), and writes. No rule lives here — a driver method never
//! decides whether something is allowed; [`super::flow`] calls it in the
//! order the rules need, inside the transaction the store opened.
//!
//! SQLite runs each operation on its one writer thread, so its locks are
//! no-ops and its reads see everything before them; PostgreSQL takes row
//! locks (`FOR UPDATE`, `SKIP LOCKED` where work is shared out) and
//! advisory locks, always in one order: callback row, then advisory locks
//! (callback event, body, partner reference), then the submission row.
//!
//! The methods are `async` for PostgreSQL; SQLite's complete on their first
//! poll (see `sqlite::driver`).

use chrono::{DateTime, Utc};

use super::rules::NewEvent;
use super::rules::callbacks::{Earlier, End, Repeat};
use super::rules::delivery::DeliveryWrite;
use super::rules::ledger::{HeldKey, KeyRow};
use super::rules::transition::StateWrite;
use super::{AttemptReport, ClaimRequest, DeliveryClaim, LeaseToken};
use crate::error::Result;
use crate::model::callback::{CallbackId, CallbackReport, Correlation, Dismissal, StoredCallback};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};

/// A submission read for update, with its current lease token.
#[derive(Debug, Clone)]
pub(crate) struct Locked {
    pub(crate) submission: Submission,
    pub(crate) lease: Option<LeaseToken>,
    /// Consecutive leases that ended without a report (`lease_expiries`).
    pub(crate) lease_expiries: u32,
}

/// An unmatched callback waiting for a submission's acceptance.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub(crate) id: CallbackId,
    pub(crate) event_id: Option<String>,
    /// Its reported outcome as recorded.
    pub(crate) outcome: Option<String>,
    pub(crate) match_until: Option<DateTime<Utc>>,
}

// Used generically (never as `dyn`), and crate-private: the futures' Send
// bounds are checked where a concrete store calls the flows.
#[allow(async_fn_in_trait)]
pub(crate) trait Driver {
    // --- submissions ---

    /// A submission as it is (no lock).
    async fn submission(&self, id: SubmissionId) -> Result<Option<Submission>>;

    /// A submission and its lease token, locked until the transaction ends.
    async fn lock_submission(&self, id: SubmissionId) -> Result<Option<Locked>>;

    /// Serialize with everything else recording or matching this partner
    /// reference until the transaction ends.
    async fn lock_reference(&self, _partner: &str, _reference: &str) -> Result<()> {
        Ok(())
    }

    /// Another submission of `partner` that holds `reference`, if any.
    async fn reference_holder(
        &self,
        partner: &str,
        reference: &str,
        except: SubmissionId,
    ) -> Result<Option<SubmissionId>>;

    /// Write a state change (and clear the lease); the row as it is after.
    /// A reference that turns out to be taken is
    /// [`crate::Error::ReferenceTaken`].
    async fn write_state(&self, write: &StateWrite) -> Result<Submission>;

    /// Append one timeline line (the caller has checked its data).
    async fn append_event(&self, event: &NewEvent) -> Result<()>;

    /// Insert a new, queued submission; the row as stored.
    async fn insert_submission(
        &self,
        id: SubmissionId,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Submission>;

    /// Index the correlation fields of a submission just inserted, as its
    /// row stores them, so a list can find it by one of them.
    async fn index_correlation(&self, id: SubmissionId) -> Result<()>;

    /// Send a submission under another idempotency key from now on.
    async fn set_idempotency_key(&self, id: SubmissionId, key: &str) -> Result<()>;

    /// Move an awaited result's deadline; the row as it is after.
    async fn set_result_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Submission>;

    // --- personal data ---

    /// Lock the callbacks matched to a submission until the transaction
    /// ends (before its row: the order every lock is taken in).
    async fn lock_callbacks_of(&self, _id: SubmissionId) -> Result<()> {
        Ok(())
    }

    /// Erase a submission's personal data as
    /// [`super::rules::privacy::Scope::Forget`] lists it: its row, its
    /// attempts, its timeline so far, its correlation rows, its result
    /// deliveries and the callbacks matched to it.
    async fn erase(&self, id: SubmissionId, now: DateTime<Utc>) -> Result<()>;

    // --- the ledger ---

    /// Record a key unless it is recorded already; `true` when recorded.
    async fn insert_key(&self, row: &KeyRow<'_>) -> Result<bool>;

    /// The ledger's row for a key, locked until the transaction ends.
    async fn held_key(&self, partner: &str, key: &str) -> Result<Option<HeldKey>>;

    /// Remove a key from the ledger.
    async fn delete_key(&self, partner: &str, key: &str) -> Result<()>;

    // --- leases ---

    /// Ids of `request.partner`'s due, queued work in claim order (priority,
    /// due time, enqueue order), at most `request.limit`, leaving out work
    /// whose ordering key has an earlier submission in one of `blocking`.
    /// Rows another claimer holds are skipped.
    async fn due(
        &self,
        request: &ClaimRequest,
        blocking: &[SubmissionState],
    ) -> Result<Vec<SubmissionId>>;

    /// Put a queued submission in flight under `token`, counting the
    /// attempt; `None` when it is no longer queued.
    async fn mark_claimed(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Submission>>;

    /// Record the start of attempt `number` under `token`.
    async fn start_attempt(
        &self,
        id: SubmissionId,
        number: u32,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Record how the attempt under `token` ended (if it is still open).
    async fn finish_attempt(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        report: &AttemptReport,
    ) -> Result<()>;

    /// Work in flight whose lease ended at or before `now`, earliest first,
    /// at most `limit`, locked (rows another transaction holds are skipped).
    async fn expired_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Locked>>;

    // --- callbacks ---

    /// A stored callback, locked until the transaction ends.
    async fn lock_callback(&self, id: CallbackId) -> Result<Option<StoredCallback>>;

    /// A stored callback.
    async fn callback(&self, id: CallbackId) -> Result<StoredCallback>;

    /// Record what a callback reports (`outcome` as
    /// [`super::rules::callbacks::outcome_json`]).
    async fn record_report(
        &self,
        id: CallbackId,
        report: &CallbackReport,
        outcome: &str,
    ) -> Result<()>;

    /// Serialize with every other settle of the same event id, body or
    /// partner reference until the transaction ends.
    async fn lock_report(
        &self,
        _partner: &str,
        _event_id: Option<&str>,
        _body_hash: &str,
        _correlation: &Correlation,
    ) -> Result<()> {
        Ok(())
    }

    /// The first earlier callback of `stored`'s partner with the same event
    /// id or body whose disposition is one of
    /// [`super::rules::callbacks::REPEATABLE`].
    async fn earlier_callback(
        &self,
        stored: &StoredCallback,
        by: Repeat<'_>,
    ) -> Result<Option<Earlier>>;

    /// The submission of `partner` a correlation names (the newest, for a
    /// key or reference), locked until the transaction ends.
    async fn correlated(
        &self,
        partner: &str,
        correlation: &Correlation,
    ) -> Result<Option<Submission>>;

    /// Record a callback's end.
    async fn finish_callback(&self, id: CallbackId, end: &End, now: DateTime<Utc>) -> Result<()>;

    /// Record a callback's dismissal: its disposition becomes `dismissed`
    /// and the dismissal is kept with it (its error and match stay).
    async fn dismiss_callback(&self, id: CallbackId, dismissal: &Dismissal) -> Result<()>;

    /// Unmatched callbacks of `partner` recorded under one of `references`,
    /// oldest first (on PostgreSQL, those another transaction settles right
    /// now are skipped).
    async fn waiting_callbacks(&self, partner: &str, references: &[String])
    -> Result<Vec<Waiting>>;

    // --- result deliveries ---

    /// Record a pending delivery of `submission`'s result, due at `now`, if
    /// its partner's results go to the host
    /// ([`super::OutboxStore::set_result_delivery`]).
    async fn insert_delivery(
        &self,
        id: DeliveryId,
        submission: &Submission,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Ids of due, pending deliveries of `claim.partners` whose lease (if
    /// any) ended, oldest first, at most `claim.limit`, leaving out those
    /// with an earlier undelivered delivery of the same partner and
    /// ordering key (or, without one, of the same submission). Rows another
    /// claimer holds are skipped.
    async fn due_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<DeliveryId>>;

    /// Put a due delivery under `token`, counting the attempt; `None` when
    /// it is no longer due.
    async fn mark_delivery_claimed(
        &self,
        id: DeliveryId,
        token: LeaseToken,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>>;

    /// A delivery and its lease token, locked until the transaction ends.
    async fn lock_delivery(&self, id: DeliveryId)
    -> Result<Option<(Delivery, Option<LeaseToken>)>>;

    /// Write a delivery's end or re-run (and clear its lease).
    async fn write_delivery(&self, write: &DeliveryWrite) -> Result<Delivery>;
}
