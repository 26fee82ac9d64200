//! Personal data on PostgreSQL: the statements that clear what
//! [`crate::store::rules::privacy`] lists, for retention (a batch of
//! finished submissions past their period) and for `forget` (one
//! submission). Nothing is decided here.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::db::{Db, get, sid};
use crate::error::Result;
use crate::model::submission::SubmissionId;
use crate::store::common::{PURGE_BATCH, state_names, to_millis};
use crate::store::rules::privacy::{
    ATTEMPT_SET, DELIVERY_SET, EVENT_DATA_KEYS, SYSTEM_ACTORS, Scope, callback_set, events_all,
    submission_set, with_now,
};

/// Clear what `scope` lists in the rows that belong to `ids` (attempts,
/// events, correlation rows, deliveries; with `forget`, callbacks too).
/// Their submission rows are cleared by the caller.
async fn clear_children(db: &Db<'_>, ids: &[Uuid], scope: Scope, now: i64) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = ids.to_vec();
    let within = "submission_id = ANY($1)";
    db.execute(
        &format!("UPDATE liaison_attempts SET {ATTEMPT_SET} WHERE {within} AND error IS NOT NULL"),
        &[&ids],
        "clear attempt errors",
    )
    .await?;
    db.execute(
        &format!(
            "UPDATE liaison_deliveries SET {DELIVERY_SET} WHERE {within} AND last_error IS NOT NULL"
        ),
        &[&ids],
        "clear delivery errors",
    )
    .await?;
    db.execute(
        "DELETE FROM liaison_correlations WHERE submission_seq IN \
         (SELECT seq FROM liaison_submissions WHERE id = ANY($1))",
        &[&ids],
        "delete correlation rows",
    )
    .await?;
    if events_all(scope) {
        db.execute(
            &format!("UPDATE liaison_events SET reason = NULL, data = NULL WHERE {within}"),
            &[&ids],
            "clear event reasons",
        )
        .await?;
    } else {
        let keys: Vec<&str> = EVENT_DATA_KEYS.to_vec();
        db.execute(
            &format!(
                "UPDATE liaison_events SET \
                   reason = CASE WHEN actor LIKE '{SYSTEM_ACTORS}' THEN NULL ELSE reason END, \
                   data = CASE WHEN json_typeof(data) = 'object' \
                          THEN (data::jsonb - $2::text[])::json ELSE data END \
                 WHERE {within}"
            ),
            &[&ids, &keys],
            "clear event reasons",
        )
        .await?;
    }
    if scope == Scope::Forget {
        let set = with_now(&callback_set(scope), "$2");
        db.execute(
            &format!("UPDATE liaison_callbacks SET {set} WHERE {within}"),
            &[&ids, &now],
            "erase callbacks",
        )
        .await?;
    }
    Ok(())
}

/// Lock the callbacks matched to a submission (before its row, the order
/// every lock is taken in), oldest first.
pub(super) async fn lock_callbacks_of(db: &Db<'_>, id: SubmissionId) -> Result<()> {
    db.query(
        "SELECT seq FROM liaison_callbacks WHERE submission_id = $1 ORDER BY seq FOR UPDATE",
        &[&sid(id)],
        "lock callbacks of a submission",
    )
    .await
    .map(drop)
}

/// `forget`: erase one submission's personal data.
pub(super) async fn erase_on(db: &Db<'_>, id: SubmissionId, now: DateTime<Utc>) -> Result<()> {
    let set = with_now(&submission_set(Scope::Forget), "$2");
    db.execute(
        &format!("UPDATE liaison_submissions SET {set} WHERE id = $1"),
        &[&sid(id), &to_millis(now)],
        "erase submission",
    )
    .await?;
    clear_children(db, &[sid(id)], Scope::Forget, to_millis(now)).await
}

/// Retention: clear the personal data of at most [`PURGE_BATCH`] finished
/// submissions that became terminal before `cutoff` (never one whose
/// result is not yet delivered to the host), and of their rows. Rows
/// another transaction holds are left for a later pass. Returns how many.
pub(super) async fn clear_finished(
    db: &Db<'_>,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let terminal = state_names(|s| s.is_terminal());
    let set = with_now(&submission_set(Scope::Retention), "$2");
    let rows = db
        .query(
            &format!(
                "UPDATE liaison_submissions SET {set} \
                 WHERE seq = ANY(ARRAY(SELECT seq FROM liaison_submissions \
                     WHERE terminal_at IS NOT NULL AND terminal_at <= $1 \
                       AND personal_cleared_at IS NULL \
                       AND state = ANY($3) \
                       AND NOT EXISTS (SELECT 1 FROM liaison_deliveries d \
                            WHERE d.submission_id = liaison_submissions.id AND d.state <> 'delivered') \
                     LIMIT $4 FOR UPDATE SKIP LOCKED)) \
                 RETURNING id"
            ),
            &[&to_millis(cutoff), &to_millis(now), &terminal, &PURGE_BATCH],
            "clear personal data",
        )
        .await?;
    let ids = rows
        .iter()
        .map(|row| get::<Uuid>(row, 0))
        .collect::<Result<Vec<_>>>()?;
    clear_children(db, &ids, Scope::Retention, to_millis(now)).await?;
    Ok(ids.len() as u64)
}

/// Retention: clear the personal data (headers, error, reference) of
/// callbacks on the same terms as their bodies go: received before
/// `finished` (rejected ones before `rejected`), never one still waiting to
/// be processed or matched, nor one about unfinished work. Returns how
/// many.
pub(super) async fn clear_callbacks(
    db: &Db<'_>,
    finished: DateTime<Utc>,
    rejected: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let unfinished = state_names(|s| !s.is_terminal());
    let set = with_now(&callback_set(Scope::Retention), "$2");
    db.execute(
        &format!(
            "UPDATE liaison_callbacks SET {set} \
             WHERE seq = ANY(ARRAY(SELECT c.seq FROM liaison_callbacks c \
                 WHERE c.personal_cleared_at IS NULL \
                   AND c.received_at <= GREATEST($1::bigint, $5::bigint) \
                   AND c.received_at <= CASE c.disposition WHEN 'rejected' THEN $5::bigint ELSE $1::bigint END \
                   AND c.disposition NOT IN ('received', 'unmatched') \
                   AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                        WHERE s.id = c.submission_id AND s.state = ANY($3)) \
                 LIMIT $4 FOR UPDATE OF c SKIP LOCKED))"
        ),
        &[
            &to_millis(finished),
            &to_millis(now),
            &unfinished,
            &PURGE_BATCH,
            &to_millis(rejected),
        ],
        "clear callback headers",
    )
    .await
}
