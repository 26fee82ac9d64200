//! Inbound callbacks in PostgreSQL: stored raw first, then settled in one
//! transaction that recognises repeats and conflicts and applies an outcome
//! at most once — across instances.
//!
//! Settling locks the callback's own row, then serializes with every other
//! settle of the same partner event id and of the same body (advisory
//! locks), and with the recording of the partner reference it names; the
//! submission's row is locked before anything is decided about it. So the
//! same callback delivered to several instances at once is applied once, and
//! a callback racing the acceptance it depends on is either applied by its
//! own settle or matched by the acceptance's transaction.

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::common::{bounded, from_millis, same_outcome, to_millis};
use super::db::{Db, LockClass, cid, clean, clean_opt, corrupt, get, sid, to_cid, to_sid};
use super::queries::{SUBMISSION_COLUMNS, get_on, lock_on, submission_from_row};
use super::write::{NewEvent, append_event, apply_change, ref_key};
use crate::callback::{
    CallbackId, CallbackReceipt, CallbackReport, Correlation, Disposition, ReportedOutcome,
    StoredCallback,
};
use crate::error::{Error, Result};
use crate::event::{Actor, EventKind};
use crate::store::{CallbackFilter, NewCallback, Settlement, StateChange};
use crate::submission::{Submission, SubmissionId, SubmissionState};

const CALLBACK_COLUMNS: &str = "id, partner, received_at, headers::text, body, body_hash, size, \
    event_id, reference, disposition, error, submission_id, processed_at";

fn callback_from_row(row: &Row) -> Result<StoredCallback> {
    let headers: String = get(row, 3)?;
    let reference: Option<String> = get(row, 8)?;
    let disposition: String = get(row, 9)?;
    let submission: Option<Uuid> = get(row, 11)?;
    Ok(StoredCallback {
        id: to_cid(get(row, 0)?)?,
        partner: get(row, 1)?,
        received_at: from_millis(get(row, 2)?),
        headers: serde_json::from_str(&headers).map_err(|e| corrupt("headers", e))?,
        body: get(row, 4)?,
        body_hash: get(row, 5)?,
        size: u64::try_from(get::<i64>(row, 6)?).unwrap_or(0),
        event_id: get(row, 7)?,
        correlation: reference.as_deref().and_then(Correlation::from_stored),
        disposition: disposition.parse().map_err(|e| corrupt("disposition", e))?,
        error: get(row, 10)?,
        submission_id: submission.map(|s| to_sid("submission_id", s)).transpose()?,
        processed_at: get::<Option<i64>>(row, 12)?.map(from_millis),
    })
}

pub(super) async fn record_on(db: &Db<'_>, new: &NewCallback) -> Result<CallbackId> {
    let id = CallbackId::new();
    let headers: Vec<(String, String)> = new
        .headers
        .iter()
        .map(|(k, v)| (clean(k).into_owned(), clean(v).into_owned()))
        .collect();
    let headers = serde_json::to_string(&headers).map_err(|e| Error::Storage {
        operation: "encode callback headers",
        source: Box::new(e),
    })?;
    let settled = (new.disposition != Disposition::Received).then(|| to_millis(new.received_at));
    db.execute(
        "INSERT INTO liaison_callbacks (id, partner, received_at, headers, body, body_hash, size, \
         disposition, error, processed_at) \
         VALUES ($1, $2, $3, $4::text::json, $5, $6, $7, $8, $9, $10)",
        &[
            &cid(id),
            &clean(&new.partner).as_ref(),
            &to_millis(new.received_at),
            &headers,
            &new.body,
            &clean(&new.body_hash).as_ref(),
            &i64::try_from(new.size).unwrap_or(i64::MAX),
            &new.disposition.as_str(),
            &clean_opt(bounded(new.error.as_deref())),
            &settled,
        ],
        "store callback",
    )
    .await?;
    Ok(id)
}

pub(super) async fn callback_on(db: &Db<'_>, id: CallbackId) -> Result<StoredCallback> {
    db.query_opt(
        &format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = $1"),
        &[&cid(id)],
        "read callback",
    )
    .await?
    .as_ref()
    .map(callback_from_row)
    .transpose()?
    .ok_or_else(|| Error::not_found("callback", id))
}

