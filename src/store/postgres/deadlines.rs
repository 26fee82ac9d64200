//! Result deadlines and the matching window of unmatched callbacks.

use chrono::{DateTime, Utc};

use super::common::to_millis;
use super::db::{Db, clean, get, sid};
use super::queries::{SUBMISSION_COLUMNS, SUBMISSION_WIDTH, lock_on, submission_from_row};
use super::write::{NewEvent, append_event};
use crate::error::{Error, Result};
use crate::store::{Note, OverdueClaim};
use crate::submission::{Submission, SubmissionId, SubmissionState};

pub(super) async fn defer_deadline_on(
    db: &Db<'_>,
    id: SubmissionId,
    until: DateTime<Utc>,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let (current, _) = lock_on(db, id).await?;
    if current.state != SubmissionState::AwaitingResult {
        return Err(Error::InvalidTransition {
            id,
            from: current.state,
            to: current.state,
            reason: "only a submission awaiting its result has a deadline to move",
        });
    }
    let row = db
        .query_one(
            &format!(
                "UPDATE liaison_submissions SET result_deadline = $2, updated_at = $3 \
                 WHERE id = $1 RETURNING {SUBMISSION_COLUMNS}"
            ),
            &[&sid(id), &to_millis(until), &to_millis(now)],
            "move result deadline",
        )
        .await?;
    append_event(
        db,
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
    )
    .await?;
    submission_from_row(&row)
}

pub(super) async fn expire_unmatched_on(db: &Db<'_>, now: DateTime<Utc>) -> Result<u64> {
    db.execute(
        "UPDATE liaison_callbacks SET disposition = 'expired', processed_at = $1, \
         error = 'no submission matched it within the matching window' \
         WHERE disposition = 'unmatched' AND match_until <= $1",
        &[&to_millis(now)],
        "expire unmatched callbacks",
    )
    .await
}

pub(super) async fn overdue_on(
    db: &Db<'_>,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Submission>> {
    db.query(
        &format!(
            "SELECT {SUBMISSION_COLUMNS} FROM liaison_submissions \
             WHERE state = 'awaiting_result' AND result_deadline <= $1 \
             ORDER BY result_deadline LIMIT $2"
        ),
        &[&to_millis(now), &i64::try_from(limit).unwrap_or(i64::MAX)],
        "find overdue results",
    )
    .await?
    .iter()
    .map(submission_from_row)
    .collect()
}

pub(super) async fn claim_overdue_on(db: &Db<'_>, claim: &OverdueClaim) -> Result<Vec<Submission>> {
    let now = to_millis(claim.now);
    let until = now.saturating_add(i64::try_from(claim.hold.as_millis()).unwrap_or(i64::MAX));
    let rows = db
        .query(
            &format!(
                "WITH due AS (SELECT id AS due_id, result_deadline AS was FROM liaison_submissions \
                     WHERE state = 'awaiting_result' AND result_deadline <= $1 AND partner = $2 \
                     ORDER BY result_deadline LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE liaison_submissions SET result_deadline = $4 FROM due \
                 WHERE id = due.due_id RETURNING {SUBMISSION_COLUMNS}, due.was"
            ),
            &[
                &now,
                &clean(&claim.partner).as_ref(),
                &i64::try_from(claim.limit).unwrap_or(i64::MAX),
                &until,
            ],
            "hold overdue results",
        )
        .await?;
    let mut taken = rows
        .iter()
        .map(|row| {
            Ok((
                get::<i64>(row, SUBMISSION_WIDTH)?,
                submission_from_row(row)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    // Most overdue first, as they were before the hold.
    taken.sort_by_key(|(was, _)| *was);
    Ok(taken.into_iter().map(|(_, s)| s).collect())
}
