//! Result deadlines and the matching window of unmatched callbacks.

use chrono::{DateTime, Utc};

use super::common::to_millis;
use super::db::{Db, sid};
use super::queries::{SUBMISSION_COLUMNS, lock_on, submission_from_row};
use super::write::{NewEvent, append_event};
use crate::error::{Error, Result};
use crate::store::Note;
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
