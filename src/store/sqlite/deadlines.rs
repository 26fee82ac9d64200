//! Result deadlines and the matching window of unmatched callbacks.

use rusqlite::{Connection, params};

use super::db::{db_err, to_millis};
use super::queries::{SUBMISSION_COLUMNS, submission_from_row};
use crate::error::Result;
use crate::model::submission::Submission;
use crate::store::OverdueClaim;
use crate::store::common::millis_after;
use chrono::{DateTime, Utc};

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

/// Overdue results are read from the partial index of results awaited, by
/// deadline, oldest first, stopping at the limit: without statistics SQLite
/// read every submission awaiting a result (of the partner) through the
/// state index and sorted them, on every deadline check.
const OVERDUE_INDEX: &str = "INDEXED BY liaison_submissions_deadline";

pub(crate) fn overdue_on(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Submission>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions {OVERDUE_INDEX} \
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
    let until = millis_after(claim.now, claim.hold);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions {OVERDUE_INDEX} \
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
