//! [`Driver`] for PostgreSQL: the reads and writes the shared rules need,
//! inside the transaction the caller opened (the store's, or the host's).
//!
//! Concurrency between instances rests on PostgreSQL's locks, taken in one
//! order everywhere: callback row, then advisory locks (callback event, body,
//! partner reference), then the submission row. Claims, the reaper and the
//! matching of waiting callbacks skip rows another transaction holds
//! (`FOR UPDATE SKIP LOCKED`). Text cannot hold NUL here: stored texts have
//! it replaced ([`clean`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::callbacks::{CALLBACK_COLUMNS, callback_from_row, callback_on};
use super::db::{
    Db, LockClass, cid, clean, clean_opt, get, is_unique_violation, sid, to_cid, to_sid, token_uuid,
};
use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_WIDTH, delivery_from_row};
use super::queries::{SUBMISSION_COLUMNS, SUBMISSION_WIDTH, find_on, submission_from_row};
use crate::error::{Error, Result};
use crate::model::callback::{
    CallbackId, CallbackReport, Correlation, Dismissal, Disposition, StoredCallback,
};
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::result::ResultDocument;
use crate::model::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};
use crate::store::common::{bounded, from_millis, to_millis};
use crate::store::driver::{Driver, Locked, Waiting};
use crate::store::rules::NewEvent;
use crate::store::rules::callbacks::{Earlier, End, REPEATABLE, Repeat};
use crate::store::rules::delivery::DeliveryWrite;
use crate::store::rules::ledger::{HeldKey, KeyRow};
use crate::store::rules::transition::{StateWrite, reference_taken};
use crate::store::{AttemptReport, ClaimRequest, DeliveryClaim, LeaseToken};

/// The advisory-lock key of a partner's reference, event id or body hash.
fn ref_key(partner: &str, reference: &str) -> String {
    format!("{partner}\u{1f}{reference}")
}

/// A submission row followed by `lease_token, lease_expiries`.
fn locked(row: &tokio_postgres::Row) -> Result<Locked> {
    let token: Option<Uuid> = get(row, SUBMISSION_WIDTH)?;
    let lease_expiries: i32 = get(row, SUBMISSION_WIDTH + 1)?;
    Ok(Locked {
        submission: submission_from_row(row)?,
        lease: token.map(LeaseToken::from_uuid),
        lease_expiries: u32::try_from(lease_expiries).unwrap_or(0),
    })
}

