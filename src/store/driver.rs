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
use super::rules::callbacks::{Among, CallbackRow, Earlier, End, Repeat};
use super::rules::delivery::DeliveryWrite;
use super::rules::ledger::{HeldKey, KeyRow};
use super::rules::limits::LimitState;
use super::rules::transition::StateWrite;
use super::{AttemptReport, ClaimRequest, LeaseToken, RoleLease};
use crate::error::Result;
use crate::model::callback::{CallbackId, CallbackReport, Correlation, Dismissal, StoredCallback};
use crate::model::circuit::SharedCircuit;
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};

/// A due delivery as [`Driver::due_deliveries`] finds it, with the keys
/// that order it among other partners' due deliveries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DueDelivery {
    pub(crate) id: DeliveryId,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) seq: i64,
}

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
    /// As stored (read under the caller's lock on it).
    pub(crate) stored: StoredCallback,
    /// The reference it was recorded under: one of those asked for, as
    /// given.
    pub(crate) reference: String,
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

    /// [`Driver::lock_submission`] for several (distinct) submissions, in
    /// any order; missing ones are left out. PostgreSQL locks them in id
    /// order, one statement, so two such calls cannot deadlock.
    async fn lock_submissions(&self, ids: &[SubmissionId]) -> Result<Vec<Locked>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.lock_submission(*id).await?);
        }
        Ok(out)
    }

    /// Serialize with everything else recording or matching this partner
    /// reference until the transaction ends.
    async fn lock_reference(&self, _partner: &str, _reference: &str) -> Result<()> {
        Ok(())
    }

    /// [`Driver::lock_reference`] for several `(partner, reference)`
    /// pairs (PostgreSQL: one statement, in one order for every caller).
    async fn lock_references(&self, references: &[(&str, &str)]) -> Result<()> {
        for (partner, reference) in references {
            self.lock_reference(partner, reference).await?;
        }
        Ok(())
    }

    /// Another submission of `partner` that holds `reference`, if any.
    async fn reference_holder(
        &self,
        partner: &str,
        reference: &str,
        except: SubmissionId,
    ) -> Result<Option<SubmissionId>>;

    /// For each `(partner, reference, except)`, another submission of the
    /// partner that holds the reference, if any (in the order given). One
    /// statement on PostgreSQL.
    async fn reference_holders(
        &self,
        wanted: &[(&str, &str, SubmissionId)],
    ) -> Result<Vec<Option<SubmissionId>>> {
        let mut out = Vec::with_capacity(wanted.len());
        for (partner, reference, except) in wanted {
            out.push(self.reference_holder(partner, reference, *except).await?);
        }
        Ok(out)
    }

    /// Write a state change (and clear the lease) on a row this
    /// transaction holds in `write.from`; a row that is not there, or not
    /// in that state, is an error, nothing written. A reference that turns
    /// out to be taken is [`crate::Error::ReferenceTaken`].
    async fn write_state(&self, write: &StateWrite) -> Result<()>;

    /// [`Driver::write_state`] for several (distinct) submissions. One
    /// statement on PostgreSQL.
    async fn write_states(&self, writes: &[StateWrite]) -> Result<()> {
        for write in writes {
            self.write_state(write).await?;
        }
        Ok(())
    }

    /// `text` as this store keeps it. PostgreSQL's `text` holds no NUL
    /// (each becomes U+FFFD); SQLite keeps any text as given.
    fn stored_text(&self, text: String) -> String {
        text
    }

    /// Append one timeline line (the caller has checked its data).
    async fn append_event(&self, event: &NewEvent) -> Result<()>;

    /// Append timeline lines in this order (the caller has checked their
    /// data). One statement on PostgreSQL.
    async fn append_events(&self, events: &[NewEvent]) -> Result<()> {
        for event in events {
            self.append_event(event).await?;
        }
        Ok(())
    }

    /// Insert a new, queued submission: the row [`super::rules::ledger::created`]
    /// describes.
    async fn insert_submission(
        &self,
        id: SubmissionId,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// [`Driver::insert_submission`] for several, in the order given (which
    /// is their enqueue order). One statement on PostgreSQL.
    async fn insert_submissions(
        &self,
        rows: &[(SubmissionId, &ValidSubmission, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        for (id, valid, due_at) in rows {
            self.insert_submission(*id, valid, *due_at, now).await?;
        }
        Ok(())
    }

    /// Index the correlation fields of a submission just inserted, as its
    /// row stores them, so a list can find it by one of them.
    async fn index_correlation(&self, id: SubmissionId) -> Result<()>;

    /// [`Driver::index_correlation`] for several (one statement on
    /// PostgreSQL).
    async fn index_correlations(&self, ids: &[SubmissionId]) -> Result<()> {
        for id in ids {
            self.index_correlation(*id).await?;
        }
        Ok(())
    }

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

    /// Create a submission if its key is free: record the key, insert the
    /// queued row (as [`Driver::insert_submission`]) and index its
    /// correlation fields (the caller has checked its data; its timeline's
    /// first line is read from the row). `false`, with nothing written,
    /// when the key is recorded already. One statement on PostgreSQL, so an
    /// enqueue outside a host's transaction is one round trip when the key
    /// is new.
    async fn insert_fresh(
        &self,
        key: &KeyRow<'_>,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
    ) -> Result<bool> {
        if !self.insert_key(key).await? {
            return Ok(false);
        }
        self.insert_submission(key.submission, valid, due_at, key.created_at)
            .await?;
        if !valid.correlation.is_empty() {
            self.index_correlation(key.submission).await?;
        }
        Ok(true)
    }

    /// [`Driver::insert_key`] for several, in the order given (of two rows
    /// with one key, the first is recorded); whether each was recorded.
    /// One statement on PostgreSQL.
    async fn insert_keys(&self, rows: &[KeyRow<'_>]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(self.insert_key(row).await?);
        }
        Ok(out)
    }

    /// The ledger's row for a key, locked until the transaction ends.
    async fn held_key(&self, partner: &str, key: &str) -> Result<Option<HeldKey>>;

    /// Remove a key from the ledger.
    async fn delete_key(&self, partner: &str, key: &str) -> Result<()>;

    // --- leases ---

    /// Claim due work: of `request.partner`'s due, queued work in claim
    /// order (priority, due time, enqueue order), leaving out work whose
    /// ordering key has an earlier submission in one of `blocking` and rows
    /// another claimer holds, take up to `request.limit` and at most one
    /// per token; put each in flight under its token, counting the attempt,
    /// and record the attempt's start. The rows as they are after, each
    /// with its token, in claim order. One statement on PostgreSQL, so the
    /// partner's row (locked by a claim under limits) is held for fewer
    /// round trips.
    async fn claim_due(
        &self,
        request: &ClaimRequest,
        blocking: &[SubmissionState],
        tokens: &[LeaseToken],
        expires_at: DateTime<Utc>,
    ) -> Result<Vec<(Submission, LeaseToken)>>;

    /// Record how the attempt under `token` ended (if it is still open).
    async fn finish_attempt(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        report: &AttemptReport,
    ) -> Result<()>;

    /// [`Driver::finish_attempt`] for several attempts (one statement on
    /// PostgreSQL).
    async fn finish_attempts(
        &self,
        ends: &[(SubmissionId, LeaseToken, &AttemptReport)],
    ) -> Result<()> {
        for (id, token, report) in ends {
            self.finish_attempt(*id, *token, report).await?;
        }
        Ok(())
    }

    /// Work in flight whose lease ended at or before `now`, earliest first,
    /// at most `limit`, locked (rows another transaction holds are skipped).
    async fn expired_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Locked>>;

    // --- partner limits ---

    /// Lock `partner`'s shared row until the transaction ends (creating it
    /// when missing), then read what its limits need: its submissions in
    /// flight under a lease that ends after `now`, its rate state and who
    /// waits for its slots.
    /// Read after the lock, so the count includes every claim of the
    /// partner committed before.
    async fn lock_limits(&self, partner: &str, now: DateTime<Utc>) -> Result<LimitState>;

    /// Store `partner`'s rate state (its row is locked).
    async fn write_rate(&self, partner: &str, tat_us: i64) -> Result<()>;

    /// Store who waits for `partner`'s slots, as
    /// [`super::rules::limits::waiters_after`] wrote it (`None`: nobody;
    /// its row is locked).
    async fn write_waiters(&self, partner: &str, waiters: Option<&str>) -> Result<()>;

    // --- callbacks ---

    /// Write a callback's row whole, in one insert: as it arrived, or
    /// settled in this transaction (its report and end included). No other
    /// transaction sees it before the commit: it needs no lock.
    async fn insert_callback(&self, row: &CallbackRow<'_>) -> Result<()>;

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

    /// For each callback, by its own key: the first (in arrival order) of
    /// its partner's callbacks `among` says, with the same event id or body,
    /// whose disposition is one of
    /// [`super::rules::callbacks::REPEATABLE`]. The answers in the order
    /// given; one statement for all of them on PostgreSQL.
    async fn earlier_callbacks(
        &self,
        wanted: &[(&StoredCallback, Repeat<'_>)],
        among: Among,
    ) -> Result<Vec<Option<Earlier>>>;

    /// The submission of `partner` a correlation names (the newest, for a
    /// key or reference), locked until the transaction ends.
    async fn correlated(
        &self,
        partner: &str,
        correlation: &Correlation,
    ) -> Result<Option<Submission>>;

    /// Record a callback's end.
    async fn finish_callback(&self, id: CallbackId, end: &End, now: DateTime<Utc>) -> Result<()>;

    /// [`Driver::finish_callback`] for several (distinct) callbacks. One
    /// statement on PostgreSQL for ends that keep the callback whole.
    async fn finish_callbacks(
        &self,
        ends: &[(CallbackId, &End)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        for (id, end) in ends {
            self.finish_callback(*id, end, now).await?;
        }
        Ok(())
    }

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

    /// [`Driver::insert_delivery`] for several submissions just written
    /// (one statement on PostgreSQL).
    async fn insert_deliveries(
        &self,
        deliveries: &[(DeliveryId, &Submission)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        for (id, submission) in deliveries {
            self.insert_delivery(*id, submission, now).await?;
        }
        Ok(())
    }

    /// Due, pending deliveries of one partner whose lease (if any) ended,
    /// oldest first (due time, then recording order), at most `limit`,
    /// leaving out those with an earlier undelivered delivery of the same
    /// partner and ordering key (or, without one, of the same submission).
    /// Rows another claimer holds are skipped. One partner per call, so the
    /// statement reads the partner's due index in order and stops at
    /// `limit` instead of sorting every pending delivery.
    async fn due_deliveries(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>>;

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

/// What a store offers the rules about the state engine instances share
/// besides the work: each partner's circuit and the roles one instance
/// plays at a time. Kept apart from [`Driver`] (a store implements it in
/// its own file); the same locking as there: row locks on PostgreSQL, the
/// one writer on SQLite.
#[allow(async_fn_in_trait)]
pub(crate) trait SharedDriver {
    /// A partner's circuit, locked until the transaction ends. A partner
    /// without a row gets one (closed, no failures) first, so the lock
    /// always holds something.
    async fn lock_circuit(&self, partner: &str, now: DateTime<Utc>) -> Result<SharedCircuit>;

    /// Write a partner's circuit (its row exists: it was locked).
    async fn write_circuit(&self, circuit: &SharedCircuit, now: DateTime<Utc>) -> Result<()>;

    /// A role's lease, locked until the transaction ends. A role never held
    /// gets a lapsed lease of nobody (holder `""`, expired at the epoch)
    /// first, so the lock always holds something.
    async fn lock_role(&self, role: &str) -> Result<RoleLease>;

    /// Write a role's lease (its row exists: it was locked).
    async fn write_role(&self, lease: &RoleLease) -> Result<()>;
}
