//! [`Driver`] for SQLite: the reads and writes the shared rules need, on
//! the connection of the transaction the caller opened (the writer's, or
//! the host's own). One writer runs at a time, so there is nothing to lock:
//! a read sees everything before it.
//!
//! The writes say `OR FAIL`. Every operation runs in something undone as a
//! whole when it fails: the writer's group (rolled back, then each
//! operation run again in a savepoint of its own) or, in a host's
//! transaction, a savepoint of its own. So a statement needs no undo of
//! its own, and under SQLite's default (`ABORT`) every write that could
//! fail a constraint opened a statement journal and copied each page it
//! touched into it first: about a tenth of the writer's time in no-op
//! dispatch. With `FAIL`, a statement that fails keeps what it wrote
//! before the failure (nothing, for the one-row writes, whose constraints
//! are checked before anything is written) only until the operation
//! around it is undone.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Statement, params};

use super::callbacks::{CALLBACK_COLUMNS, callback_from_row};
use super::counts::Counts;
use super::db::{db_err, parse_column};
use super::deliveries::{DELIVERY_COLUMNS, DELIVERY_WIDTH, delivery_from_row};
use super::queries::{
    SUBMISSION_COLUMNS, SUBMISSION_WIDTH, find_on, submission_columns_sql, submission_from_row,
};
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
use crate::store::rules::transition::StateWrite;
use crate::store::{AttemptReport, ClaimRequest, LeaseToken};

/// Run a flow over SQLite to its end. SQLite's driver never waits on
/// anything but the database, synchronously, so the flow completes on its
/// first poll.
pub(super) fn run<T>(flow: impl Future<Output = Result<T>>) -> Result<T> {
    let mut flow = pin!(flow);
    match flow.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        // Not reachable: no method of `Sql` awaits anything.
        Poll::Pending => Err(Error::Storage {
            operation: "write",
            source: "a SQLite write waited on something other than the database".into(),
        }),
    }
}

/// The connection of an open transaction, as a [`Driver`].
pub(super) struct Sql<'c>(pub(super) &'c Connection);

/// A submission and its lease: [`locked_row`]'s columns.
const READ_LOCKED: &str = concat!(
    "SELECT ",
    submission_columns_sql!(),
    ", lease_token, lease_expiries FROM liaison_submissions WHERE id = ?1"
);

/// One timeline line ([`append_with`]).
const APPEND_EVENT: &str = "INSERT OR FAIL INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// An attempt's end, if it is still open.
const FINISH_ATTEMPT: &str = "UPDATE OR FAIL liaison_attempts SET finished_at = ?3, outcome = ?4, http_status = ?5, error = ?6 \
     WHERE submission_id = ?1 AND lease_token = ?2 AND finished_at IS NULL";

/// A state change ([`state_row`]).
const WRITE_STATE: &str = "UPDATE OR FAIL liaison_submissions SET state = ?2, due_at = ?3, result_deadline = ?4, \
     terminal_at = ?5, external_ref = ?6, last_error = ?7, updated_at = ?8, \
     lease_token = NULL, lease_expires_at = NULL, accepted_at = COALESCE(accepted_at, ?9), \
     replays = ?10, attempts_before_cycle = ?11, cycle_started_at = ?12, \
     result_document = ?13, lease_expiries = COALESCE(?14, lease_expiries) \
     WHERE id = ?1 AND state = ?15";

/// A pending delivery of a submission's result, if its partner's results go
/// to the host.
const INSERT_DELIVERY: &str = "INSERT OR FAIL INTO liaison_deliveries (id, submission_id, submission_seq, partner, \
     ordering_key, final_state, state, attempts, due_at, created_at, updated_at) \
     SELECT ?1, s.id, s.seq, s.partner, s.ordering_key, s.state, 'pending', 0, ?3, ?3, ?3 \
     FROM liaison_submissions s \
     JOIN liaison_partners p ON p.partner = s.partner AND p.deliver_results = 1 \
     WHERE s.id = ?2";

/// A new, queued submission ([`insert_row`]).
const INSERT_SUBMISSION: &str = "INSERT OR FAIL INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, \
     ordering_key, correlation, business_value, priority, state, attempts, due_at, not_before, \
     created_at, updated_at, currency, business_deadline) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?12, ?13, ?13, ?14, ?15)";

