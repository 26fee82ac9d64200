//! Writes behind [`super::PostgresStore`]: plain async functions over a
//! [`Db`] inside a transaction the caller opened (the store's own, or the
//! host's), so both run the same code.
//!
//! Concurrency between instances rests on PostgreSQL's locks, taken in one
//! order everywhere: callback row, then advisory locks (callback event, body,
//! partner reference), then the submission row. Claims and the reaper skip
//! rows another transaction holds (`FOR UPDATE SKIP LOCKED`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::common::{bounded, check_transition, duration_ms, replay_key, state_names, to_millis};
use super::db::{Db, LockClass, clean, clean_opt, get, is_unique_violation, sid, to_sid};
use super::lease::finish_attempt;
use super::queries::{SUBMISSION_COLUMNS, find_on, get_on, lock_on, submission_from_row};
use crate::error::{Error, Result};
use crate::event::{Actor, AttemptOutcome, EventKind};
use crate::store::{AttemptReport, Enqueued, Note, Replay, StateChange};
use crate::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};

/// How often an enqueue retries when the ledger row it found went away.
const LEDGER_ROUNDS: usize = 8;

/// One timeline line.
pub(super) struct NewEvent<'a> {
    pub(super) id: SubmissionId,
    pub(super) at: DateTime<Utc>,
    pub(super) kind: &'a EventKind,
    pub(super) from: Option<SubmissionState>,
    pub(super) to: Option<SubmissionState>,
    pub(super) actor: &'a Actor,
    pub(super) reason: Option<&'a str>,
    pub(super) data: Option<&'a Value>,
}

pub(super) async fn append_event(db: &Db<'_>, e: NewEvent<'_>) -> Result<()> {
    if let Some(data) = e.data {
        crate::submission::check_depth("data", data)?;
    }
    db.execute(
        "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::json)",
        &[
            &sid(e.id),
            &to_millis(e.at),
            &clean(e.kind.as_str()).as_ref(),
            &e.from.map(SubmissionState::as_str),
            &e.to.map(SubmissionState::as_str),
            &clean(e.actor.as_str()).as_ref(),
            &clean_opt(bounded(e.reason)),
            &e.data.map(Value::to_string),
        ],
        "append event",
    )
    .await
    .map(drop)
}

/// The advisory-lock key of a partner reference.
pub(super) fn ref_key(partner: &str, reference: &str) -> String {
    format!("{partner}\u{1f}{reference}")
}