pub(super) async fn list_on(db: &Db<'_>, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
    let mut sql = format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(Box::new(clean(partner).into_owned()));
        sql.push_str(&format!(" AND partner = ${}", args.len()));
    }
    if let Some(id) = filter.submission_id {
        args.push(Box::new(sid(id)));
        sql.push_str(&format!(" AND submission_id = ${}", args.len()));
    }
    if !filter.dispositions.is_empty() {
        let names: Vec<String> = filter
            .dispositions
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        args.push(Box::new(names));
        sql.push_str(&format!(" AND disposition = ANY(${})", args.len()));
    }
    args.push(Box::new(
        i64::try_from(filter.effective_limit()).unwrap_or(100),
    ));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    db.query(&sql, &params, "list callbacks")
        .await?
        .iter()
        .map(callback_from_row)
        .collect()
}

pub(super) async fn settle_on(
    db: &Db<'_>,
    id: CallbackId,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    // One settle of a callback at a time; the second sees what the first did.
    let stored = db
        .query_opt(
            &format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = $1 FOR UPDATE"),
            &[&cid(id)],
            "lock callback",
        )
        .await?
        .as_ref()
        .map(callback_from_row)
        .transpose()?
        .ok_or_else(|| Error::not_found("callback", id))?;
    if !stored.disposition.is_reprocessable() {
        return Err(Error::invalid(
            "callback",
            format!(
                "callback {id} is already {}; only unsettled, unmatched or quarantined callbacks are processed",
                stored.disposition
            ),
        ));
    }
    match settlement {
        Settlement::Rejected { reason } => {
            let end = End::new(Disposition::Rejected).detail(reason);
            finish(db, &stored, end, now).await
        }
        Settlement::Malformed { reason } => {
            let end = End::new(Disposition::Malformed).detail(reason);
            finish(db, &stored, end, now).await
        }
        Settlement::Report {
            report,
            unmatched_until,
        } => {
            let outcome = serde_json::to_string(&report.outcome).map_err(|e| Error::Storage {
                operation: "encode callback outcome",
                source: Box::new(e),
            })?;
            let event_id = report.event_id.as_deref().map(clean);
            let reference = report.correlation.to_stored();
            db.execute(
                "UPDATE liaison_callbacks SET event_id = $2, reference = $3, outcome = $4 WHERE id = $1",
                &[
                    &cid(id),
                    &event_id.as_deref(),
                    &clean(&reference).as_ref(),
                    &outcome,
                ],
                "record callback report",
            )
            .await?;
            // Repeats of one event (or body) settle one after the other, and
            // a reference is matched only once its recording has committed.
            let partner = &stored.partner;
            if let Some(event_id) = &event_id {
                db.advisory_lock(LockClass::CallbackEvent, &ref_key(partner, event_id))
                    .await?;
            }
            db.advisory_lock(
                LockClass::CallbackBody,
                &ref_key(partner, &stored.body_hash),
            )
            .await?;
            if let Correlation::ExternalRef(r) = &report.correlation {
                db.advisory_lock(LockClass::PartnerRef, &ref_key(partner, r))
                    .await?;
            }
            let receipt = apply_report(db, &stored, report, *unmatched_until, now).await?;
            // Reliability tests: the report is applied, its transaction not
            // committed.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("liaison::callback::before_commit");
            Ok(receipt)
        }
    }
}

/// A callback's final disposition and what goes with it.
struct End<'a> {
    disposition: Disposition,
    detail: Option<&'a str>,
    submission: Option<SubmissionId>,
    match_until: Option<DateTime<Utc>>,
}

impl<'a> End<'a> {
    fn new(disposition: Disposition) -> Self {
        End {
            disposition,
            detail: None,
            submission: None,
            match_until: None,
        }
    }

    fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    fn submission(mut self, submission: Option<SubmissionId>) -> Self {
        self.submission = submission;
        self
    }

    fn until(mut self, until: DateTime<Utc>) -> Self {
        self.match_until = Some(until);
        self
    }
}

/// Record the callback's final disposition and build the receipt.
async fn finish(
    db: &Db<'_>,
    stored: &StoredCallback,
    end: End<'_>,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    db.execute(
        "UPDATE liaison_callbacks SET disposition = $2, error = $3, submission_id = $4, \
         processed_at = $5, match_until = $6 WHERE id = $1",
        &[
            &cid(stored.id),
            &end.disposition.as_str(),
            &clean_opt(bounded(end.detail)),
            &end.submission.map(sid),
            &to_millis(now),
            &end.match_until.map(to_millis),
        ],
        "settle callback",
    )
    .await?;
    Ok(CallbackReceipt {
        callback_id: stored.id,
        disposition: end.disposition,
        http_status: end.disposition.http_status(),
        submission_id: end.submission,
        detail: end.detail.map(str::to_owned),
    })
}