/// An idempotency key, unless it is recorded already ([`insert_key_with`]).
const INSERT_KEY: &str = "INSERT OR FAIL INTO liaison_idempotency_keys (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (partner, idempotency_key) DO NOTHING";

/// The statements the batched methods run once per row are prepared once
/// per batch: `prepare_cached` hashes the whole text on every call.
fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    operation: &'static str,
) -> Result<rusqlite::CachedStatement<'c>> {
    conn.prepare_cached(sql).map_err(db_err(operation))
}

/// Run [`APPEND_EVENT`] for one line.
fn append_with(stmt: &mut Statement<'_>, e: &NewEvent) -> Result<()> {
    stmt.execute(params![
        e.id.to_string(),
        to_millis(e.at),
        e.kind.as_str(),
        e.from.map(SubmissionState::as_str),
        e.to.map(SubmissionState::as_str),
        e.actor.as_str(),
        bounded(e.reason.as_deref()),
        e.data.as_ref().map(serde_json::Value::to_string),
    ])
    .map_err(db_err("append event"))
    .map(drop)
}

/// Run [`FINISH_ATTEMPT`] for one attempt.
fn finish_with(
    stmt: &mut Statement<'_>,
    id: SubmissionId,
    token: LeaseToken,
    report: &AttemptReport,
) -> Result<()> {
    stmt.execute(params![
        id.to_string(),
        token.to_string(),
        to_millis(report.finished_at),
        report.outcome.as_str(),
        report.http_status,
        bounded(report.error.as_deref()),
    ])
    .map_err(db_err("finish attempt"))
    .map(drop)
}

/// Run [`READ_LOCKED`] for one submission.
fn read_locked_with(stmt: &mut Statement<'_>, id: SubmissionId) -> Result<Option<Locked>> {
    stmt.query_row(params![id.to_string()], locked_row)
        .optional()
        .map_err(db_err("read submission"))?
        .map(locked)
        .transpose()
}

/// Run [`INSERT_DELIVERY`] for one submission.
fn deliver_with(
    stmt: &mut Statement<'_>,
    id: DeliveryId,
    submission: SubmissionId,
    now: DateTime<Utc>,
) -> Result<()> {
    stmt.execute(params![
        id.to_string(),
        submission.to_string(),
        to_millis(now)
    ])
    .map_err(db_err("record result delivery"))
    .map(drop)
}

/// `(?1, ?2, ...)` placeholders from `first`, `n` of them.
fn marks(first: usize, n: usize) -> String {
    let marks: Vec<String> = (first..first + n).map(|i| format!("?{i}")).collect();
    format!("({})", marks.join(", "))
}

/// A submission row followed by `lease_token, lease_expiries`.
fn locked_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Submission, Option<String>, u32)> {
    Ok((
        submission_from_row(row)?,
        row.get(SUBMISSION_WIDTH)?,
        row.get(SUBMISSION_WIDTH + 1)?,
    ))
}

fn locked(
    (submission, token, lease_expiries): (Submission, Option<String>, u32),
) -> Result<Locked> {
    Ok(Locked {
        submission,
        lease: token.map(|t| parse_column("lease_token", &t)).transpose()?,
        lease_expiries,
    })
}

impl Sql<'_> {
    /// One key of [`Driver::earlier_callbacks`].
    fn earlier_callback(
        &self,
        stored: &StoredCallback,
        by: Repeat<'_>,
        among: Among,
    ) -> Result<Option<Earlier>> {
        let (column, value) = match by {
            Repeat::Event(event_id) => ("event_id", event_id),
            Repeat::Body(hash) => ("body_hash", hash),
        };
        let among = match among {
            Among::Others => "id <> ?3",
            Among::Before => "seq < (SELECT seq FROM liaison_callbacks WHERE id = ?3)",
        };
        let sql = format!(
            "SELECT outcome, submission_id FROM liaison_callbacks \
             WHERE partner = ?1 AND {column} = ?2 AND {among} \
               AND disposition IN {} \
             ORDER BY seq LIMIT 1",
            marks(4, REPEATABLE.len())
        );
        let row: Option<(Option<String>, Option<String>)> = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                let id = stored.id.to_string();
                let mut args: Vec<&dyn rusqlite::ToSql> = vec![&stored.partner, &value, &id];
                let names: Vec<&str> = REPEATABLE.iter().map(|d| d.as_str()).collect();
                args.extend(names.iter().map(|n| n as &dyn rusqlite::ToSql));
                stmt.query_row(args.as_slice(), |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(db_err("look for repeated callbacks"))?;
        row.map(|(outcome, submission)| {
            Ok(Earlier {
                outcome,
                submission: submission
                    .map(|s| parse_column("submission_id", &s))
                    .transpose()?,
            })
        })
        .transpose()
    }

    /// Whether `partner`'s results go to the host.
    fn takes_results(&self, partner: &str) -> Result<bool> {
        self.0
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM liaison_partners WHERE partner = ?1 AND deliver_results = 1)",
            )
            .and_then(|mut stmt| stmt.query_row(params![partner], |row| row.get(0)))
            .map_err(db_err("read result delivery setting"))
    }
}

