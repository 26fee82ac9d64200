//! Inbound callbacks in SQLite: stored raw first, then settled in one
//! transaction that recognises repeats and conflicts and applies an outcome
//! at most once.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::json;

use super::sql::{
    NewEvent, SUBMISSION_COLUMNS, append_event, apply_change, bounded, corrupt, db_err, find_on,
    from_millis, get_on, submission_from_row, to_millis,
};
use crate::callback::{
    CallbackId, CallbackReceipt, CallbackReport, Correlation, Disposition, ReportedOutcome,
    StoredCallback,
};
use crate::error::{Error, Result};
use crate::event::{Actor, EventKind};
use crate::store::{CallbackFilter, NewCallback, OverdueClaim, Settlement, StateChange};
use crate::submission::{Submission, SubmissionId, SubmissionState};

const CALLBACK_COLUMNS: &str = "id, partner, received_at, headers, body, body_hash, size, \
    event_id, reference, disposition, error, submission_id, processed_at";

fn callback_from_row(row: &Row<'_>) -> rusqlite::Result<StoredCallback> {
    let id: String = row.get(0)?;
    let headers: String = row.get(3)?;
    let reference: Option<String> = row.get(8)?;
    let disposition: String = row.get(9)?;
    let submission: Option<String> = row.get(11)?;
    Ok(StoredCallback {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        partner: row.get(1)?,
        received_at: from_millis(row.get(2)?),
        headers: serde_json::from_str(&headers).map_err(|e| corrupt("headers", e))?,
        body: row.get(4)?,
        body_hash: row.get(5)?,
        size: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
        event_id: row.get(7)?,
        correlation: reference.as_deref().and_then(Correlation::from_stored),
        disposition: disposition.parse().map_err(|e| corrupt("disposition", e))?,
        error: row.get(10)?,
        submission_id: submission
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| corrupt("submission_id", e))?,
        processed_at: row.get::<_, Option<i64>>(12)?.map(from_millis),
    })
}

pub(crate) fn record_on(conn: &Connection, new: &NewCallback) -> Result<CallbackId> {
    let id = CallbackId::new();
    let headers = serde_json::to_string(&new.headers).map_err(|e| Error::Storage {
        operation: "encode callback headers",
        source: Box::new(e),
    })?;
    conn.prepare_cached(
        "INSERT INTO liaison_callbacks (id, partner, received_at, headers, body, body_hash, size, \
         disposition, error, processed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        let settled =
            (new.disposition != Disposition::Received).then(|| to_millis(new.received_at));
        stmt.execute(params![
            id.to_string(),
            new.partner,
            to_millis(new.received_at),
            headers,
            new.body,
            new.body_hash,
            i64::try_from(new.size).unwrap_or(i64::MAX),
            new.disposition.as_str(),
            bounded(new.error.as_deref()),
            settled,
        ])
    })
    .map_err(db_err("store callback"))?;
    Ok(id)
}

pub(crate) fn callback_on(conn: &Connection, id: CallbackId) -> Result<StoredCallback> {
    conn.prepare_cached(&format!(
        "SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![id.to_string()], callback_from_row)
            .optional()
    })
    .map_err(db_err("read callback"))?
    .ok_or_else(|| Error::not_found("callback", id))
}