/// The earlier callback of this partner that a new one repeats, if any.
struct Earlier {
    outcome: Option<String>,
    submission: Option<SubmissionId>,
}

async fn earlier_by(
    db: &Db<'_>,
    stored: &StoredCallback,
    column: &str,
    value: &str,
) -> Result<Option<Earlier>> {
    let sql = format!(
        "SELECT outcome, submission_id FROM liaison_callbacks \
         WHERE partner = $1 AND {column} = $2 AND id <> $3 \
           AND disposition IN ('applied', 'duplicate', 'late', 'unmatched', 'conflicting') \
         ORDER BY seq LIMIT 1"
    );
    let row = db
        .query_opt(
            &sql,
            &[&stored.partner, &clean(value).as_ref(), &cid(stored.id)],
            "look for repeated callbacks",
        )
        .await?;
    row.map(|row| {
        let submission: Option<Uuid> = get(&row, 1)?;
        Ok(Earlier {
            outcome: get(&row, 0)?,
            submission: submission.map(|s| to_sid("submission_id", s)).transpose()?,
        })
    })
    .transpose()
}

/// The submission a callback names, locked until the transaction ends.
async fn find_by_correlation(
    db: &Db<'_>,
    partner: &str,
    correlation: &Correlation,
) -> Result<Option<Submission>> {
    let (clause, value) = match correlation {
        Correlation::SubmissionId(id) => {
            return match lock_on(db, *id).await {
                Ok((s, _)) => Ok(Some(s).filter(|s| s.partner == partner)),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        Correlation::ExternalRef(r) => ("external_ref = $2", r.as_str()),
        Correlation::IdempotencyKey(k) => ("idempotency_key = $2", k.as_str()),
    };
    db.query_opt(
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

async fn apply_report(
    db: &Db<'_>,
    stored: &StoredCallback,
    report: &CallbackReport,
    unmatched_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    use Disposition::{Applied, Conflicting, Duplicate, Late, Unmatched};
    let outcome_json = serde_json::to_string(&report.outcome).unwrap_or_default();
    let actor = Actor::system("callbacks");

    // A repeat of an earlier delivery: same event id, or the same body.
    if let Some(event_id) = &report.event_id
        && let Some(earlier) = earlier_by(db, stored, "event_id", event_id).await?
    {
        if earlier.outcome.as_deref() == Some(outcome_json.as_str()) {
            let detail = format!("event {event_id:?} was received before");
            let end = End::new(Duplicate)
                .detail(&detail)
                .submission(earlier.submission);
            return finish(db, stored, end, now).await;
        }
        let detail = format!("event {event_id:?} was received before with a different outcome");
        if let Some(id) = earlier.submission {
            note(
                db,
                id,
                EventKind::ConflictingCallback,
                &actor,
                &detail,
                stored,
                now,
            )
            .await?;
        }
        let end = End::new(Conflicting)
            .detail(&detail)
            .submission(earlier.submission);
        return finish(db, stored, end, now).await;
    }
    if let Some(earlier) = earlier_by(db, stored, "body_hash", &stored.body_hash).await?
        && earlier.outcome.as_deref() == Some(outcome_json.as_str())
    {
        let end = End::new(Duplicate)
            .detail("the same body was received before")
            .submission(earlier.submission);
        return finish(db, stored, end, now).await;
    }

    let Some(submission) = find_by_correlation(db, &stored.partner, &report.correlation).await?
    else {
        let detail = format!("no submission matches {} yet", report.correlation);
        let end = End::new(Unmatched).detail(&detail).until(unmatched_until);
        return finish(db, stored, end, now).await;
    };
    let id = submission.id;
    let state = submission.state;
    let matched = |d| End::new(d).submission(Some(id));
    match (state, &report.outcome) {
        (SubmissionState::Cancelled | SubmissionState::ResolvedManually, _) => {
            let detail = format!("the submission was already {state}");
            note(
                db,
                id,
                EventKind::LateCallback,
                &actor,
                &detail,
                stored,
                now,
            )
            .await?;
            finish(db, stored, matched(Late).detail(&detail), now).await
        }
        // The acceptance is not recorded yet (an early callback): keep it;
        // recording the acceptance matches it.
        (SubmissionState::Queued | SubmissionState::InFlight, _) => {
            let detail =
                format!("the submission is {state}; waiting for its acceptance to be recorded");
            let end = matched(Unmatched).detail(&detail).until(unmatched_until);
            finish(db, stored, end, now).await
        }
        (
            SubmissionState::AwaitingResult | SubmissionState::Stuck,
            ReportedOutcome::Progress { note: words },
        ) => {
            let detail = words
                .clone()
                .unwrap_or_else(|| "the partner reports progress".into());
            note(db, id, EventKind::Progress, &actor, &detail, stored, now).await?;
            finish(db, stored, matched(Applied), now).await
        }
        (SubmissionState::AwaitingResult | SubmissionState::Stuck, outcome) => {
            let mut change = match outcome {
                ReportedOutcome::Failed { reason } => {
                    StateChange::to(SubmissionState::Failed).error(reason.clone())
                }
                _ => StateChange::to(SubmissionState::Succeeded),
            }
            .actor(actor)
            .reason("result reported by the partner's callback")
            .data(json!({ "callback_id": stored.id.to_string(), "event_id": report.event_id }));
            change.at = Some(now);
            apply_change(db, &submission, &change, now).await?;
            finish(db, stored, matched(Applied), now).await
        }
        (_, ReportedOutcome::Progress { .. }) => {
            let detail = format!("progress reported after the submission became {state}");
            finish(db, stored, matched(Duplicate).detail(&detail), now).await
        }
        (state, outcome) if same_outcome(state, outcome) => {
            let detail = format!("the submission is already {state}");
            finish(db, stored, matched(Duplicate).detail(&detail), now).await
        }
        (state, _) => {
            let detail =
                format!("the submission is already {state}; the callback reports otherwise");
            note(
                db,
                id,
                EventKind::ConflictingCallback,
                &actor,
                &detail,
                stored,
                now,
            )
            .await?;
            finish(db, stored, matched(Conflicting).detail(&detail), now).await
        }
    }
}

async fn note(
    db: &Db<'_>,
    id: SubmissionId,
    kind: EventKind,
    actor: &Actor,
    reason: &str,
    stored: &StoredCallback,
    now: DateTime<Utc>,
) -> Result<()> {
    append_event(
        db,
        NewEvent {
            id,
            at: now,
            kind: &kind,
            from: None,
            to: None,
            actor,
            reason: Some(reason),
            data: Some(&json!({ "callback_id": stored.id.to_string() })),
        },
    )
    .await
}

/// Apply callbacks that were waiting for this submission (they arrived
/// before its acceptance was recorded). The caller holds the submission's
/// row lock. A waiting callback that another transaction is settling right
/// now is skipped: that settle will find the submission as this
/// transaction leaves it. Returns the submission as it is after.
pub(super) async fn rematch_on(
    db: &Db<'_>,
    submission: &Submission,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let mut references = vec![
        Correlation::SubmissionId(submission.id).to_stored(),
        clean(&Correlation::IdempotencyKey(submission.idempotency_key.clone()).to_stored())
            .into_owned(),
    ];
    if let Some(r) = &submission.external_ref {
        references.push(clean(&Correlation::ExternalRef(r.clone()).to_stored()).into_owned());
    }
    let waiting = db
        .query(
            "SELECT id, event_id, outcome, match_until FROM liaison_callbacks \
             WHERE partner = $1 AND disposition = 'unmatched' AND reference = ANY($2) \
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[&submission.partner, &references],
            "find waiting callbacks",
        )
        .await?;
    for row in waiting {
        let stored = callback_on(db, to_cid(get(&row, 0)?)?).await?;
        let event_id: Option<String> = get(&row, 1)?;
        let outcome: Option<String> = get(&row, 2)?;
        let until: Option<i64> = get(&row, 3)?;
        let (Some(correlation), Some(outcome)) = (stored.correlation.clone(), outcome) else {
            continue;
        };
        let Ok(outcome) = serde_json::from_str::<ReportedOutcome>(&outcome) else {
            continue;
        };
        let report = CallbackReport {
            correlation,
            event_id,
            outcome,
        };
        // Keep its matching window should it still not apply.
        apply_report(db, &stored, &report, until.map_or(now, from_millis), now).await?;
    }
    get_on(db, submission.id).await
}