impl Driver for Sql<'_> {
    async fn submission(&self, id: SubmissionId) -> Result<Option<Submission>> {
        find_on(self.0, id)
    }

    async fn lock_submission(&self, id: SubmissionId) -> Result<Option<Locked>> {
        let mut stmt = prepare(self.0, READ_LOCKED, "read submission")?;
        read_locked_with(&mut stmt, id)
    }

    async fn lock_submissions(&self, ids: &[SubmissionId]) -> Result<Vec<Locked>> {
        let mut stmt = prepare(self.0, READ_LOCKED, "read submission")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(read_locked_with(&mut stmt, *id)?);
        }
        Ok(out)
    }

    async fn reference_holder(
        &self,
        partner: &str,
        reference: &str,
        except: SubmissionId,
    ) -> Result<Option<SubmissionId>> {
        let holder: Option<String> = self
            .0
            .prepare_cached(
                "SELECT id FROM liaison_submissions WHERE partner = ?1 AND external_ref = ?2 AND id <> ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![partner, reference, except.to_string()], |row| {
                    row.get(0)
                })
                .optional()
            })
            .map_err(db_err("check external reference"))?;
        holder.map(|h| parse_column("id", &h)).transpose()
    }

    async fn write_state(&self, w: &StateWrite) -> Result<()> {
        self.write_states(std::slice::from_ref(w)).await
    }

    async fn write_states(&self, writes: &[StateWrite]) -> Result<()> {
        let mut stmt = prepare(self.0, WRITE_STATE, "change state")?;
        let mut counts = Counts::default();
        for w in writes {
            state_row(&mut stmt, w, &mut counts)?;
        }
        counts.write(self.0)
    }

    async fn append_event(&self, e: &NewEvent) -> Result<()> {
        let mut stmt = prepare(self.0, APPEND_EVENT, "append event")?;
        append_with(&mut stmt, e)
    }

    async fn append_events(&self, events: &[NewEvent]) -> Result<()> {
        let mut stmt = prepare(self.0, APPEND_EVENT, "append event")?;
        events.iter().try_for_each(|e| append_with(&mut stmt, e))
    }

    async fn insert_submission(
        &self,
        id: SubmissionId,
        valid: &ValidSubmission,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.insert_submissions(&[(id, valid, due_at)], now).await
    }

    async fn insert_submissions(
        &self,
        rows: &[(SubmissionId, &ValidSubmission, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut stmt = prepare(self.0, INSERT_SUBMISSION, "insert submission")?;
        let mut counts = Counts::default();
        for row in rows {
            insert_row(&mut stmt, *row, now, &mut counts)?;
        }
        counts.write(self.0)
    }

    async fn index_correlation(&self, id: SubmissionId) -> Result<()> {
        // The same rows migration 10 wrote for the submissions before it.
        self.0
            .prepare_cached(
                "INSERT OR FAIL INTO liaison_correlations (submission_seq, partner, name, value) \
                 SELECT s.seq, s.partner, j.key, j.value \
                 FROM liaison_submissions s, json_each(s.correlation) j \
                 WHERE s.id = ?1 AND j.type = 'text'",
            )
            .and_then(|mut stmt| stmt.execute(params![id.to_string()]))
            .map_err(db_err("index correlation fields"))
            .map(drop)
    }

    async fn erase(&self, id: SubmissionId, now: DateTime<Utc>) -> Result<()> {
        super::privacy::erase_on(self.0, id, now)
    }

    async fn set_idempotency_key(&self, id: SubmissionId, key: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE OR FAIL liaison_submissions SET idempotency_key = ?2 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id.to_string(), key]))
            .map_err(db_err("change the idempotency key"))
            .map(drop)
    }

    async fn set_result_deadline(
        &self,
        id: SubmissionId,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Submission> {
        self.0
            .prepare_cached(&format!(
                "UPDATE OR FAIL liaison_submissions SET result_deadline = ?2, updated_at = ?3 \
                 WHERE id = ?1 RETURNING {SUBMISSION_COLUMNS}"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![id.to_string(), to_millis(until), to_millis(now)],
                    submission_from_row,
                )
            })
            .map_err(db_err("move result deadline"))
    }

    async fn insert_key(&self, row: &KeyRow<'_>) -> Result<bool> {
        let mut stmt = prepare(self.0, INSERT_KEY, "record idempotency key")?;
        insert_key_with(&mut stmt, row)
    }

    async fn insert_keys(&self, rows: &[KeyRow<'_>]) -> Result<Vec<bool>> {
        let mut stmt = prepare(self.0, INSERT_KEY, "record idempotency key")?;
        rows.iter()
            .map(|row| insert_key_with(&mut stmt, row))
            .collect()
    }

    async fn held_key(&self, partner: &str, key: &str) -> Result<Option<HeldKey>> {
        let row: Option<(String, String, Option<i64>)> = self
            .0
            .prepare_cached(
                "SELECT fingerprint, submission_id, expires_at FROM liaison_idempotency_keys \
                 WHERE partner = ?1 AND idempotency_key = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![partner, key], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
            })
            .map_err(db_err("read idempotency ledger"))?;
        row.map(|(fingerprint, submission, expires_at)| {
            Ok(HeldKey {
                fingerprint,
                submission: parse_column("submission_id", &submission)?,
                expires_at,
            })
        })
        .transpose()
    }

    async fn delete_key(&self, partner: &str, key: &str) -> Result<()> {
        self.0
            .prepare_cached(
                "DELETE FROM liaison_idempotency_keys WHERE partner = ?1 AND idempotency_key = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![partner, key]))
            .map_err(db_err("prune idempotency key"))
            .map(drop)
    }

    async fn claim_due(
        &self,
        request: &ClaimRequest,
        blocking: &[SubmissionState],
        tokens: &[LeaseToken],
        expires_at: DateTime<Utc>,
    ) -> Result<Vec<(Submission, LeaseToken)>> {
        // The blocking states are written out: the look for a predecessor
        // reads their short ranges of the ordering index (which carries the
        // state, migration 0025), not every earlier submission of the key.
        let sql = format!(
            "SELECT s.id FROM liaison_submissions s \
             WHERE s.partner = ?1 AND s.state = 'queued' AND s.due_at <= ?2 \
               AND (s.ordering_key IS NULL OR NOT EXISTS ( \
                    SELECT 1 FROM liaison_submissions p \
                    WHERE p.partner = s.partner AND p.ordering_key = s.ordering_key \
                      AND p.state IN ({}) AND p.seq < s.seq)) \
             ORDER BY s.priority DESC, s.due_at, s.seq LIMIT ?3",
            state_list(blocking.iter().copied())
        );
        let limit = request.limit.min(tokens.len());
        let ids: Vec<String> = self
            .0
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![
                        request.partner,
                        to_millis(request.now),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| row.get(0),
                )?
                .collect()
            })
            .map_err(db_err("find due work"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One writer: a cached statement per row costs what a multi-row
        // one would.
        let mut claim = self
            .0
            .prepare_cached(concat!(
                "UPDATE OR FAIL liaison_submissions SET state = 'in_flight', lease_token = ?2, \
                 lease_expires_at = ?3, attempts = attempts + 1, updated_at = ?4 \
                 WHERE id = ?1 AND state = 'queued' RETURNING ",
                submission_columns_sql!()
            ))
            .map_err(db_err("claim submission"))?;
        let mut start = self
            .0
            .prepare_cached(
                "INSERT OR FAIL INTO liaison_attempts \
                 (submission_id, number, lease_token, started_at, claim_seq) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db_err("start attempt"))?;
        // The claim's place among the timeline's lines: one writer, so
        // every line written before it has at most the last `seq` written,
        // and every later one a greater `seq`.
        let claim_seq: i64 = self
            .0
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM liaison_events")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .map_err(db_err("place the claims"))?;
        let now = to_millis(request.now);
        let mut out = Vec::with_capacity(ids.len());
        let mut counts = Counts::default();
        for (id, token) in ids.iter().zip(tokens) {
            let row = claim
                .query_row(
                    params![id, token.to_string(), to_millis(expires_at), now],
                    submission_from_row,
                )
                .optional()
                .map_err(db_err("claim submission"))?;
            let Some(submission) = row else { continue };
            start
                .execute(params![
                    id,
                    submission.attempts,
                    token.to_string(),
                    now,
                    claim_seq
                ])
                .map_err(db_err("start attempt"))?;
            counts.moved(&submission, SubmissionState::Queued);
            out.push((submission, *token));
        }
        counts.write(self.0)?;
        Ok(out)
    }

    async fn finish_attempt(
        &self,
        id: SubmissionId,
        token: LeaseToken,
        report: &AttemptReport,
    ) -> Result<()> {
        let mut stmt = prepare(self.0, FINISH_ATTEMPT, "finish attempt")?;
        finish_with(&mut stmt, id, token, report)
    }

    async fn finish_attempts(
        &self,
        ends: &[(SubmissionId, LeaseToken, &AttemptReport)],
    ) -> Result<()> {
        let mut stmt = prepare(self.0, FINISH_ATTEMPT, "finish attempt")?;
        ends.iter()
            .try_for_each(|(id, token, report)| finish_with(&mut stmt, *id, *token, report))
    }

    async fn expired_leases(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Locked>> {
        let rows: Vec<(Submission, Option<String>, u32)> = self
            .0
            .prepare_cached(&format!(
                "SELECT {SUBMISSION_COLUMNS}, lease_token, lease_expiries FROM liaison_submissions \
                 WHERE state = 'in_flight' AND lease_expires_at <= ?1 \
                 ORDER BY lease_expires_at LIMIT ?2"
            ))
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![to_millis(now), i64::try_from(limit).unwrap_or(i64::MAX)],
                    locked_row,
                )?
                .collect()
            })
            .map_err(db_err("find expired leases"))?;
        rows.into_iter().map(locked).collect()
    }

    async fn lock_limits(&self, partner: &str, now: DateTime<Utc>) -> Result<LimitState> {
        super::partners::lock_limits_on(self.0, partner, now)
    }

    async fn write_rate(&self, partner: &str, tat_us: i64) -> Result<()> {
        super::partners::write_rate_on(self.0, partner, tat_us)
    }

    async fn write_waiters(&self, partner: &str, waiters: Option<&str>) -> Result<()> {
        super::partners::write_waiters_on(self.0, partner, waiters)
    }

    async fn insert_callback(&self, row: &CallbackRow<'_>) -> Result<()> {
        super::callbacks::insert_on(self.0, row)
    }

    async fn lock_callback(&self, id: CallbackId) -> Result<Option<StoredCallback>> {
        self.0
            .prepare_cached(&format!(
                "SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = ?1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![id.to_string()], callback_from_row)
                    .optional()
            })
            .map_err(db_err("read callback"))
    }

    async fn callback(&self, id: CallbackId) -> Result<StoredCallback> {
        super::callbacks::callback_on(self.0, id)
    }

    async fn record_report(
        &self,
        id: CallbackId,
        report: &CallbackReport,
        outcome: &str,
    ) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE OR FAIL liaison_callbacks SET event_id = ?2, reference = ?3, outcome = ?4 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.to_string(),
                    report.event_id,
                    report.correlation.to_stored(),
                    outcome,
                ])
            })
            .map_err(db_err("record callback report"))
            .map(drop)
    }

    async fn earlier_callbacks(
        &self,
        wanted: &[(&StoredCallback, Repeat<'_>)],
        among: Among,
    ) -> Result<Vec<Option<Earlier>>> {
        // One writer: a cached statement per key costs what one statement
        // for all would.
        wanted
            .iter()
            .map(|(stored, by)| self.earlier_callback(stored, *by, among))
            .collect()
    }

    async fn correlated(
        &self,
        partner: &str,
        correlation: &Correlation,
    ) -> Result<Option<Submission>> {
        let (clause, value) = match correlation {
            Correlation::SubmissionId(id) => {
                return Ok(find_on(self.0, *id)?.filter(|s| s.partner == partner));
            }
            Correlation::ExternalRef(r) => ("external_ref = ?2", r.as_str()),
            Correlation::IdempotencyKey(k) => ("idempotency_key = ?2", k.as_str()),
        };
        self.0
            .prepare_cached(&format!(
                "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
                 WHERE partner = ?1 AND {clause} ORDER BY seq DESC LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![partner, value], submission_from_row)
                    .optional()
            })
            .map_err(db_err("match callback"))
    }

    async fn dismiss_callback(&self, id: CallbackId, dismissal: &Dismissal) -> Result<()> {
        self.0
            .prepare_cached(
                "UPDATE OR FAIL liaison_callbacks SET disposition = ?2, dismissed_by = ?3, \
                 dismissed_at = ?4, dismissed_reason = ?5, dismissed_from = ?6 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.to_string(),
                    Disposition::Dismissed.as_str(),
                    dismissal.actor.as_str(),
                    to_millis(dismissal.at),
                    dismissal.reason,
                    dismissal.from.as_str(),
                ])
            })
            .map_err(db_err("dismiss callback"))
            .map(drop)
    }

    async fn finish_callback(&self, id: CallbackId, end: &End, now: DateTime<Utc>) -> Result<()> {
        let metadata_only = end
            .metadata_only
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Storage {
                operation: "encode callback headers",
                source: Box::new(e),
            })?;
        // Metadata only: the body goes and the headers are replaced.
        self.0
            .prepare_cached(
                "UPDATE OR FAIL liaison_callbacks SET disposition = ?2, error = ?3, submission_id = ?4, \
                 processed_at = ?5, match_until = ?6, headers = coalesce(?7, headers), \
                 body = CASE WHEN ?7 IS NULL THEN body END WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.to_string(),
                    end.disposition.as_str(),
                    bounded(end.detail.as_deref()),
                    end.submission.map(|s| s.to_string()),
                    to_millis(now),
                    end.match_until.map(to_millis),
                    metadata_only,
                ])
            })
            .map_err(db_err("settle callback"))
            .map(drop)
    }

    async fn waiting_callbacks(
        &self,
        partner: &str,
        references: &[String],
    ) -> Result<Vec<Waiting>> {
        // The callback's columns, then its reference, outcome and window.
        let sql = format!(
            "SELECT {CALLBACK_COLUMNS}, reference, outcome, match_until FROM liaison_callbacks \
             WHERE partner = ?1 AND disposition = 'unmatched' AND reference IN {} \
             ORDER BY seq",
            marks(2, references.len())
        );
        let extra = CALLBACK_COLUMNS.split(',').count();
        self.0
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                let mut args: Vec<&dyn rusqlite::ToSql> = vec![&partner];
                args.extend(references.iter().map(|r| r as &dyn rusqlite::ToSql));
                stmt.query_map(args.as_slice(), |row| {
                    Ok(Waiting {
                        stored: callback_from_row(row)?,
                        reference: row.get(extra)?,
                        outcome: row.get(extra + 1)?,
                        match_until: row.get::<_, Option<i64>>(extra + 2)?.map(from_millis),
                    })
                })?
                .collect()
            })
            .map_err(db_err("find waiting callbacks"))
    }

    async fn insert_delivery(
        &self,
        id: DeliveryId,
        submission: &Submission,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut stmt = prepare(self.0, INSERT_DELIVERY, "record result delivery")?;
        deliver_with(&mut stmt, id, submission.id, now)
    }

    async fn insert_deliveries(
        &self,
        deliveries: &[(DeliveryId, &Submission)],
        now: DateTime<Utc>,
    ) -> Result<()> {
        // Most partners take no results: look once per partner of the
        // batch, and run the insert only for those that do.
        let mut takes: Vec<(&str, bool)> = Vec::new();
        let mut stmt = prepare(self.0, INSERT_DELIVERY, "record result delivery")?;
        for (id, submission) in deliveries {
            let partner = submission.partner.as_str();
            let take = match takes.iter().find(|(p, _)| *p == partner) {
                Some((_, take)) => *take,
                None => {
                    let take = self.takes_results(partner)?;
                    takes.push((partner, take));
                    take
                }
            };
            if take {
                deliver_with(&mut stmt, *id, submission.id, now)?;
            }
        }
        Ok(())
    }

    async fn due_deliveries(
        &self,
        partner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        // `liaison_deliveries_due` is (partner, due_at) and ends in the
        // rowid (`seq`): for one partner it is already in this order.
        let rows: Vec<(String, i64, i64)> = self
            .0
            .prepare_cached(
                "SELECT d.id, d.due_at, d.seq FROM liaison_deliveries d \
                 INDEXED BY liaison_deliveries_due \
                 WHERE d.state = 'pending' AND d.partner = ?1 \
                   AND d.due_at <= ?2 AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= ?2) \
                   AND NOT EXISTS (SELECT 1 FROM liaison_deliveries p \
                        WHERE p.submission_id = d.submission_id AND p.seq < d.seq \
                          AND p.state <> 'delivered') \
                   AND (d.ordering_key IS NULL OR NOT EXISTS ( \
                        SELECT 1 FROM liaison_deliveries p \
                        WHERE p.partner = d.partner AND p.ordering_key = d.ordering_key \
                          AND p.submission_seq < d.submission_seq AND p.state <> 'delivered')) \
                 ORDER BY d.due_at, d.seq LIMIT ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_map(
                    params![
                        partner,
                        to_millis(now),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )?
                .collect()
            })
            .map_err(db_err("find due deliveries"))?;
        rows.into_iter()
            .map(|(id, due_at, seq)| {
                Ok(DueDelivery {
                    id: parse_column("id", &id)?,
                    due_at: from_millis(due_at),
                    seq,
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
        self.0
            .prepare_cached(&format!(
                "UPDATE OR FAIL liaison_deliveries SET lease_token = ?2, lease_expires_at = ?3, \
                 attempts = attempts + 1, updated_at = ?4 \
                 WHERE id = ?1 AND state = 'pending' \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= ?4) \
                 RETURNING {DELIVERY_COLUMNS}"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        id.to_string(),
                        token.to_string(),
                        to_millis(expires_at),
                        to_millis(now)
                    ],
                    delivery_from_row,
                )
                .optional()
            })
            .map_err(db_err("claim delivery"))
    }

    async fn lock_delivery(
        &self,
        id: DeliveryId,
    ) -> Result<Option<(Delivery, Option<LeaseToken>)>> {
        let row: Option<(Delivery, Option<String>)> = self
            .0
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS}, lease_token FROM liaison_deliveries WHERE id = ?1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![id.to_string()], |row| {
                    Ok((delivery_from_row(row)?, row.get(DELIVERY_WIDTH)?))
                })
                .optional()
            })
            .map_err(db_err("read delivery"))?;
        row.map(|(delivery, token)| {
            let token = token.map(|t| parse_column("lease_token", &t)).transpose()?;
            Ok((delivery, token))
        })
        .transpose()
    }

    async fn write_delivery(&self, w: &DeliveryWrite) -> Result<Delivery> {
        self.0
            .prepare_cached(&format!(
                "UPDATE OR FAIL liaison_deliveries SET state = ?2, due_at = ?3, delivered_at = ?4, \
                 last_error = ?5, updated_at = ?6, lease_token = NULL, lease_expires_at = NULL, \
                 attempts = CASE WHEN ?7 THEN 0 ELSE attempts END \
                 WHERE id = ?1 RETURNING {DELIVERY_COLUMNS}"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![
                        w.id.to_string(),
                        w.state.as_str(),
                        to_millis(w.due_at),
                        w.delivered_at.map(to_millis),
                        w.last_error,
                        to_millis(w.at),
                        w.reset_attempts,
                    ],
                    delivery_from_row,
                )
            })
            .map_err(db_err("end delivery"))
    }
}