pub(crate) fn list_on(conn: &Connection, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
    // Filtered by disposition (the quarantine): read through the disposition
    // index whatever statistics say. Averages per disposition hide that the
    // quarantined ones are rare, and a walk of every callback in `seq` order
    // until LIMIT of them match would then cover the whole history.
    let index = if !filter.dispositions.is_empty() && filter.submission_id.is_none() {
        " INDEXED BY liaison_callbacks_disposition"
    } else {
        ""
    };
    let mut sql = format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks{index} WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(partner.clone().into());
        sql.push_str(&format!(" AND partner = ?{}", args.len()));
    }
    if let Some(id) = filter.submission_id {
        args.push(id.to_string().into());
        sql.push_str(&format!(" AND submission_id = ?{}", args.len()));
    }
    if !filter.dispositions.is_empty() {
        let mut marks = Vec::new();
        for d in &filter.dispositions {
            args.push(d.as_str().to_owned().into());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND disposition IN ({})", marks.join(", ")));
    }
    args.push(
        i64::try_from(filter.effective_limit())
            .unwrap_or(100)
            .into(),
    );
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", args.len()));
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db_err("list callbacks"))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), callback_from_row)
        .map_err(db_err("list callbacks"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list callbacks"))
}

pub(crate) fn settle_on(
    conn: &Connection,
    id: CallbackId,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    let stored = callback_on(conn, id)?;
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
        Settlement::Rejected { reason } => finish(
            conn,
            &stored,
            Disposition::Rejected,
            Some(reason),
            None,
            None,
            now,
        ),
        Settlement::Malformed { reason } => finish(
            conn,
            &stored,
            Disposition::Malformed,
            Some(reason),
            None,
            None,
            now,
        ),
        Settlement::Report {
            report,
            unmatched_until,
        } => {
            let outcome = serde_json::to_string(&report.outcome).map_err(|e| Error::Storage {
                operation: "encode callback outcome",
                source: Box::new(e),
            })?;
            conn.prepare_cached(
                "UPDATE liaison_callbacks SET event_id = ?2, reference = ?3, outcome = ?4 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.to_string(),
                    report.event_id,
                    report.correlation.to_stored(),
                    outcome,
                ])
            })
            .map_err(db_err("record callback report"))?;
            let receipt = apply_report(conn, &stored, report, *unmatched_until, now)?;
            // Reliability tests: the report is applied, its transaction not
            // committed.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("liaison::callback::before_commit");
            Ok(receipt)
        }
    }
}

/// Record the callback's final disposition and build the receipt.
fn finish(
    conn: &Connection,
    stored: &StoredCallback,
    disposition: Disposition,
    detail: Option<&str>,
    submission: Option<SubmissionId>,
    match_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    conn.prepare_cached(
        "UPDATE liaison_callbacks SET disposition = ?2, error = ?3, submission_id = ?4, \
         processed_at = ?5, match_until = ?6 WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            stored.id.to_string(),
            disposition.as_str(),
            bounded(detail),
            submission.map(|s| s.to_string()),
            to_millis(now),
            match_until.map(to_millis),
        ])
    })
    .map_err(db_err("settle callback"))?;
    Ok(CallbackReceipt {
        callback_id: stored.id,
        disposition,
        http_status: disposition.http_status(),
        submission_id: submission,
        detail: detail.map(str::to_owned),
    })
}

/// The earlier callback of this partner that a new one repeats, if any.
struct Earlier {
    outcome: Option<String>,
    submission: Option<SubmissionId>,
}

fn earlier_by(
    conn: &Connection,
    stored: &StoredCallback,
    column: &str,
    value: &str,
) -> Result<Option<Earlier>> {
    let sql = format!(
        "SELECT outcome, submission_id FROM liaison_callbacks \
         WHERE partner = ?1 AND {column} = ?2 AND id <> ?3 \
           AND disposition IN ('applied', 'duplicate', 'late', 'unmatched', 'conflicting') \
         ORDER BY seq LIMIT 1"
    );
    let row: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_row(
                params![stored.partner, value, stored.id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
        })
        .map_err(db_err("look for repeated callbacks"))?;
    row.map(|(outcome, submission)| {
        Ok(Earlier {
            outcome,
            submission: submission.map(|s| s.parse()).transpose()?,
        })
    })
    .transpose()
}

fn find_by_correlation(
    conn: &Connection,
    partner: &str,
    correlation: &Correlation,
) -> Result<Option<Submission>> {
    let (clause, value) = match correlation {
        Correlation::SubmissionId(id) => {
            return Ok(find_on(conn, *id)?.filter(|s| s.partner == partner));
        }
        Correlation::ExternalRef(r) => ("external_ref = ?2", r.as_str()),
        Correlation::IdempotencyKey(k) => ("idempotency_key = ?2", k.as_str()),
    };
    conn.prepare_cached(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
         WHERE partner = ?1 AND {clause} ORDER BY seq DESC LIMIT 1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![partner, value], submission_from_row)
            .optional()
    })
    .map_err(db_err("match callback"))
}

fn same_outcome(state: SubmissionState, outcome: &ReportedOutcome) -> bool {
    matches!(
        (state, outcome),
        (SubmissionState::Succeeded, ReportedOutcome::Succeeded)
            | (SubmissionState::Failed, ReportedOutcome::Failed { .. })
    )
}