impl Driver for Db<'_> {
    async fn submission(&self, id: SubmissionId) -> Result<Option<Submission>> {
        find_on(self, id).await
    }

    async fn lock_submission(&self, id: SubmissionId) -> Result<Option<Locked>> {
        self.query_opt(
            &format!(
                "SELECT {SUBMISSION_COLUMNS}, lease_token, lease_expiries FROM liaison_submissions \
                 WHERE id = $1 FOR UPDATE"
            ),
            &[&sid(id)],
            "lock submission",
        )
        .await?
        .as_ref()
        .map(locked)
        .transpose()
    }

    async fn lock_reference(&self, partner: &str, reference: &str) -> Result<()> {
        self.advisory_lock(LockClass::PartnerRef, &ref_key(partner, reference))
            .await
    }

    async fn reference_holder(
        &self,
        partner: &str,
        reference: &str,
        except: SubmissionId,
    ) -> Result<Option<SubmissionId>> {
        self.query_opt(
            "SELECT id FROM liaison_submissions \
             WHERE partner = $1 AND external_ref = $2 AND id <> $3",
            &[&partner, &clean(reference).as_ref(), &sid(except)],
            "check external reference",
        )
        .await?
        .map(|row| to_sid("id", get(&row, 0)?))
        .transpose()
    }

    async fn write_state(&self, w: &StateWrite) -> Result<Submission> {
        let external_ref = w.external_ref.clone().map(|r| clean(&r).into_owned());
        let row = self
            .query_one(
                &format!(
                    "UPDATE liaison_submissions SET state = $2, due_at = $3, result_deadline = $4, \
                     terminal_at = $5, external_ref = $6, last_error = $7, updated_at = $8, \
                     lease_token = NULL, lease_expires_at = NULL, \
                     replays = replays + CASE WHEN $9 THEN 1 ELSE 0 END, \
                     attempts_before_cycle = CASE WHEN $9 THEN attempts ELSE attempts_before_cycle END, \
                     cycle_started_at = CASE WHEN $9 THEN $8 ELSE cycle_started_at END, \
                     accepted_at = CASE WHEN $10 THEN COALESCE(accepted_at, $8) ELSE accepted_at END, \
                     result_document = $11, lease_expiries = COALESCE($12, lease_expiries) \
                     WHERE id = $1 RETURNING {SUBMISSION_COLUMNS}"
                ),
                &[
                    &sid(w.id),
                    &w.state.as_str(),
                    &to_millis(w.due_at),
                    &w.result_deadline.map(to_millis),
                    &w.terminal_at.map(to_millis),
                    &external_ref,
                    &clean_opt(w.last_error.clone()),
                    &to_millis(w.at),
                    &w.new_cycle,
                    &w.accepted,
                    &w.result.as_ref().map(ResultDocument::to_stored),
                    &w.lease_expiries.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                ],
                "change state",
            )
            .await
            .map_err(|e| match (&w.external_ref, is_unique_violation(&e)) {
                // Taken by a transaction that committed after our check.
                (Some(reference), true) => reference_taken(&w.partner, reference, None),
                _ => e,
            })?;
        submission_from_row(&row)
    }

    async fn append_event(&self, e: &NewEvent) -> Result<()> {
        self.execute(
            "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
            &[
                &sid(e.id),
                &to_millis(e.at),
                &clean(e.kind.as_str()).as_ref(),
                &e.from.map(SubmissionState::as_str),
                &e.to.map(SubmissionState::as_str),
                &clean(e.actor.as_str()).as_ref(),
                &clean_opt(bounded(e.reason.as_deref())),
                &e.data.as_ref().map(Value::to_string),
            ],
            "append event",
        )
        .await
        .map(drop)
    }

    async fn insert_submission(
        &self,
        id: SubmissionId,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Submission> {
        let correlation = (!valid.correlation.is_empty())
            .then(|| serde_json::json!(valid.correlation).to_string());
        let now = to_millis(now);
        let row = self
            .query_one(
                &format!(
                    "INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, \
                     idempotency_key, ordering_key, correlation, business_value, priority, state, \
                     attempts, due_at, not_before, created_at, updated_at, currency, business_deadline) \
                     VALUES ($1, $2, $3, $4::text::json, $5, $6, $7, $8::text::json, $9, $10, \
                     'queued', 0, $11, $12, $13, $13, $14, $15) RETURNING {SUBMISSION_COLUMNS}"
                ),
                &[
                    &sid(id),
                    &valid.partner,
                    &valid.kind,
                    &valid.payload_json,
                    &valid.fingerprint.to_string(),
                    &valid.idempotency_key,
                    &valid.ordering_key,
                    &correlation,
                    &valid.business_value,
                    &valid.priority,
                    &to_millis(due_at),
                    &valid.not_before.map(to_millis),
                    &now,
                    &valid.currency.map(|c| c.code()),
                    &valid.business_deadline.map(to_millis),
                ],
                "insert submission",
            )
            .await?;
        submission_from_row(&row)
    }

    async fn index_correlation(&self, id: SubmissionId) -> Result<()> {
        // The same rows migration 10 wrote for the submissions before it.
        self.execute(
            "INSERT INTO liaison_correlations (submission_seq, partner, name, value) \
             SELECT s.seq, s.partner, j.key, j.value #>> '{}' \
             FROM liaison_submissions s CROSS JOIN LATERAL json_each(s.correlation) j \
             WHERE s.id = $1 AND json_typeof(j.value) = 'string'",
            &[&sid(id)],
            "index correlation fields",
        )
        .await
        .map(drop)
    }

    async fn lock_callbacks_of(&self, id: SubmissionId) -> Result<()> {
        super::privacy::lock_callbacks_of(self, id).await
    }

    async fn erase(&self, id: SubmissionId, now: DateTime<Utc>) -> Result<()> {
        super::privacy::erase_on(self, id, now).await
    }

    async fn set_idempotency_key(&self, id: SubmissionId, key: &str) -> Result<()> {
        self.execute(
            "UPDATE liaison_submissions SET idempotency_key = $2 WHERE id = $1",
            &[&sid(id), &key],
            "change the idempotency key",
        )
        .await
        .map(drop)
    }

    async fn set_result_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Submission> {
        let row = self
            .query_one(
                &format!(
                    "UPDATE liaison_submissions SET result_deadline = $2, updated_at = $3 \
                     WHERE id = $1 RETURNING {SUBMISSION_COLUMNS}"
                ),
                &[&sid(id), &to_millis(until), &to_millis(now)],
                "move result deadline",
            )
            .await?;
        submission_from_row(&row)
    }

    async fn insert_key(&self, row: &KeyRow<'_>) -> Result<bool> {
        let inserted = self
            .execute(
                "INSERT INTO liaison_idempotency_keys \
                 (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner, idempotency_key) DO NOTHING",
                &[
                    &row.partner,
                    &row.key,
                    &row.fingerprint.to_string(),
                    &sid(row.submission),
                    &to_millis(row.created_at),
                    &row.expires_at,
                ],
                "record idempotency key",
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn held_key(&self, partner: &str, key: &str) -> Result<Option<HeldKey>> {
        self.query_opt(
            "SELECT fingerprint, submission_id, expires_at FROM liaison_idempotency_keys \
             WHERE partner = $1 AND idempotency_key = $2 FOR UPDATE",
            &[&partner, &key],
            "read idempotency ledger",
        )
        .await?
        .map(|row| {
            Ok(HeldKey {
                fingerprint: get(&row, 0)?,
                submission: to_sid("submission_id", get(&row, 1)?)?,
                expires_at: get(&row, 2)?,
            })
        })
        .transpose()
    }

    async fn delete_key(&self, partner: &str, key: &str) -> Result<()> {
        self.execute(
            "DELETE FROM liaison_idempotency_keys WHERE partner = $1 AND idempotency_key = $2",
            &[&partner, &key],
            "prune idempotency key",
        )
        .await
        .map(drop)
    }

    async fn due(
        &self,
        request: &ClaimRequest,
        blocking: &[SubmissionState],
    ) -> Result<Vec<SubmissionId>> {
        let blocking: Vec<&str> = blocking.iter().map(|s| s.as_str()).collect();
        // A predecessor being claimed right now is still `queued` in this
        // statement's snapshot, so it holds its successors back; rows another
        // claimer has locked are skipped, never waited for or taken twice.
        self.query(
            "SELECT s.id FROM liaison_submissions s \
             WHERE s.partner = $1 AND s.state = 'queued' AND s.due_at <= $2 \
               AND (s.ordering_key IS NULL OR NOT EXISTS ( \
                    SELECT 1 FROM liaison_submissions p \
                    WHERE p.partner = s.partner AND p.ordering_key = s.ordering_key \
                      AND p.seq < s.seq AND p.state = ANY($4))) \
             ORDER BY s.priority DESC, s.due_at, s.seq LIMIT $3 \
             FOR UPDATE OF s SKIP LOCKED",
            &[
                &clean(&request.partner).as_ref(),
                &to_millis(request.now),
                &i64::try_from(request.limit).unwrap_or(i64::MAX),
                &blocking,
            ],
            "find due work",
        )
        .await?
        .iter()
        .map(|row| to_sid("id", get(row, 0)?))
        .collect()
    }

    async fn mark_claimed(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Submission>> {
        self.query_opt(
            &format!(
                "UPDATE liaison_submissions SET state = 'in_flight', lease_token = $2, \
                 lease_expires_at = $3, attempts = attempts + 1, updated_at = $4 \
                 WHERE id = $1 AND state = 'queued' RETURNING {SUBMISSION_COLUMNS}"
            ),
            &[
                &sid(id),
                &token_uuid(token),
                &to_millis(expires_at),
                &to_millis(now),
            ],
            "claim submission",
        )
        .await?
        .as_ref()
        .map(submission_from_row)
        .transpose()
    }

    async fn start_attempt(
        &self,
        id: SubmissionId,
        number: u32,
        token: LeaseToken,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at) \
             VALUES ($1, $2, $3, $4)",
            &[
                &sid(id),
                &i32::try_from(number).unwrap_or(i32::MAX),
                &token_uuid(token),
                &to_millis(now),
            ],
            "start attempt",
        )
        .await
        .map(drop)
    }

    async fn finish_attempt(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        report: &AttemptReport,
    ) -> Result<()> {
        self.execute(
            "UPDATE liaison_attempts SET finished_at = $3, outcome = $4, http_status = $5, error = $6 \
             WHERE submission_id = $1 AND lease_token = $2 AND finished_at IS NULL",
            &[
                &sid(id),
                &token_uuid(token),
                &to_millis(report.finished_at),
                &report.outcome.as_str(),
                &report.http_status.map(i32::from),
                &clean_opt(bounded(report.error.as_deref())),
            ],
            "finish attempt",
        )
        .await
        .map(drop)
    }

    async fn expired_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Locked>> {
        // A lease whose holder is reporting right now is skipped: its row is
        // locked.
        self.query(
            &format!(
                "SELECT {SUBMISSION_COLUMNS}, lease_token, lease_expiries FROM liaison_submissions \
                 WHERE state = 'in_flight' AND lease_expires_at <= $1 \
                 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&to_millis(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
            "find expired leases",
        )
        .await?
        .iter()
        .map(locked)
        .collect()
    }

    async fn lock_callback(&self, id: CallbackId) -> Result<Option<StoredCallback>> {
        self.query_opt(
            &format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = $1 FOR UPDATE"),
            &[&cid(id)],
            "lock callback",
        )
        .await?
        .as_ref()
        .map(callback_from_row)
        .transpose()
    }

    async fn callback(&self, id: CallbackId) -> Result<StoredCallback> {
        callback_on(self, id).await
    }

    async fn record_report(
        &self,
        id: CallbackId,
        report: &CallbackReport,
        outcome: &str,
    ) -> Result<()> {
        self.execute(
            "UPDATE liaison_callbacks SET event_id = $2, reference = $3, outcome = $4 WHERE id = $1",
            &[
                &cid(id),
                &report.event_id.as_deref().map(clean).as_deref(),
                &clean(&report.correlation.to_stored()).as_ref(),
                &outcome,
            ],
            "record callback report",
        )
        .await
        .map(drop)
    }

    async fn lock_report(
        &self,
        partner: &str,
        event_id: Option<&str>,
        body_hash: &str,
        correlation: &Correlation,
    ) -> Result<()> {
        // Repeats of one event (or body) settle one after the other, and a
        // reference is matched only once its recording has committed.
        if let Some(event_id) = event_id {
            self.advisory_lock(LockClass::CallbackEvent, &ref_key(partner, event_id))
                .await?;
        }
        self.advisory_lock(LockClass::CallbackBody, &ref_key(partner, body_hash))
            .await?;
        if let Correlation::ExternalRef(r) = correlation {
            self.lock_reference(partner, r).await?;
        }
        Ok(())
    }

    async fn earlier_callback(
        &self,
        stored: &StoredCallback,
        by: Repeat<'_>,
    ) -> Result<Option<Earlier>> {
        let (column, value) = match by {
            Repeat::Event(event_id) => ("event_id", event_id),
            Repeat::Body(hash) => ("body_hash", hash),
        };
        let repeatable: Vec<&str> = REPEATABLE.iter().map(|d| d.as_str()).collect();
        let sql = format!(
            "SELECT outcome, submission_id FROM liaison_callbacks \
             WHERE partner = $1 AND {column} = $2 AND id <> $3 AND disposition = ANY($4) \
             ORDER BY seq LIMIT 1"
        );
        self.query_opt(
            &sql,
            &[
                &stored.partner,
                &clean(value).as_ref(),
                &cid(stored.id),
                &repeatable,
            ],
            "look for repeated callbacks",
        )
        .await?
        .map(|row| {
            let submission: Option<Uuid> = get(&row, 1)?;
            Ok(Earlier {
                outcome: get(&row, 0)?,
                submission: submission.map(|s| to_sid("submission_id", s)).transpose()?,
            })
        })
        .transpose()
    }

    async fn correlated(
        &self,
        partner: &str,
        correlation: &Correlation,
    ) -> Result<Option<Submission>> {
        let (clause, value) = match correlation {
            Correlation::SubmissionId(id) => {
                return Ok(self
                    .lock_submission(*id)
                    .await?
                    .map(|l| l.submission)
                    .filter(|s| s.partner == partner));
            }
            Correlation::ExternalRef(r) => ("external_ref = $2", r.as_str()),
            Correlation::IdempotencyKey(k) => ("idempotency_key = $2", k.as_str()),
        };
        self.query_opt(
            &format!(
                "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
                 WHERE partner = $1 AND {clause} ORDER BY seq DESC LIMIT 1 FOR UPDATE"
            ),
            &[&partner, &clean(value).as_ref()],
            "match callback",
        )
        .await?
        .as_ref()
        .map(submission_from_row)
        .transpose()
    }

    async fn dismiss_callback(&self, id: CallbackId, dismissal: &Dismissal) -> Result<()> {
        self.execute(
            "UPDATE liaison_callbacks SET disposition = $2, dismissed_by = $3, \
             dismissed_at = $4, dismissed_reason = $5, dismissed_from = $6 WHERE id = $1",
            &[
                &cid(id),
                &Disposition::Dismissed.as_str(),
                &clean(dismissal.actor.as_str()).as_ref(),
                &to_millis(dismissal.at),
                &clean(&dismissal.reason).as_ref(),
                &dismissal.from.as_str(),
            ],
            "dismiss callback",
        )
        .await
        .map(drop)
    }

    async fn finish_callback(&self, id: CallbackId, end: &End, now: DateTime<Utc>) -> Result<()> {
        let metadata_only = end
            .metadata_only
            .as_ref()
            .map(|headers| {
                let headers: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (clean(k).into_owned(), clean(v).into_owned()))
                    .collect();
                serde_json::to_string(&headers)
            })
            .transpose()
            .map_err(|e| Error::Storage {
                operation: "encode callback headers",
                source: Box::new(e),
            })?;
        // Metadata only: the body goes and the headers are replaced.
        self.execute(
            "UPDATE liaison_callbacks SET disposition = $2, error = $3, submission_id = $4, \
             processed_at = $5, match_until = $6, \
             headers = COALESCE($7::text::json, headers), \
             body = CASE WHEN $7::text IS NULL THEN body END WHERE id = $1",
            &[
                &cid(id),
                &end.disposition.as_str(),
                &clean_opt(bounded(end.detail.as_deref())),
                &end.submission.map(sid),
                &to_millis(now),
                &end.match_until.map(to_millis),
                &metadata_only,
            ],
            "settle callback",
        )
        .await
        .map(drop)
    }

    async fn waiting_callbacks(
        &self,
        partner: &str,
        references: &[String],
    ) -> Result<Vec<Waiting>> {
        let references: Vec<String> = references.iter().map(|r| clean(r).into_owned()).collect();
        // A waiting callback that another transaction settles right now is
        // skipped: that settle finds the submission as this one leaves it.
        self.query(
            "SELECT id, event_id, outcome, match_until FROM liaison_callbacks \
             WHERE partner = $1 AND disposition = 'unmatched' AND reference = ANY($2) \
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[&partner, &references],
            "find waiting callbacks",
        )
        .await?
        .iter()
        .map(|row| {
            Ok(Waiting {
                id: to_cid(get(row, 0)?)?,
                event_id: get(row, 1)?,
                outcome: get(row, 2)?,
                match_until: get::<Option<i64>>(row, 3)?.map(from_millis),
            })
        })
        .collect()
    }

    async fn insert_delivery(
        &self,
        id: DeliveryId,
        submission: &Submission,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO liaison_deliveries (id, submission_id, submission_seq, partner, \
             ordering_key, final_state, state, attempts, due_at, created_at, updated_at) \
             SELECT $1, s.id, s.seq, s.partner, s.ordering_key, s.state, 'pending', 0, $3, $3, $3 \
             FROM liaison_submissions s \
             JOIN liaison_partners p ON p.partner = s.partner AND p.deliver_results \
             WHERE s.id = $2",
            &[&id.uuid(), &sid(submission.id), &to_millis(now)],
            "record result delivery",
        )
        .await
        .map(drop)
    }

    async fn due_deliveries(&self, claim: &DeliveryClaim) -> Result<Vec<DeliveryId>> {
        let partners: Vec<String> = claim
            .partners
            .iter()
            .map(|p| clean(p).into_owned())
            .collect();
        // An earlier delivery being claimed right now is still pending in
        // this statement's snapshot, so it holds the later ones back.
        self.query(
            "SELECT d.id FROM liaison_deliveries d \
             WHERE d.state = 'pending' AND d.partner = ANY($1) \
               AND d.due_at <= $2 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $2) \
               AND NOT EXISTS (SELECT 1 FROM liaison_deliveries p \
                    WHERE p.submission_id = d.submission_id AND p.seq < d.seq \
                      AND p.state <> 'delivered') \
               AND (d.ordering_key IS NULL OR NOT EXISTS ( \
                    SELECT 1 FROM liaison_deliveries p \
                    WHERE p.partner = d.partner AND p.ordering_key = d.ordering_key \
                      AND p.submission_seq < d.submission_seq AND p.state <> 'delivered')) \
             ORDER BY d.due_at, d.seq LIMIT $3 \
             FOR UPDATE OF d SKIP LOCKED",
            &[
                &partners,
                &to_millis(claim.now),
                &i64::try_from(claim.limit).unwrap_or(i64::MAX),
            ],
            "find due deliveries",
        )
        .await?
        .iter()
        .map(|row| Ok(DeliveryId::from_uuid(get::<Uuid>(row, 0)?)))
        .collect()
    }

    async fn mark_delivery_claimed(
        &self,
        id: DeliveryId,
        token: LeaseToken,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>> {
        self.query_opt(
            &format!(
                "UPDATE liaison_deliveries SET lease_token = $2, lease_expires_at = $3, \
                 attempts = attempts + 1, updated_at = $4 \
                 WHERE id = $1 AND state = 'pending' \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= $4) \
                 RETURNING {DELIVERY_COLUMNS}"
            ),
            &[
                &id.uuid(),
                &token_uuid(token),
                &to_millis(expires_at),
                &to_millis(now),
            ],
            "claim delivery",
        )
        .await?
        .as_ref()
        .map(delivery_from_row)
        .transpose()
    }

    async fn lock_delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(Delivery, Option<LeaseToken>)>> {
        let Some(row) = self
            .query_opt(
                &format!(
                    "SELECT {DELIVERY_COLUMNS}, lease_token FROM liaison_deliveries \
                     WHERE id = $1 FOR UPDATE"
                ),
                &[&id.uuid()],
                "lock delivery",
            )
            .await?
        else {
            return Ok(None);
        };
        let token: Option<Uuid> = get(&row, DELIVERY_WIDTH)?;
        Ok(Some((
            delivery_from_row(&row)?,
            token.map(LeaseToken::from_uuid),
        )))
    }

    async fn write_delivery(&self, w: &DeliveryWrite) -> Result<Delivery> {
        let row = self
            .query_one(
                &format!(
                    "UPDATE liaison_deliveries SET state = $2, due_at = $3, delivered_at = $4, \
                     last_error = $5, updated_at = $6, lease_token = NULL, lease_expires_at = NULL, \
                     attempts = CASE WHEN $7 THEN 0 ELSE attempts END \
                     WHERE id = $1 RETURNING {DELIVERY_COLUMNS}"
                ),
                &[
                    &w.id.uuid(),
                    &w.state.as_str(),
                    &to_millis(w.due_at),
                    &w.delivered_at.map(to_millis),
                    &clean_opt(w.last_error.clone()),
                    &to_millis(w.at),
                    &w.reset_attempts,
                ],
                "end delivery",
            )
            .await?;
        delivery_from_row(&row)
    }
}