/// Insert a new, queued submission ([`INSERT_SUBMISSION`]), counting it
/// in `counts`.
fn insert_row(
    stmt: &mut Statement<'_>,
    (id, valid, due_at): (SubmissionId, &ValidSubmission, DateTime<Utc>),
    now: DateTime<Utc>,
    counts: &mut Counts,
) -> Result<()> {
    let correlation =
        (!valid.correlation.is_empty()).then(|| serde_json::json!(valid.correlation).to_string());
    stmt.execute(params![
        id.to_string(),
        valid.partner,
        valid.kind,
        valid.payload_json,
        valid.fingerprint.to_string(),
        valid.idempotency_key,
        valid.ordering_key,
        correlation,
        valid.business_value,
        valid.priority,
        to_millis(due_at),
        valid.not_before.map(to_millis),
        to_millis(now),
        valid.currency.map(|c| c.code()),
        valid.business_deadline.map(to_millis),
    ])
    .map_err(db_err("insert submission"))?;
    counts.add(
        &valid.partner,
        valid.currency,
        valid.business_value,
        SubmissionState::Queued,
        1,
    );
    Ok(())
}

/// Run [`INSERT_KEY`] for one key; whether it was recorded.
fn insert_key_with(stmt: &mut Statement<'_>, row: &KeyRow<'_>) -> Result<bool> {
    let inserted = stmt
        .execute(params![
            row.partner,
            row.key,
            row.fingerprint.to_string(),
            row.submission.to_string(),
            to_millis(row.created_at),
            row.expires_at,
        ])
        .map_err(db_err("record idempotency key"))?;
    Ok(inserted == 1)
}

