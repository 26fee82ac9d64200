//! [`Driver`] for PostgreSQL: the reads and writes the shared rules need,
//! inside the transaction the caller opened (the store's, or the host's).
//!
//! Concurrency between instances rests on PostgreSQL's locks, taken in one
//! order everywhere: callback row, then advisory locks (callback event, body,
//! partner reference), then the submission row. Claims, the reaper and the
//! matching of waiting callbacks skip rows another transaction holds
//! (`FOR UPDATE SKIP LOCKED`). Text cannot hold NUL here: stored texts have
//! it replaced ([`clean`]).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::callbacks::{CALLBACK_COLUMNS, callback_from_row, callback_on};
use super::db::{
    Db, LockClass, cid, clean, clean_opt, get, int, is_unique_violation, sid, to_sid, token_uuid,
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
use crate::store::common::{bounded, from_millis, rows_moved, state_list, to_millis};
use crate::store::driver::{Driver, DueDelivery, Locked, Waiting};
use crate::store::rules::NewEvent;
use crate::store::rules::callbacks::{Among, CallbackRow, Earlier, End, REPEATABLE, Repeat};
use crate::store::rules::delivery::DeliveryWrite;
use crate::store::rules::ledger::{HeldKey, KeyRow};
use crate::store::rules::limits::LimitState;
use crate::store::rules::transition::{StateWrite, reference_taken};
use crate::store::{AttemptReport, ClaimRequest, LeaseToken};

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
    fn stored_text(&self, text: String) -> String {
        match clean(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(cleaned) => cleaned,
        }
    }

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

    async fn lock_submissions(&self, ids: &[SubmissionId]) -> Result<Vec<Locked>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| sid(*id)).collect();
        // In id order: two batches lock their common rows in one order.
        self.query(
            &format!(
                "SELECT {SUBMISSION_COLUMNS}, lease_token, lease_expiries FROM liaison_submissions \
                 WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ),
            &[&ids],
            "lock submissions",
        )
        .await?
        .iter()
        .map(locked)
        .collect()
    }

    async fn lock_references(&self, references: &[(&str, &str)]) -> Result<()> {
        if references.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = references
            .iter()
            .map(|(p, r)| clean(&ref_key(p, r)).into_owned())
            .collect();
        // Taken in the order of their hashed keys, the same for every
        // caller, so two batches cannot deadlock on them.
        self.query(
            "SELECT pg_advisory_xact_lock($1, h) FROM \
             (SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY 1) AS keys",
            &[&(LockClass::PartnerRef as i32), &keys],
            "take advisory locks",
        )
        .await
        .map(drop)
    }

    async fn reference_holders(
        &self,
        wanted: &[(&str, &str, SubmissionId)],
    ) -> Result<Vec<Option<SubmissionId>>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let partners: Vec<&str> = wanted.iter().map(|(p, _, _)| *p).collect();
        let references: Vec<String> = wanted
            .iter()
            .map(|(_, r, _)| clean(r).into_owned())
            .collect();
        let except: Vec<Uuid> = wanted.iter().map(|(_, _, id)| sid(*id)).collect();
        let rows = self
            .query(
                "SELECT w.ord, s.id FROM unnest($1::text[], $2::text[], $3::uuid[]) WITH ORDINALITY \
                      AS w(partner, reference, except_id, ord) \
                 JOIN liaison_submissions s ON s.partner = w.partner \
                  AND s.external_ref = w.reference AND s.id <> w.except_id",
                &[&partners, &references, &except],
                "check external references",
            )
            .await?;
        let mut out = vec![None; wanted.len()];
        for row in &rows {
            let ord: i64 = get(row, 0)?;
            let holder = to_sid("id", get(row, 1)?)?;
            if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
                *slot = Some(holder);
            }
        }
        Ok(out)
    }

    async fn write_state(&self, w: &StateWrite) -> Result<()> {
        let after = &w.after;
        // The change counts itself (see `COUNT_MOVED`).
        static CHANGE: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH m AS (UPDATE liaison_submissions SET state = $2, due_at = $3, \
                     result_deadline = $4, terminal_at = $5, external_ref = $6, last_error = $7, \
                     updated_at = $8, lease_token = NULL, lease_expires_at = NULL, \
                     accepted_at = COALESCE(accepted_at, $9), replays = $10, \
                     attempts_before_cycle = $11, cycle_started_at = $12, result_document = $13, \
                     lease_expiries = COALESCE($14, lease_expiries), counted = NOT counted \
                     WHERE id = $1 AND state = $15 \
                     RETURNING $15::text AS from_state, {COUNTED_COLUMNS}), \
                 d AS ({COUNT_MOVED}) \
                 SELECT COUNT(*) FROM m"
            )
        });
        let written = self
            .query_one(
                &CHANGE,
                &[
                    &sid(after.id),
                    &after.state.as_str(),
                    &to_millis(after.due_at),
                    &after.result_deadline.map(to_millis),
                    &after.terminal_at.map(to_millis),
                    &after.external_ref,
                    &after.last_error,
                    &to_millis(after.updated_at),
                    &w.accepted_at.map(to_millis),
                    &int(after.replays),
                    &int(after.attempts_before_cycle),
                    &to_millis(after.cycle_started_at),
                    &after.result.as_ref().map(ResultDocument::to_stored),
                    &w.lease_expiries.map(int),
                    &w.from.as_str(),
                ],
                "change state",
            )
            .await
            .map_err(|e| match (&after.external_ref, is_unique_violation(&e)) {
                // Taken by a transaction that committed after our check.
                (Some(reference), true) => reference_taken(&after.partner, reference, None),
                _ => e,
            })?;
        let written: i64 = get(&written, 0)?;
        if written != 1 {
            return Err(rows_moved(1, u64::try_from(written).unwrap_or(0)));
        }
        Ok(())
    }

    async fn write_states(&self, writes: &[StateWrite]) -> Result<()> {
        if let [one] = writes {
            return self.write_state(one).await;
        }
        if writes.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = writes.iter().map(|w| sid(w.after.id)).collect();
        let states: Vec<&str> = writes.iter().map(|w| w.after.state.as_str()).collect();
        let due: Vec<i64> = writes.iter().map(|w| to_millis(w.after.due_at)).collect();
        let deadlines: Vec<Option<i64>> = writes
            .iter()
            .map(|w| w.after.result_deadline.map(to_millis))
            .collect();
        let terminal: Vec<Option<i64>> = writes
            .iter()
            .map(|w| w.after.terminal_at.map(to_millis))
            .collect();
        let references: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.after.external_ref.as_deref())
            .collect();
        let errors: Vec<Option<&str>> = writes
            .iter()
            .map(|w| w.after.last_error.as_deref())
            .collect();
        let at: Vec<i64> = writes
            .iter()
            .map(|w| to_millis(w.after.updated_at))
            .collect();
        let accepted: Vec<Option<i64>> = writes
            .iter()
            .map(|w| w.accepted_at.map(to_millis))
            .collect();
        let replays: Vec<i32> = writes.iter().map(|w| int(w.after.replays)).collect();
        let before_cycle: Vec<i32> = writes
            .iter()
            .map(|w| int(w.after.attempts_before_cycle))
            .collect();
        let cycles: Vec<i64> = writes
            .iter()
            .map(|w| to_millis(w.after.cycle_started_at))
            .collect();
        let results: Vec<Option<String>> = writes
            .iter()
            .map(|w| w.after.result.as_ref().map(ResultDocument::to_stored))
            .collect();
        let expiries: Vec<Option<i32>> = writes.iter().map(|w| w.lease_expiries.map(int)).collect();
        let from: Vec<&str> = writes.iter().map(|w| w.from.as_str()).collect();
        // The same columns as `write_state`, one row of arrays per write;
        // the changes count themselves (see `COUNT_MOVED`).
        static CHANGES: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH m AS (UPDATE liaison_submissions SET state = w.w_state, due_at = w.w_due, \
                     result_deadline = w.w_deadline, terminal_at = w.w_terminal, \
                     external_ref = w.w_ref, last_error = w.w_error, updated_at = w.w_at, \
                     lease_token = NULL, lease_expires_at = NULL, \
                     accepted_at = COALESCE(accepted_at, w.w_accepted), replays = w.w_replays, \
                     attempts_before_cycle = w.w_before_cycle, cycle_started_at = w.w_cycle, \
                     result_document = w.w_result, \
                     lease_expiries = COALESCE(w.w_expiries, lease_expiries), counted = NOT counted \
                     FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                                 $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::int[], \
                                 $11::int[], $12::bigint[], $13::text[], $14::int[], $15::text[]) \
                          AS w(w_id, w_state, w_due, w_deadline, w_terminal, w_ref, w_error, w_at, \
                               w_accepted, w_replays, w_before_cycle, w_cycle, w_result, w_expiries, \
                               w_from) \
                     WHERE id = w.w_id AND state = w.w_from \
                     RETURNING w.w_from AS from_state, {COUNTED_COLUMNS}), \
                 d AS ({COUNT_MOVED}) \
                 SELECT COUNT(*) FROM m"
            )
        });
        let written = self
            .query_one(
                &CHANGES,
                &[
                    &ids,
                    &states,
                    &due,
                    &deadlines,
                    &terminal,
                    &references,
                    &errors,
                    &at,
                    &accepted,
                    &replays,
                    &before_cycle,
                    &cycles,
                    &results,
                    &expiries,
                    &from,
                ],
                "change states",
            )
            .await?;
        let written: i64 = get(&written, 0)?;
        if written != writes.len() as i64 {
            return Err(rows_moved(
                writes.len(),
                u64::try_from(written).unwrap_or(0),
            ));
        }
        Ok(())
    }

    async fn append_event(&self, e: &NewEvent) -> Result<()> {
        let line = EventLine::new(e);
        let id = sid(e.id);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&id];
        params.extend(line.params());
        self.execute(
            "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
            &params,
            "append event",
        )
        .await
        .map(drop)
    }

    async fn append_events(&self, events: &[NewEvent]) -> Result<()> {
        match events {
            [] => return Ok(()),
            [one] => return self.append_event(one).await,
            _ => {}
        }
        let ids: Vec<Uuid> = events.iter().map(|e| sid(e.id)).collect();
        let at: Vec<i64> = events.iter().map(|e| to_millis(e.at)).collect();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| clean(e.kind.as_str()).into_owned())
            .collect();
        let from: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.from.map(SubmissionState::as_str))
            .collect();
        let to: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.to.map(SubmissionState::as_str))
            .collect();
        let actors: Vec<String> = events
            .iter()
            .map(|e| clean(e.actor.as_str()).into_owned())
            .collect();
        let reasons: Vec<Option<String>> = events
            .iter()
            .map(|e| clean_opt(bounded(e.reason.as_deref())))
            .collect();
        let data: Vec<Option<String>> = events
            .iter()
            .map(|e| e.data.as_ref().map(Value::to_string))
            .collect();
        // In the order given: the timeline's order is the insertion order.
        self.execute(
            "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
             SELECT e.id, e.at, e.kind, e.from_state, e.to_state, e.actor, e.reason, e.data::json \
             FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[]) WITH ORDINALITY \
                  AS e(id, at, kind, from_state, to_state, actor, reason, data, ord) \
             ORDER BY e.ord",
            &[&ids, &at, &kinds, &from, &to, &actors, &reasons, &data],
            "append events",
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
    ) -> Result<()> {
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH s AS (INSERT INTO liaison_submissions ({NEW_ROW_COLUMNS}) \
                 VALUES ({NEW_ROW_VALUES}) RETURNING {COUNTED_COLUMNS}) {COUNT_NEW}"
            )
        });
        let values = NewRow::new(id, valid, due_at, now);
        self.execute(&INSERT, &values.params(), "insert submission")
            .await
            .map(drop)
    }

    async fn insert_submissions(
        &self,
        rows: &[(SubmissionId, &ValidSubmission, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if let [(id, valid, due_at)] = rows {
            return self.insert_submission(*id, valid, *due_at, now).await;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| sid(*id)).collect();
        let partners: Vec<&str> = rows.iter().map(|(_, v, _)| v.partner.as_str()).collect();
        let kinds: Vec<&str> = rows.iter().map(|(_, v, _)| v.kind.as_str()).collect();
        let payloads: Vec<&str> = rows
            .iter()
            .map(|(_, v, _)| v.payload_json.as_str())
            .collect();
        let fingerprints: Vec<String> = rows
            .iter()
            .map(|(_, v, _)| v.fingerprint.to_string())
            .collect();
        let keys: Vec<&str> = rows
            .iter()
            .map(|(_, v, _)| v.idempotency_key.as_str())
            .collect();
        let ordering: Vec<Option<&str>> = rows
            .iter()
            .map(|(_, v, _)| v.ordering_key.as_deref())
            .collect();
        let correlation: Vec<Option<String>> = rows
            .iter()
            .map(|(_, v, _)| {
                (!v.correlation.is_empty()).then(|| serde_json::json!(v.correlation).to_string())
            })
            .collect();
        let values: Vec<Option<i64>> = rows.iter().map(|(_, v, _)| v.business_value).collect();
        let priorities: Vec<i32> = rows.iter().map(|(_, v, _)| v.priority).collect();
        let due: Vec<i64> = rows.iter().map(|(_, _, d)| to_millis(*d)).collect();
        let not_before: Vec<Option<i64>> = rows
            .iter()
            .map(|(_, v, _)| v.not_before.map(to_millis))
            .collect();
        let currencies: Vec<Option<&str>> = rows
            .iter()
            .map(|(_, v, _)| v.currency.map(|c| c.code()))
            .collect();
        let deadlines: Vec<Option<i64>> = rows
            .iter()
            .map(|(_, v, _)| v.business_deadline.map(to_millis))
            .collect();
        // In the order given: `seq` is the enqueue order.
        static INSERT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH s AS (INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, \
                     idempotency_key, ordering_key, correlation, business_value, priority, state, \
                     attempts, due_at, not_before, created_at, updated_at, currency, business_deadline, \
                     counted) \
                     SELECT r.id, r.partner, r.kind, r.payload::json, r.fingerprint, r.key, r.ordering, \
                            r.correlation::json, r.value, r.priority, 'queued', 0, r.due, r.not_before, \
                            $15, $15, r.currency, r.deadline, TRUE \
                     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                                 $7::text[], $8::text[], $9::bigint[], $10::int[], $11::bigint[], \
                                 $12::bigint[], $13::text[], $14::bigint[]) WITH ORDINALITY \
                          AS r(id, partner, kind, payload, fingerprint, key, ordering, correlation, \
                               value, priority, due, not_before, currency, deadline, ord) \
                     ORDER BY r.ord \
                 RETURNING {COUNTED_COLUMNS}) {COUNT_NEW}"
            )
        });
        self.execute(
            &INSERT,
            &[
                &ids,
                &partners,
                &kinds,
                &payloads,
                &fingerprints,
                &keys,
                &ordering,
                &correlation,
                &values,
                &priorities,
                &due,
                &not_before,
                &currencies,
                &deadlines,
                &to_millis(now),
            ],
            "insert submissions",
        )
        .await
        .map(drop)
    }

    async fn index_correlations(&self, ids: &[SubmissionId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| sid(*id)).collect();
        // As `index_correlation`, for all of them.
        self.execute(
            "INSERT INTO liaison_correlations (submission_seq, partner, name, value) \
             SELECT s.seq, s.partner, j.key, j.value #>> '{}' \
             FROM liaison_submissions s CROSS JOIN LATERAL json_each(s.correlation) j \
             WHERE s.id = ANY($1) AND json_typeof(j.value) = 'string'",
            &[&ids],
            "index correlation fields",
        )
        .await
        .map(drop)
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

    async fn insert_fresh(
        &self,
        key: &KeyRow<'_>,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
    ) -> Result<bool> {
        // Each data-modifying part runs once, and each insert after the
        // key's reads the one before it: the key taken, every row is
        // written; the key held, none is. The correlation rows are the ones
        // `index_correlation` writes.
        static FRESH: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH k AS ( \
                   INSERT INTO liaison_idempotency_keys \
                   (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                   VALUES ($2, $6, $5, $1, $13, $16) \
                   ON CONFLICT (partner, idempotency_key) DO NOTHING RETURNING 1 \
                 ), s AS ( \
                   INSERT INTO liaison_submissions ({NEW_ROW_COLUMNS}) \
                   SELECT {NEW_ROW_VALUES} FROM k \
                   RETURNING id, seq AS fresh_seq, correlation AS fresh_correlation, \
                       {COUNTED_COLUMNS} \
                 ), d AS ({COUNT_NEW}), c AS ( \
                   INSERT INTO liaison_correlations (submission_seq, partner, name, value) \
                   SELECT s.fresh_seq, s.partner, j.key, j.value #>> '{{}}' \
                   FROM s CROSS JOIN LATERAL json_each(s.fresh_correlation) j \
                   WHERE json_typeof(j.value) = 'string' \
                 ) \
                 SELECT 1 FROM s"
            )
        });
        // $1-$15 the row (its id, partner, key and fingerprint also the
        // ledger's), $16 the key's expiry.
        let values = NewRow::new(key.submission, valid, due_at, key.created_at);
        let mut params: Vec<&(dyn ToSql + Sync)> = values.params().to_vec();
        params.push(&key.expires_at);
        Ok(self.query_opt(&FRESH, &params, "enqueue").await?.is_some())
    }

    async fn insert_keys(&self, rows: &[KeyRow<'_>]) -> Result<Vec<bool>> {
        if let [one] = rows {
            return Ok(vec![self.insert_key(one).await?]);
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        // Inserted in key order (the first of equal keys first), the same
        // for every caller, so two batches sharing keys cannot deadlock.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| (rows[a].partner, rows[a].key).cmp(&(rows[b].partner, rows[b].key)));
        let partners: Vec<&str> = order.iter().map(|&i| rows[i].partner).collect();
        let keys: Vec<&str> = order.iter().map(|&i| rows[i].key).collect();
        let fingerprints: Vec<String> = order
            .iter()
            .map(|&i| rows[i].fingerprint.to_string())
            .collect();
        let ids: Vec<Uuid> = order.iter().map(|&i| sid(rows[i].submission)).collect();
        let created: Vec<i64> = order
            .iter()
            .map(|&i| to_millis(rows[i].created_at))
            .collect();
        let expires: Vec<Option<i64>> = order.iter().map(|&i| rows[i].expires_at).collect();
        let recorded: HashSet<Uuid> = self
            .query(
                "INSERT INTO liaison_idempotency_keys \
                 (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                 SELECT k.partner, k.key, k.fingerprint, k.id, k.created, k.expires \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bigint[], $6::bigint[]) \
                      WITH ORDINALITY AS k(partner, key, fingerprint, id, created, expires, ord) \
                 ORDER BY k.ord \
                 ON CONFLICT (partner, idempotency_key) DO NOTHING RETURNING submission_id",
                &[&partners, &keys, &fingerprints, &ids, &created, &expires],
                "record idempotency keys",
            )
            .await?
            .iter()
            .map(|row| get(row, 0))
            .collect::<Result<_>>()?;
        Ok(rows
            .iter()
            .map(|row| recorded.contains(&sid(row.submission)))
            .collect())
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

    async fn claim_due(
        &self,
        request: &ClaimRequest,
        blocking: &[SubmissionState],
        tokens: &[LeaseToken],
        expires_at: DateTime<Utc>,
    ) -> Result<Vec<(Submission, LeaseToken)>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        // The due rows, numbered in claim order, take the tokens in that
        // order; the attempts start from the rows as updated, each with a
        // value of the timeline's sequence that no line will have: the
        // claim's place among the lines (its `claimed` line is read from
        // the attempt); the change counts itself (see `COUNT_MOVED`). The
        // claim's time ($2) is both the due cutoff and the time of the
        // change.
        let sql = format!(
            "WITH due AS ({due}), \
             numbered AS ( \
               SELECT id AS due_id, row_number() OVER (ORDER BY priority DESC, due_at, seq) AS due_n \
               FROM due \
             ), claimed AS ( \
               UPDATE liaison_submissions SET state = 'in_flight', lease_token = c.claim_token, \
                 lease_expires_at = $5, attempts = attempts + 1, updated_at = $2, \
                 counted = NOT counted \
               FROM numbered JOIN unnest($4::uuid[]) WITH ORDINALITY AS c(claim_token, claim_n) \
                    ON c.claim_n = numbered.due_n \
               WHERE id = numbered.due_id AND state = 'queued' \
               RETURNING {SUBMISSION_COLUMNS}, c.claim_token, c.claim_n \
             ), started AS ( \
               INSERT INTO liaison_attempts \
                 (submission_id, number, lease_token, started_at, claim_seq) \
               SELECT id, attempts, claim_token, $2, nextval('liaison_events_seq_seq') FROM claimed \
             ), m AS ( \
               SELECT 'queued'::text AS from_state, {COUNTED_COLUMNS} FROM claimed \
             ), d AS ({COUNT_MOVED}) \
             SELECT * FROM claimed ORDER BY claim_n",
            due = due_sql(blocking),
        );
        let limit = request.limit.min(tokens.len());
        let tokens: Vec<Uuid> = tokens.iter().map(|t| token_uuid(*t)).collect();
        let rows = self
            .query(
                &sql,
                &[
                    &clean(&request.partner).as_ref(),
                    &to_millis(request.now),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                    &tokens,
                    &to_millis(expires_at),
                ],
                "claim due work",
            )
            .await?;
        rows.iter()
            .map(|row| {
                let token: Uuid = get(row, SUBMISSION_WIDTH)?;
                Ok((submission_from_row(row)?, LeaseToken::from_uuid(token)))
            })
            .collect()
    }

    async fn finish_attempts(
        &self,
        ends: &[(SubmissionId, LeaseToken, &AttemptReport)],
    ) -> Result<()> {
        if ends.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = ends.iter().map(|(id, _, _)| sid(*id)).collect();
        let tokens: Vec<Uuid> = ends.iter().map(|(_, t, _)| token_uuid(*t)).collect();
        let finished: Vec<i64> = ends
            .iter()
            .map(|(_, _, r)| to_millis(r.finished_at))
            .collect();
        let outcomes: Vec<&str> = ends.iter().map(|(_, _, r)| r.outcome.as_str()).collect();
        let statuses: Vec<Option<i32>> = ends
            .iter()
            .map(|(_, _, r)| r.http_status.map(i32::from))
            .collect();
        let errors: Vec<Option<String>> = ends
            .iter()
            .map(|(_, _, r)| clean_opt(bounded(r.error.as_deref())))
            .collect();
        self.execute(
            "UPDATE liaison_attempts SET finished_at = f.finished, outcome = f.outcome, \
             http_status = f.status, error = f.error \
             FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::int[], $6::text[]) \
                  AS f(sid, token, finished, outcome, status, error) \
             WHERE submission_id = f.sid AND lease_token = f.token AND finished_at IS NULL",
            &[&ids, &tokens, &finished, &outcomes, &statuses, &errors],
            "finish attempts",
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

    async fn lock_limits(&self, partner: &str, now: DateTime<Utc>) -> Result<LimitState> {
        super::partners::lock_limits_on(self, partner, now).await
    }

    async fn write_rate(&self, partner: &str, tat_us: i64) -> Result<()> {
        super::partners::write_rate_on(self, partner, tat_us).await
    }

    async fn write_waiters(&self, partner: &str, waiters: Option<&str>) -> Result<()> {
        super::partners::write_waiters_on(self, partner, waiters).await
    }

    async fn insert_callback(&self, row: &CallbackRow<'_>) -> Result<()> {
        super::callbacks::insert_on(self, row).await
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
        // reference is matched only once its recording has committed. One
        // round trip, in this order (event, body, reference).
        let event = event_id.map(|e| ref_key(partner, e));
        let body = ref_key(partner, body_hash);
        let reference = match correlation {
            Correlation::ExternalRef(r) => Some(ref_key(partner, r)),
            _ => None,
        };
        let mut locks = Vec::with_capacity(3);
        if let Some(event) = &event {
            locks.push((LockClass::CallbackEvent, event.as_str()));
        }
        locks.push((LockClass::CallbackBody, body.as_str()));
        if let Some(reference) = &reference {
            locks.push((LockClass::PartnerRef, reference.as_str()));
        }
        self.advisory_locks(&locks).await
    }

    async fn earlier_callbacks(
        &self,
        wanted: &[(&StoredCallback, Repeat<'_>)],
        among: Among,
    ) -> Result<Vec<Option<Earlier>>> {
        let mut out = vec![None; wanted.len()];
        if wanted.is_empty() {
            return Ok(out);
        }
        let among = match among {
            Among::Others => "c.id <> w.id",
            Among::Before => "c.seq < (SELECT o.seq FROM liaison_callbacks o WHERE o.id = w.id)",
        };
        let repeatable: Vec<&str> = REPEATABLE.iter().map(|d| d.as_str()).collect();
        let mut partners = Vec::with_capacity(wanted.len());
        let mut values = Vec::with_capacity(wanted.len());
        let mut ids = Vec::with_capacity(wanted.len());
        let mut by_event = Vec::with_capacity(wanted.len());
        for (stored, by) in wanted {
            let (value, event) = match by {
                Repeat::Event(value) => (value, true),
                Repeat::Body(value) => (value, false),
            };
            partners.push(stored.partner.as_str());
            values.push(clean(value).into_owned());
            ids.push(cid(stored.id));
            by_event.push(event);
        }
        // Every key in one statement: of the two branches only the one of
        // the key's kind runs (its condition on `w.by_event` is a one-time
        // filter), each on its own index. Joined to its key, a look-up
        // reads that index even on a schema never analysed, where a plain
        // `partner = $1 AND body_hash = $2` could tie with the narrower
        // (partner, received_at) index and read every callback of the
        // partner.
        let sql = format!(
            "SELECT w.ord, e.outcome, e.submission_id \
             FROM unnest($1::text[], $2::text[], $3::uuid[], $5::bool[]) WITH ORDINALITY \
               AS w(partner, value, id, by_event, ord) \
             CROSS JOIN LATERAL ( \
               (SELECT c.outcome, c.submission_id FROM liaison_callbacks c \
                WHERE w.by_event AND c.partner = w.partner AND c.event_id = w.value \
                  AND {among} AND c.disposition = ANY($4) \
                ORDER BY c.seq LIMIT 1) \
               UNION ALL \
               (SELECT c.outcome, c.submission_id FROM liaison_callbacks c \
                WHERE NOT w.by_event AND c.partner = w.partner AND c.body_hash = w.value \
                  AND {among} AND c.disposition = ANY($4) \
                ORDER BY c.seq LIMIT 1) \
             ) e"
        );
        let rows = self
            .query(
                &sql,
                &[&partners, &values, &ids, &repeatable, &by_event],
                "look for repeated callbacks",
            )
            .await?;
        for row in rows {
            let ord: i64 = get(&row, 0)?;
            let i = usize::try_from(ord - 1)
                .ok()
                .filter(|&i| i < out.len())
                .ok_or_else(|| Error::Storage {
                    operation: "look for repeated callbacks",
                    source: format!("unexpected ordinal {ord}").into(),
                })?;
            let submission: Option<Uuid> = get(&row, 2)?;
            out[i] = Some(Earlier {
                outcome: get(&row, 1)?,
                submission: submission.map(|s| to_sid("submission_id", s)).transpose()?,
            });
        }
        Ok(out)
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

    async fn finish_callbacks(
        &self,
        ends: &[(CallbackId, &End)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        // An end that keeps metadata only rewrites the headers: one at a
        // time, as `finish_callback` writes it.
        if ends.len() < 2 || ends.iter().any(|(_, end)| end.metadata_only.is_some()) {
            for (id, end) in ends {
                self.finish_callback(*id, end, now).await?;
            }
            return Ok(());
        }
        let ids: Vec<Uuid> = ends.iter().map(|(id, _)| cid(*id)).collect();
        let dispositions: Vec<&str> = ends.iter().map(|(_, e)| e.disposition.as_str()).collect();
        let errors: Vec<Option<String>> = ends
            .iter()
            .map(|(_, e)| clean_opt(bounded(e.detail.as_deref())))
            .collect();
        let submissions: Vec<Option<Uuid>> =
            ends.iter().map(|(_, e)| e.submission.map(sid)).collect();
        let untils: Vec<Option<i64>> = ends
            .iter()
            .map(|(_, e)| e.match_until.map(to_millis))
            .collect();
        self.execute(
            "UPDATE liaison_callbacks c SET disposition = u.disposition, error = u.error, \
             submission_id = u.submission_id, processed_at = $6, match_until = u.match_until \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::int8[]) \
               AS u(id, disposition, error, submission_id, match_until) \
             WHERE c.id = u.id",
            &[
                &ids,
                &dispositions,
                &errors,
                &submissions,
                &untils,
                &to_millis(now),
            ],
            "settle callbacks",
        )
        .await
        .map(drop)
    }

    async fn waiting_callbacks(
        &self,
        partner: &str,
        references: &[String],
    ) -> Result<Vec<Waiting>> {
        // Stored cleaned; answered as the caller gave it.
        let given: HashMap<String, &String> = references
            .iter()
            .map(|r| (clean(r).into_owned(), r))
            .collect();
        let cleaned: Vec<&String> = given.keys().collect();
        // A waiting callback that another transaction settles right now is
        // skipped: that settle finds the submission as this one leaves it.
        // The callback's columns, then its reference, outcome and window.
        let extra = CALLBACK_COLUMNS.split(',').count();
        self.query(
            &format!(
                "SELECT {CALLBACK_COLUMNS}, reference, outcome, match_until FROM liaison_callbacks \
                 WHERE partner = $1 AND disposition = 'unmatched' AND reference = ANY($2) \
                 ORDER BY seq FOR UPDATE SKIP LOCKED"
            ),
            &[&partner, &cleaned],
            "find waiting callbacks",
        )
        .await?
        .iter()
        .map(|row| {
            let under: String = get(row, extra)?;
            Ok(Waiting {
                stored: callback_from_row(row)?,
                reference: given.get(&under).map_or(under.clone(), |r| (*r).clone()),
                outcome: get(row, extra + 1)?,
                match_until: get::<Option<i64>>(row, extra + 2)?.map(from_millis),
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

    async fn insert_deliveries(
        &self,
        deliveries: &[(DeliveryId, &Submission)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = deliveries.iter().map(|(id, _)| id.uuid()).collect();
        let submissions: Vec<Uuid> = deliveries.iter().map(|(_, s)| sid(s.id)).collect();
        // As `insert_delivery`, in the order given (deliveries of one
        // submission go in their sequence order).
        self.execute(
            "INSERT INTO liaison_deliveries (id, submission_id, submission_seq, partner, \
             ordering_key, final_state, state, attempts, due_at, created_at, updated_at) \
             SELECT d.id, s.id, s.seq, s.partner, s.ordering_key, s.state, 'pending', 0, $3, $3, $3 \
             FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS d(id, submission_id, ord) \
             JOIN liaison_submissions s ON s.id = d.submission_id \
             JOIN liaison_partners p ON p.partner = s.partner AND p.deliver_results \
             ORDER BY d.ord",
            &[&ids, &submissions, &to_millis(now)],
            "record result deliveries",
        )
        .await
        .map(drop)
    }

    async fn due_deliveries(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        let partner = clean(partner);
        // An earlier delivery being claimed right now is still pending in
        // this statement's snapshot, so it holds the later ones back.
        self.query(
            "SELECT d.id, d.due_at, d.seq FROM liaison_deliveries d \
             WHERE d.state = 'pending' AND d.partner = $1 \
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
                &partner.as_ref(),
                &to_millis(now),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
            "find due deliveries",
        )
        .await?
        .iter()
        .map(|row| {
            Ok(DueDelivery {
                id: DeliveryId::from_uuid(get::<Uuid>(row, 0)?),
                due_at: from_millis(get::<i64>(row, 1)?),
                seq: get::<i64>(row, 2)?,
            })
        })
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

/// Up to `$3` of partner `$1`'s due, queued work at `$2` in claim order,
/// locked. A predecessor being claimed right now is still `queued` in this
/// statement's snapshot, so it holds its successors back; rows another
/// claimer has locked are skipped, never waited for or taken twice.
/// `OFFSET 0` keeps the look for a predecessor a probe of the ordering
/// index per candidate: as a join, the plan a prepared statement settles
/// on hashed every submission of the partner. The blocking states are
/// written out, so the probe reads their short ranges of the index (which
/// carries the state, migration 0025); against a parameter it read every
/// entry of the key.
fn due_sql(blocking: &[SubmissionState]) -> String {
    format!(
        "SELECT s.id, s.priority, s.due_at, s.seq FROM liaison_submissions s \
         WHERE s.partner = $1 AND s.state = 'queued' AND s.due_at <= $2 \
           AND (s.ordering_key IS NULL OR NOT EXISTS ( \
                SELECT 1 FROM liaison_submissions p \
                WHERE p.partner = s.partner AND p.ordering_key = s.ordering_key \
                  AND p.state IN ({}) AND p.seq < s.seq OFFSET 0)) \
         ORDER BY s.priority DESC, s.due_at, s.seq LIMIT $3 \
         FOR UPDATE OF s SKIP LOCKED",
        state_list(blocking.iter().copied())
    )
}

/// The columns a new, queued submission is inserted with, and their values
/// (`$1`-`$15` of [`NewRow::params`]). `counted`: the statement appends the
/// row's state-count delta itself ([`COUNT_NEW`]), so the schema's insert
/// trigger, which counts rows inserted without it (an earlier build's),
/// leaves it alone (migration 0027).
const NEW_ROW_COLUMNS: &str = "id, partner, kind, payload, fingerprint, idempotency_key, \
    ordering_key, correlation, business_value, priority, state, attempts, due_at, not_before, \
    created_at, updated_at, currency, business_deadline, counted";
const NEW_ROW_VALUES: &str = "$1, $2, $3, $4::text::json, $5, $6, $7, $8::text::json, $9, $10, \
    'queued', 0, $11, $12, $13, $13, $14, $15, TRUE";
/// What [`COUNT_NEW`] and [`COUNT_MOVED`] read of the rows a statement
/// inserted or changed, returned by it.
const COUNTED_COLUMNS: &str = "partner, state, currency, business_value";
/// The state-count delta of the rows a data-modifying part named `s` inserted
/// (returning [`COUNTED_COLUMNS`]), as the trigger of migration 0018 computed
/// it; no row when it inserted none.
const COUNT_NEW: &str = "INSERT INTO liaison_state_deltas (partner, state, currency, n, value) \
    SELECT partner, state, COALESCE(currency, ''), COUNT(*), COALESCE(SUM(business_value), 0) \
    FROM s GROUP BY 1, 2, 3";
/// The state-count delta of the rows a data-modifying part named `m`
/// changed (returning `from_state`, the state each row was changed from,
/// then [`COUNTED_COLUMNS`]), as the trigger of migration 0018 computed it:
/// each row whose state changed leaves its old state's count and joins its
/// new one's; no row when nothing moved. A change that appends it flips
/// `counted` on its rows, so that the schema's update trigger, which counts
/// the changes made without it (an earlier build's, a host's own SQL),
/// leaves it alone (migration 0029).
const COUNT_MOVED: &str = "INSERT INTO liaison_state_deltas (partner, state, currency, n, value) \
    SELECT m.partner, CASE WHEN x.n < 0 THEN m.from_state ELSE m.state END, \
           COALESCE(m.currency, ''), SUM(x.n), SUM(x.n * COALESCE(m.business_value, 0)) \
    FROM m JOIN (VALUES (-1), (1)) AS x(n) ON TRUE \
    WHERE m.from_state <> m.state \
    GROUP BY 1, 2, 3 \
    HAVING SUM(x.n) <> 0 OR SUM(x.n * COALESCE(m.business_value, 0)) <> 0";

/// A new submission's values as stored.
struct NewRow<'a> {
    valid: &'a ValidSubmission,
    id: Uuid,
    fingerprint: String,
    correlation: Option<String>,
    due_at: i64,
    not_before: Option<i64>,
    now: i64,
    currency: Option<&'static str>,
    business_deadline: Option<i64>,
}

impl<'a> NewRow<'a> {
    fn new(
        id: SubmissionId,
        valid: &'a ValidSubmission,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        NewRow {
            valid,
            id: sid(id),
            fingerprint: valid.fingerprint.to_string(),
            correlation: (!valid.correlation.is_empty())
                .then(|| serde_json::json!(valid.correlation).to_string()),
            due_at: to_millis(due_at),
            not_before: valid.not_before.map(to_millis),
            now: to_millis(now),
            currency: valid.currency.map(|c| c.code()),
            business_deadline: valid.business_deadline.map(to_millis),
        }
    }

    /// `$1`-`$15` of [`NEW_ROW_VALUES`].
    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.id,
            &self.valid.partner,
            &self.valid.kind,
            &self.valid.payload_json,
            &self.fingerprint,
            &self.valid.idempotency_key,
            &self.valid.ordering_key,
            &self.correlation,
            &self.valid.business_value,
            &self.valid.priority,
            &self.due_at,
            &self.not_before,
            &self.now,
            &self.currency,
            &self.business_deadline,
        ]
    }
}

/// A timeline line's values as stored, but for its submission's id.
struct EventLine<'a> {
    at: i64,
    kind: std::borrow::Cow<'a, str>,
    from: Option<&'static str>,
    to: Option<&'static str>,
    actor: std::borrow::Cow<'a, str>,
    reason: Option<String>,
    data: Option<String>,
}

impl<'a> EventLine<'a> {
    fn new(e: &'a NewEvent) -> Self {
        EventLine {
            at: to_millis(e.at),
            kind: clean(e.kind.as_str()),
            from: e.from.map(SubmissionState::as_str),
            to: e.to.map(SubmissionState::as_str),
            actor: clean(e.actor.as_str()),
            reason: clean_opt(bounded(e.reason.as_deref())),
            data: e.data.as_ref().map(Value::to_string),
        }
    }

    /// at, kind, from, to, actor, reason, data (`data` as text for a
    /// `::text::json` cast).
    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.at,
            &self.kind,
            &self.from,
            &self.to,
            &self.actor,
            &self.reason,
            &self.data,
        ]
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{PostgresStore, begin, in_test_schema, in_tx};
    use super::*;
    use crate::model::submission::NewSubmission;
    use crate::store::rules::transition::apply;
    use crate::store::{ClaimRequest, OutboxStore, PostgresConfig, StateChange};

    /// A change, one or in a batch, whose row is not in the state it was
    /// decided from is refused: a `Storage` error saying how many were,
    /// and once the transaction is rolled back neither the rows nor the
    /// counters moved. (SQLite's side: `sqlite::driver`'s test of the same
    /// name.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_from_a_state_the_row_is_not_in_writes_nothing() {
        in_test_schema("liaison_guard", PostgresConfig::default(), check_guard).await;
    }

    async fn check_guard(store: PostgresStore) {
        use SubmissionState::*;
        let enqueue = |key: &'static str| {
            let store = store.clone();
            async move {
                store
                    .enqueue(
                        NewSubmission::new("bank", "payment", json!({"k": key}))
                            .idempotency_key(key),
                    )
                    .await
                    .expect("enqueue")
                    .submission
            }
        };
        let held = enqueue("g-1").await;
        let queued = enqueue("g-2").await;
        let lease = store
            .claim(ClaimRequest::new("bank", 1, std::time::Duration::from_secs(60)).at(store.now()))
            .await
            .expect("claim")
            .pop()
            .expect("one lease");
        assert_eq!(lease.submission.id, held.id);
        let counts = || {
            let store = store.clone();
            async move {
                let conn = store.conn().await.expect("a connection");
                let rows = conn
                    .query(
                        "SELECT state, n FROM liaison_state_totals \
                         WHERE partner = 'bank' AND n <> 0 ORDER BY state",
                        &[],
                    )
                    .await
                    .expect("read the counters");
                rows.iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                    .collect::<Vec<_>>()
            }
        };
        let before = counts().await;
        assert_eq!(
            before,
            [("in_flight".to_owned(), 1), ("queued".to_owned(), 1)]
        );

        let now = store.now();
        let done = StateChange::to(Succeeded);
        // Right: the claimed row, in flight. Wrong: the queued one,
        // decided as if it were in flight.
        let right = apply(lease.submission.clone(), &done, now).0;
        let mut believed = queued.clone();
        believed.state = InFlight;
        let wrong = apply(believed, &done, now).0;

        let mut conn = store.conn().await.expect("a connection");
        for (writes, says) in [
            (vec![wrong.clone()], "0 of 1"),
            (vec![right, wrong], "1 of 2"),
        ] {
            let tx = begin(&mut conn).await.expect("begin");
            let db = in_tx(&tx);
            let err = if let [one] = writes.as_slice() {
                db.write_state(one).await
            } else {
                db.write_states(&writes).await
            }
            .expect_err("refused");
            assert!(err.is_storage(), "{err:?}");
            let source = std::error::Error::source(&err).map(ToString::to_string);
            assert!(
                source.as_deref().is_some_and(|s| s.contains(says)),
                "{says}: {source:?}"
            );
            drop(db);
            tx.rollback().await.expect("roll back");
        }
        assert_eq!(store.get(held.id).await.unwrap().state, InFlight);
        assert_eq!(store.get(queued.id).await.unwrap().state, Queued);
        assert_eq!(counts().await, before);
    }
}