fn apply_report(
    conn: &Connection,
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
        && let Some(earlier) = earlier_by(conn, stored, "event_id", event_id)?
    {
        if earlier.outcome.as_deref() == Some(outcome_json.as_str()) {
            let detail = format!("event {event_id:?} was received before");
            return finish(
                conn,
                stored,
                Duplicate,
                Some(&detail),
                earlier.submission,
                None,
                now,
            );
        }
        let detail = format!("event {event_id:?} was received before with a different outcome");
        if let Some(id) = earlier.submission {
            note(
                conn,
                id,
                EventKind::ConflictingCallback,
                &actor,
                &detail,
                stored,
                now,
            )?;
        }
        return finish(
            conn,
            stored,
            Conflicting,
            Some(&detail),
            earlier.submission,
            None,
            now,
        );
    }
    if let Some(earlier) = earlier_by(conn, stored, "body_hash", &stored.body_hash)?
        && earlier.outcome.as_deref() == Some(outcome_json.as_str())
    {
        let detail = "the same body was received before";
        return finish(
            conn,
            stored,
            Duplicate,
            Some(detail),
            earlier.submission,
            None,
            now,
        );
    }

    let Some(submission) = find_by_correlation(conn, &stored.partner, &report.correlation)? else {
        let detail = format!("no submission matches {} yet", report.correlation);
        return finish(
            conn,
            stored,
            Unmatched,
            Some(&detail),
            None,
            Some(unmatched_until),
            now,
        );
    };
    let id = submission.id;
    let state = submission.state;
    match (state, &report.outcome) {
        (SubmissionState::Cancelled | SubmissionState::ResolvedManually, _) => {
            let detail = format!("the submission was already {state}");
            note(
                conn,
                id,
                EventKind::LateCallback,
                &actor,
                &detail,
                stored,
                now,
            )?;
            finish(conn, stored, Late, Some(&detail), Some(id), None, now)
        }
        // The acceptance is not recorded yet (an early callback): keep it;
        // recording the acceptance matches it.
        (SubmissionState::Queued | SubmissionState::InFlight, _) => {
            let detail =
                format!("the submission is {state}; waiting for its acceptance to be recorded");
            finish(
                conn,
                stored,
                Unmatched,
                Some(&detail),
                Some(id),
                Some(unmatched_until),
                now,
            )
        }
        (
            SubmissionState::AwaitingResult | SubmissionState::Stuck,
            ReportedOutcome::Progress { note: words },
        ) => {
            let detail = words
                .clone()
                .unwrap_or_else(|| "the partner reports progress".into());
            note(conn, id, EventKind::Progress, &actor, &detail, stored, now)?;
            finish(conn, stored, Applied, None, Some(id), None, now)
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
            apply_change(conn, &submission, &change, now)?;
            finish(conn, stored, Applied, None, Some(id), None, now)
        }
        (_, ReportedOutcome::Progress { .. }) => {
            let detail = format!("progress reported after the submission became {state}");
            finish(conn, stored, Duplicate, Some(&detail), Some(id), None, now)
        }
        (state, outcome) if same_outcome(state, outcome) => {
            let detail = format!("the submission is already {state}");
            finish(conn, stored, Duplicate, Some(&detail), Some(id), None, now)
        }
        (state, _) => {
            let detail =
                format!("the submission is already {state}; the callback reports otherwise");
            note(
                conn,
                id,
                EventKind::ConflictingCallback,
                &actor,
                &detail,
                stored,
                now,
            )?;
            finish(
                conn,
                stored,
                Conflicting,
                Some(&detail),
                Some(id),
                None,
                now,
            )
        }
    }
}

