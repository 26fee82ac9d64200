//! Result deadlines and the matching window of unmatched callbacks.

use chrono::{DateTime, Utc};

use super::db::{Db, clean, get};
use super::queries::{SUBMISSION_COLUMNS, SUBMISSION_WIDTH, submission_from_row};
use crate::error::Result;
use crate::model::submission::Submission;
use crate::store::OverdueClaim;
use crate::store::common::{millis_after, to_millis};

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
    let until = millis_after(claim.now, claim.hold);
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
