//! Leases: claims under a fresh token, completion fenced by that token,
//! and the reaper for leases that ended.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::common::{Completion, bounded, check_transition, merge_data, to_millis};
use super::db::{Db, LockClass, clean, clean_opt, get, sid, token_uuid};
use super::queries::{SUBMISSION_COLUMNS, SUBMISSION_WIDTH, lock_on, submission_from_row};
use super::write::{NewEvent, append_event, apply_change, ref_key};
use crate::error::Result;
use crate::event::{Actor, AttemptOutcome, EventKind};
use crate::store::{AttemptReport, ClaimRequest, Lease, LeaseToken, StateChange};
use crate::submission::{SubmissionId, SubmissionState};

pub(super) async fn claim_on(db: &Db<'_>, request: &ClaimRequest) -> Result<Vec<Lease>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let now_ms = to_millis(request.now);
    let blocking: Vec<&str> = if request.dead_letter_blocks_ordering {
        vec!["queued", "in_flight", "dead_lettered"]
    } else {
        vec!["queued", "in_flight"]
    };
    // A predecessor being claimed right now is still `queued` in this
    // statement's snapshot, so it holds its successors back; rows another
    // claimer has locked are skipped, never waited for or taken twice.
    let rows = db
        .query(
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
                &now_ms,
                &i64::try_from(request.limit).unwrap_or(i64::MAX),
                &blocking,
            ],
            "find due work",
        )
        .await?;
    let expires_at = request.lease_end();
    let actor = Actor::system("dispatcher");
    let mut leases = Vec::with_capacity(rows.len());
    for row in rows {
        let id: Uuid = get(&row, 0)?;
        let token = LeaseToken::fresh();
        let claimed = db
            .query_opt(
                &format!(
                    "UPDATE liaison_submissions SET state = 'in_flight', lease_token = $2, \
                     lease_expires_at = $3, attempts = attempts + 1, updated_at = $4 \
                     WHERE id = $1 AND state = 'queued' RETURNING {SUBMISSION_COLUMNS}"
                ),
                &[&id, &token_uuid(token), &to_millis(expires_at), &now_ms],
                "claim submission",
            )
            .await?;
        let Some(claimed) = claimed else { continue };
        let submission = submission_from_row(&claimed)?;
        let attempt = submission.attempts;
        db.execute(
            "INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at) \
             VALUES ($1, $2, $3, $4)",
            &[
                &id,
                &i32::try_from(attempt).unwrap_or(i32::MAX),
                &token_uuid(token),
                &now_ms,
            ],
            "start attempt",
        )
        .await?;
        append_event(
            db,
            NewEvent {
                id: submission.id,
                at: request.now,
                kind: &EventKind::Claimed,
                from: Some(SubmissionState::Queued),
                to: Some(SubmissionState::InFlight),
                actor: &actor,
                reason: None,
                data: Some(&json!({ "attempt": attempt, "lease_token": token.to_string() })),
            },
        )
        .await?;
        leases.push(Lease {
            submission,
            token,
            attempt,
            expires_at,
        });
    }
    Ok(leases)
}

pub(super) async fn complete_on(
    db: &Db<'_>,
    lease: &Lease,
    report: &AttemptReport,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Completion> {
    let id = lease.submission.id;
    if let Some(reference) = &change.external_ref {
        let key = ref_key(&lease.submission.partner, reference);
        db.advisory_lock(LockClass::PartnerRef, &key).await?;
    }
    let (current, current_token) = lock_on(db, id).await?;
    let token = token_uuid(lease.token);
    if current.state != SubmissionState::InFlight || current_token != Some(token) {
        append_event(
            db,
            NewEvent {
                id,
                at: change.at.unwrap_or(now),
                kind: &EventKind::StaleResultIgnored,
                from: None,
                to: None,
                actor: &change.actor,
                reason: Some("result reported under a lease that is no longer current"),
                data: Some(&json!({
                    "attempt": lease.attempt,
                    "lease_token": lease.token.to_string(),
                    "outcome": report.outcome.as_str(),
                    "http_status": report.http_status,
                    "wanted_state": change.target.as_str(),
                    "state": current.state.as_str(),
                })),
            },
        )
        .await?;
        return Ok(Completion::Stale);
    }
    check_transition(&current, change.target)?;
    finish_attempt(db, id, token, report).await?;
    let data = merge_data(
        change.data.as_ref(),
        json!({
            "attempt": lease.attempt,
            "outcome": report.outcome.as_str(),
            "http_status": report.http_status,
        }),
    );
    let change = StateChange {
        data: Some(data),
        error: change.error.clone().or_else(|| report.error.clone()),
        ..change.clone()
    };
    let applied = apply_change(db, &current, &change, now).await?;
    // A callback that arrived before this result was recorded can match now.
    let applied = if applied.state == SubmissionState::Queued {
        applied
    } else {
        super::callbacks::rematch_on(db, &applied, now).await?
    };
    // Reliability tests: the result is written, its transaction not
    // committed.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("liaison::complete::before_commit");
    Ok(Completion::Applied(Box::new(applied)))
}

pub(super) async fn finish_attempt(
    db: &Db<'_>,
    id: SubmissionId,
    token: Uuid,
    report: &AttemptReport,
) -> Result<()> {
    db.execute(
        "UPDATE liaison_attempts SET finished_at = $3, outcome = $4, http_status = $5, error = $6 \
         WHERE submission_id = $1 AND lease_token = $2 AND finished_at IS NULL",
        &[
            &sid(id),
            &token,
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

/// Return expired leases to the queue (at most 1,000 per call). A lease
/// whose holder is reporting right now is skipped: its row is locked.
pub(super) async fn reap_on(db: &Db<'_>, now: DateTime<Utc>) -> Result<Vec<SubmissionId>> {
    let rows = db
        .query(
            &format!(
                "SELECT {SUBMISSION_COLUMNS}, lease_token FROM liaison_submissions \
                 WHERE state = 'in_flight' AND lease_expires_at <= $1 \
                 ORDER BY lease_expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED"
            ),
            &[&to_millis(now)],
            "find expired leases",
        )
        .await?;
    let mut reaped = Vec::with_capacity(rows.len());
    for row in rows {
        let current = submission_from_row(&row)?;
        let token: Option<Uuid> = get(&row, SUBMISSION_WIDTH)?;
        let id = current.id;
        let report = AttemptReport {
            outcome: AttemptOutcome::LeaseExpired,
            http_status: None,
            error: Some("the worker did not report before its lease expired".into()),
            finished_at: now,
        };
        if let Some(token) = token {
            finish_attempt(db, id, token, &report).await?;
        }
        let change = StateChange::to(SubmissionState::Queued)
            .actor(Actor::system("reaper"))
            .event(EventKind::LeaseExpired)
            .reason("lease expired before the worker reported; returned to the queue")
            .data(json!({
                "attempt": current.attempts,
                "lease_token": token.map(|t| t.hyphenated().to_string()),
            }))
            .due_at(now)
            .at(now);
        apply_change(db, &current, &change, now).await?;
        reaped.push(id);
    }
    Ok(reaped)
}