fn note(
    conn: &Connection,
    id: SubmissionId,
    kind: EventKind,
    actor: &Actor,
    reason: &str,
    stored: &StoredCallback,
    now: DateTime<Utc>,
) -> Result<()> {
    append_event(
        conn,
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
}

/// Apply callbacks that were waiting for this submission (they arrived
/// before its acceptance was recorded). Returns the submission as it is after.
pub(crate) fn rematch_on(
    conn: &Connection,
    submission: &Submission,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let mut references = vec![
        Correlation::SubmissionId(submission.id).to_stored(),
        Correlation::IdempotencyKey(submission.idempotency_key.clone()).to_stored(),
    ];
    if let Some(r) = &submission.external_ref {
        references.push(Correlation::ExternalRef(r.clone()).to_stored());
    }
    let waiting: Vec<(String, Option<String>, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, event_id, outcome FROM liaison_callbacks \
             WHERE partner = ?1 AND disposition = 'unmatched' AND reference IN (?2, ?3, ?4) \
             ORDER BY seq",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    submission.partner,
                    references[0],
                    references[1],
                    references.get(2).unwrap_or(&references[0]),
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?
            .collect()
        })
        .map_err(db_err("find waiting callbacks"))?;
    if waiting.is_empty() {
        // Nothing arrived early (the usual case): the row is as given.
        return Ok(submission.clone());
    }
    for (id, event_id, outcome) in waiting {
        let stored = callback_on(conn, id.parse()?)?;
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
        let until: Option<i64> = conn
            .query_row(
                "SELECT match_until FROM liaison_callbacks WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .map_err(db_err("read matching window"))?;
        apply_report(conn, &stored, &report, until.map_or(now, from_millis), now)?;
    }
    get_on(conn, submission.id)
}

pub(crate) fn defer_deadline_on(
    conn: &Connection,
    id: SubmissionId,
    until: DateTime<Utc>,
    note: &crate::store::Note,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let current = get_on(conn, id)?;
    if current.state != SubmissionState::AwaitingResult {
        return Err(Error::InvalidTransition {
            id,
            from: current.state,
            to: current.state,
            reason: "only a submission awaiting its result has a deadline to move",
        });
    }
    conn.prepare_cached(
        "UPDATE liaison_submissions SET result_deadline = ?2, updated_at = ?3 WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![id.to_string(), to_millis(until), to_millis(now)]))
    .map_err(db_err("move result deadline"))?;
    append_event(
        conn,
        NewEvent {
            id,
            at: now,
            kind: &note.kind,
            from: None,
            to: None,
            actor: &note.actor,
            reason: note.reason.as_deref(),
            data: note.data.as_ref(),
        },
    )?;
    get_on(conn, id)
}

pub(crate) fn expire_unmatched_on(conn: &Connection, now: DateTime<Utc>) -> Result<u64> {
    let n = conn
        .prepare_cached(
            "UPDATE liaison_callbacks SET disposition = 'expired', processed_at = ?1, \
             error = 'no submission matched it within the matching window' \
             WHERE disposition = 'unmatched' AND match_until <= ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![to_millis(now)]))
        .map_err(db_err("expire unmatched callbacks"))?;
    Ok(n as u64)
}

pub(crate) fn overdue_on(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Submission>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
             WHERE state = 'awaiting_result' AND result_deadline <= ?1 \
             ORDER BY result_deadline LIMIT ?2"
        ))
        .map_err(db_err("find overdue results"))?;
    let rows = stmt
        .query_map(
            params![to_millis(now), i64::try_from(limit).unwrap_or(i64::MAX)],
            submission_from_row,
        )
        .map_err(db_err("find overdue results"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("find overdue results"))
}

pub(crate) fn claim_overdue_on(conn: &Connection, claim: &OverdueClaim) -> Result<Vec<Submission>> {
    let now = to_millis(claim.now);
    let until = now.saturating_add(i64::try_from(claim.hold.as_millis()).unwrap_or(i64::MAX));
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
             WHERE state = 'awaiting_result' AND result_deadline <= ?1 AND partner = ?2 \
             ORDER BY result_deadline LIMIT ?3"
        ))
        .map_err(db_err("find overdue results"))?;
    let due = stmt
        .query_map(
            params![
                now,
                claim.partner,
                i64::try_from(claim.limit).unwrap_or(i64::MAX)
            ],
            submission_from_row,
        )
        .map_err(db_err("find overdue results"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("find overdue results"))?;
    let mut hold = conn
        .prepare_cached("UPDATE liaison_submissions SET result_deadline = ?2 WHERE id = ?1")
        .map_err(db_err("hold overdue result"))?;
    let mut taken = Vec::with_capacity(due.len());
    for mut submission in due {
        hold.execute(params![submission.id.to_string(), until])
            .map_err(db_err("hold overdue result"))?;
        submission.result_deadline = chrono::DateTime::from_timestamp_millis(until);
        taken.push(submission);
    }
    Ok(taken)
}