/// Enqueue validated submissions, all of them or (on an error, when the
/// caller rolls back) none.
pub(super) async fn enqueue_on(
    db: &Db<'_>,
    batch: Vec<ValidSubmission>,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>> {
    let mut out = Vec::with_capacity(batch.len());
    for valid in batch {
        out.push(enqueue_one(db, valid, retention, now).await?);
    }
    Ok(out)
}

/// The ledger decides: the insert that wins the primary key
/// (partner, key) creates the submission; every other enqueue of that key
/// waits for the winner's commit and then reads the holder. Never
/// read-then-write.
async fn enqueue_one(
    db: &Db<'_>,
    valid: ValidSubmission,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let now_ms = to_millis(now);
    let fingerprint = valid.fingerprint.to_hex();
    let expires_at = retention.map(|r| now_ms.saturating_add(duration_ms(r)));
    let id = SubmissionId::new();
    for _ in 0..LEDGER_ROUNDS {
        let inserted = db
            .execute(
                "INSERT INTO liaison_idempotency_keys \
                 (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner, idempotency_key) DO NOTHING",
                &[
                    &valid.partner,
                    &valid.idempotency_key,
                    &fingerprint,
                    &sid(id),
                    &now_ms,
                    &expires_at,
                ],
                "record idempotency key",
            )
            .await?;
        if inserted == 1 {
            return insert_submission(db, id, &valid, now).await;
        }
        let Some(row) = db
            .query_opt(
                "SELECT fingerprint, submission_id, expires_at FROM liaison_idempotency_keys \
                 WHERE partner = $1 AND idempotency_key = $2 FOR UPDATE",
                &[&valid.partner, &valid.idempotency_key],
                "read idempotency ledger",
            )
            .await?
        else {
            // Pruned between our insert and this read: try again.
            continue;
        };
        let held_fingerprint: String = get(&row, 0)?;
        let existing_id = super::db::to_sid("submission_id", get(&row, 1)?)?;
        let held_until: Option<i64> = get(&row, 2)?;
        let holder = find_on(db, existing_id).await?;
        let expired = held_until.is_some_and(|at| at <= now_ms);
        let holder_terminal = holder.as_ref().is_none_or(|s| s.state.is_terminal());
        if expired && holder_terminal {
            // Retention is over and the work is finished: the key is free again.
            db.execute(
                "DELETE FROM liaison_idempotency_keys WHERE partner = $1 AND idempotency_key = $2",
                &[&valid.partner, &valid.idempotency_key],
                "prune idempotency key",
            )
            .await?;
            continue;
        }
        let holder = holder.ok_or_else(|| Error::not_found("submission", existing_id))?;
        if held_fingerprint != fingerprint {
            return Err(Error::IdempotencyConflict {
                partner: valid.partner,
                key: valid.idempotency_key,
                existing: existing_id,
            });
        }
        append_event(
            db,
            NewEvent {
                id: existing_id,
                at: now,
                kind: &EventKind::Deduplicated,
                from: None,
                to: None,
                actor: &Actor::system("enqueue"),
                reason: Some("enqueued again with the same key and payload"),
                data: None,
            },
        )
        .await?;
        return Ok(Enqueued {
            submission: holder,
            deduplicated: true,
        });
    }
    Err(Error::Busy {
        operation: "enqueue",
        source: "the idempotency key kept changing hands; retry".into(),
    })
}

async fn insert_submission(
    db: &Db<'_>,
    id: SubmissionId,
    valid: &ValidSubmission,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let now_ms = to_millis(now);
    let due_at = valid
        .not_before
        .map_or(now_ms, |nb| to_millis(nb).max(now_ms));
    let correlation = (!valid.correlation.is_empty()).then(|| json!(valid.correlation).to_string());
    let row = db
        .query_one(
            &format!(
                "INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, \
                 idempotency_key, ordering_key, correlation, business_value, priority, state, \
                 attempts, due_at, not_before, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4::text::json, $5, $6, $7, $8::text::json, $9, $10, \
                 'queued', 0, $11, $12, $13, $13) RETURNING {SUBMISSION_COLUMNS}"
            ),
            &[
                &sid(id),
                &valid.partner,
                &valid.kind,
                &valid.payload_json,
                &valid.fingerprint.to_hex(),
                &valid.idempotency_key,
                &valid.ordering_key,
                &correlation,
                &valid.business_value,
                &valid.priority,
                &due_at,
                &valid.not_before.map(to_millis),
                &now_ms,
            ],
            "insert submission",
        )
        .await?;
    append_event(
        db,
        NewEvent {
            id,
            at: now,
            kind: &EventKind::Enqueued,
            from: None,
            to: Some(SubmissionState::Queued),
            actor: &Actor::system("enqueue"),
            reason: None,
            data: None,
        },
    )
    .await?;
    Ok(Enqueued {
        submission: submission_from_row(&row)?,
        deduplicated: false,
    })
}

pub(super) async fn transition_on(
    db: &Db<'_>,
    id: SubmissionId,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    if let Some(reference) = &change.external_ref {
        // Partners never change: read it unlocked to take the reference lock first.
        let partner = get_on(db, id).await?.partner;
        db.advisory_lock(LockClass::PartnerRef, &ref_key(&partner, reference))
            .await?;
    }
    let (current, token) = lock_on(db, id).await?;
    check_transition(&current, change.target)?;
    let refuse = |reason| {
        Err(Error::InvalidTransition {
            id,
            from: current.state,
            to: change.target,
            reason,
        })
    };
    if change.target == SubmissionState::InFlight {
        return refuse("only a claim puts work in flight");
    }
    if current.state == SubmissionState::InFlight && change.target != SubmissionState::Cancelled {
        return refuse("an attempt in flight is settled only under its lease");
    }
    if change.target == SubmissionState::Queued && current.payload.is_none() {
        return refuse("the payload was purged by retention; it cannot be sent again");
    }
    if current.state == SubmissionState::InFlight
        && let Some(token) = token
    {
        // Cancelled while an attempt runs: close the attempt; the worker's
        // late result will find its lease gone and be journaled as stale.
        let report = AttemptReport {
            outcome: AttemptOutcome::Cancelled,
            http_status: None,
            error: change.reason.clone(),
            finished_at: change.at.unwrap_or(now),
        };
        finish_attempt(db, id, token, &report).await?;
    }
    apply_change(db, &current, change, now).await
}

/// Write the new state and its event. The caller has locked the row and
/// checked the table.
pub(super) async fn apply_change(
    db: &Db<'_>,
    current: &Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    use SubmissionState::*;
    let at = change.at.unwrap_or(now);
    let at_ms = to_millis(at);
    let to = change.target;
    let reference = change.external_ref.as_deref().map(clean);
    if let Some(reference) = &reference {
        let holder = db
            .query_opt(
                "SELECT id FROM liaison_submissions \
                 WHERE partner = $1 AND external_ref = $2 AND id <> $3",
                &[&current.partner, &reference.as_ref(), &sid(current.id)],
                "check external reference",
            )
            .await?;
        if let Some(holder) = holder {
            let holder: Uuid = get(&holder, 0)?;
            return Err(taken_reference(reference, holder));
        }
    }
    let due_at = match to {
        Queued => to_millis(change.due_at.unwrap_or(at)),
        _ => to_millis(current.due_at),
    };
    let result_deadline = match to {
        AwaitingResult => change.result_deadline.map(to_millis),
        Stuck => current.result_deadline.map(to_millis),
        _ => None,
    };
    let terminal_at = to.is_terminal().then_some(at_ms);
    let external_ref = reference
        .map(|r| r.into_owned())
        .or(current.external_ref.clone());
    let last_error = clean_opt(bounded(change.error.as_deref())).or(current.last_error.clone());
    // A move to Queued from anything but InFlight is a replay: a new cycle
    // with a fresh retry budget.
    let new_cycle = to == Queued && current.state != InFlight;
    // Leaving InFlight for one of these, the partner accepted it (and, for a
    // synchronous answer, finished it): the first such time is kept.
    let accepted = current.state == InFlight && matches!(to, AwaitingResult | Succeeded | Failed);
    let row = db
        .query_one(
            &format!(
                "UPDATE liaison_submissions SET state = $2, due_at = $3, result_deadline = $4, \
                 terminal_at = $5, external_ref = $6, last_error = $7, updated_at = $8, \
                 lease_token = NULL, lease_expires_at = NULL, \
                 replays = replays + CASE WHEN $9 THEN 1 ELSE 0 END, \
                 attempts_before_cycle = CASE WHEN $9 THEN attempts ELSE attempts_before_cycle END, \
                 cycle_started_at = CASE WHEN $9 THEN $8 ELSE cycle_started_at END, \
                 accepted_at = CASE WHEN $10 THEN COALESCE(accepted_at, $8) ELSE accepted_at END \
                 WHERE id = $1 RETURNING {SUBMISSION_COLUMNS}"
            ),
            &[
                &sid(current.id),
                &to.as_str(),
                &due_at,
                &result_deadline,
                &terminal_at,
                &external_ref,
                &last_error,
                &at_ms,
                &new_cycle,
                &accepted,
            ],
            "change state",
        )
        .await
        .map_err(|e| match (&external_ref, is_unique_violation(&e)) {
            (Some(reference), true) => Error::invalid(
                "external_ref",
                format!("partner reference {reference:?} already belongs to another submission"),
            ),
            _ => e,
        })?;
    let kind = change
        .event
        .clone()
        .unwrap_or_else(|| EventKind::for_transition(current.state, to));
    let reason = change.reason.as_deref().or(change.error.as_deref());
    append_event(
        db,
        NewEvent {
            id: current.id,
            at,
            kind: &kind,
            from: Some(current.state),
            to: Some(to),
            actor: &change.actor,
            reason,
            data: change.data.as_ref(),
        },
    )
    .await?;
    submission_from_row(&row)
}

fn taken_reference(reference: &str, holder: Uuid) -> Error {
    Error::invalid(
        "external_ref",
        format!("partner reference {reference:?} already belongs to submission {holder}"),
    )
}

pub(super) async fn replay_on(
    db: &Db<'_>,
    id: SubmissionId,
    replay: &Replay,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Submission> {
    use SubmissionState::*;
    if replay.reason.trim().is_empty() {
        return Err(Error::invalid("reason", "say why it is replayed"));
    }
    let (current, _) = lock_on(db, id).await?;
    let refuse = |reason| Error::InvalidTransition {
        id,
        from: current.state,
        to: Queued,
        reason,
    };
    if !matches!(current.state, Failed | DeadLettered | Stuck) {
        return Err(refuse(
            "only failed, dead-lettered or stuck submissions are replayed",
        ));
    }
    if current.payload.is_none() {
        return Err(refuse(
            "the payload was purged by retention; it cannot be sent again",
        ));
    }
    let previous_key = current.idempotency_key.clone();
    let key = if replay.fresh_key {
        let key = replay_key(&previous_key, current.replays + 1);
        let now_ms = to_millis(now);
        let inserted = db
            .execute(
                "INSERT INTO liaison_idempotency_keys \
                 (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (partner, idempotency_key) DO NOTHING",
                &[
                    &current.partner,
                    &key,
                    &current.fingerprint.to_hex(),
                    &sid(id),
                    &now_ms,
                    &retention.map(|r| now_ms.saturating_add(duration_ms(r))),
                ],
                "record the replay key",
            )
            .await?;
        if inserted == 0 {
            // The host already used the derived key for other work.
            let holder = db
                .query_opt(
                    "SELECT submission_id FROM liaison_idempotency_keys \
                     WHERE partner = $1 AND idempotency_key = $2",
                    &[&current.partner, &key],
                    "read the replay key's holder",
                )
                .await?
                .map(|row| get::<Uuid>(&row, 0))
                .transpose()?
                .unwrap_or_default();
            return Err(Error::IdempotencyConflict {
                partner: current.partner.clone(),
                key,
                existing: to_sid("submission_id", holder)?,
            });
        }
        db.execute(
            "UPDATE liaison_submissions SET idempotency_key = $2 WHERE id = $1",
            &[&sid(id), &key],
            "change the idempotency key",
        )
        .await?;
        key
    } else {
        previous_key.clone()
    };
    let change = StateChange::to(Queued)
        .actor(replay.actor.clone())
        .reason(replay.reason.clone())
        .event(EventKind::Replayed)
        .data(json!({
            "replay": current.replays + 1,
            "previous_key": previous_key,
            "key": key,
            "fresh_key": replay.fresh_key,
        }))
        .due_at(now)
        .at(now);
    apply_change(db, &current, &change, now).await
}

pub(super) async fn note_on(
    db: &Db<'_>,
    id: SubmissionId,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<()> {
    get_on(db, id).await?;
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
    .await
}

pub(super) async fn prune_ledger_on(db: &Db<'_>, now: DateTime<Utc>) -> Result<u64> {
    let unfinished = state_names(|s| !s.is_terminal());
    db.execute(
        "DELETE FROM liaison_idempotency_keys k \
         WHERE k.expires_at IS NOT NULL AND k.expires_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                WHERE s.id = k.submission_id AND s.state = ANY($2))",
        &[&to_millis(now), &unfinished],
        "prune idempotency ledger",
    )
    .await
}