/// Run [`WRITE_STATE`] for one change, counting it in `counts`. The row
/// must still be in `w.from` (the state read under the writer's lock); one
/// that is not is refused rather than miscounted.
fn state_row(stmt: &mut Statement<'_>, w: &StateWrite, counts: &mut Counts) -> Result<()> {
    let after = &w.after;
    let written = stmt
        .execute(params![
            after.id.to_string(),
            after.state.as_str(),
            to_millis(after.due_at),
            after.result_deadline.map(to_millis),
            after.terminal_at.map(to_millis),
            after.external_ref,
            after.last_error,
            to_millis(after.updated_at),
            w.accepted_at.map(to_millis),
            after.replays,
            after.attempts_before_cycle,
            to_millis(after.cycle_started_at),
            after.result.as_ref().map(ResultDocument::to_stored),
            w.lease_expiries,
            w.from.as_str(),
        ])
        .map_err(db_err("change state"))?;
    if written != 1 {
        return Err(rows_moved(1, written as u64));
    }
    counts.moved(after, w.from);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change whose row is not in the state it was decided from is
    /// refused, and neither the row nor the counters move.
    #[test]
    fn a_change_from_a_state_the_row_is_not_in_writes_nothing() {
        use crate::model::submission::NewSubmission;
        use crate::store::StateChange;
        use crate::store::rules::transition::apply;
        let conn = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&conn).unwrap();
        let valid = NewSubmission::new("bank", "payment", serde_json::json!({"cents": 5}))
            .idempotency_key("k-1")
            .validate(1024)
            .unwrap();
        let (id, now) = (SubmissionId::new(), Utc::now());
        run(Sql(&conn).insert_submission(id, &valid, now, now)).unwrap();
        let counts = |conn: &Connection| -> Vec<(String, i64)> {
            conn.prepare("SELECT state, n FROM liaison_state_counts WHERE n != 0 ORDER BY state")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        };
        let before = counts(&conn);
        assert_eq!(before, [("queued".to_owned(), 1)]);

        // Decided as if the row were in flight; it is queued.
        let mut believed = crate::store::rules::ledger::created(id, &valid, now, now);
        believed.state = SubmissionState::InFlight;
        let (write, _) = apply(believed, &StateChange::to(SubmissionState::Succeeded), now);
        let err = run(Sql(&conn).write_state(&write)).unwrap_err();
        assert!(err.is_storage(), "{err:?}");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source.as_deref().is_some_and(|s| s.contains("0 of 1")),
            "{source:?}"
        );
        let state: String = conn
            .query_row("SELECT state FROM liaison_submissions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(state, "queued");
        assert_eq!(counts(&conn), before);
    }

    #[test]
    fn a_flow_that_would_wait_is_an_error_not_a_hang() {
        let pending = std::future::pending::<Result<()>>();
        let err = run(pending).unwrap_err();
        assert!(err.is_storage(), "{err:?}");
        assert_eq!(run(async { Ok(7) }).unwrap(), 7);
    }
}
