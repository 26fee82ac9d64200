//! The SQL behind [`super::SqliteStore`]: plain functions over a connection,
//! so the writer thread and the host's own transaction run the same code.
//! Every statement is parameterised and prepared through the statement cache.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde_json::{Value, json};

pub(super) use super::queries::{
    SUBMISSION_COLUMNS, attempts_on, corrupt, find_on, get_on, list_on, submission_from_row,
    timeline_on,
};
use crate::error::{Error, Result};
use crate::event::{Actor, AttemptOutcome, EventKind};
use crate::store::{
    AttemptReport, ClaimRequest, Enqueued, Lease, LeaseToken, Note, Replay, StateChange,
};
use crate::submission::{
    MAX_KEY_BYTES, Submission, SubmissionId, SubmissionState, ValidSubmission,
};

/// Longest error or reason text kept in the database, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

/// Map a driver error to the crate's error, keeping it as the source.
pub(crate) fn db_err(operation: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |e| {
        if is_busy(&e) {
            Error::Busy {
                operation,
                source: Box::new(e),
            }
        } else {
            Error::Storage {
                operation,
                source: Box::new(e),
            }
        }
    }
}

pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Cut a text to at most [`MAX_TEXT_BYTES`] on a character boundary.
pub(super) fn bounded(text: Option<&str>) -> Option<String> {
    text.map(|t| {
        if t.len() <= MAX_TEXT_BYTES {
            t.to_owned()
        } else {
            let mut end = MAX_TEXT_BYTES;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &t[..end])
        }
    })
}

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

pub(super) fn append_event(conn: &Connection, e: NewEvent<'_>) -> Result<()> {
    if let Some(data) = e.data {
        crate::submission::check_depth("data", data)?;
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO liaison_events (submission_id, at, kind, from_state, to_state, actor, reason, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db_err("append event"))?;
    stmt.execute(params![
        e.id.to_string(),
        to_millis(e.at),
        e.kind.as_str(),
        e.from.map(SubmissionState::as_str),
        e.to.map(SubmissionState::as_str),
        e.actor.as_str(),
        bounded(e.reason),
        e.data.map(Value::to_string),
    ])
    .map_err(db_err("append event"))?;
    Ok(())
}

/// Settings enqueue needs from the store's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnqueueRules {
    pub(crate) ledger_retention: Option<Duration>,
}

/// Enqueue validated submissions on `conn`, inside whatever transaction the
/// caller has open (the writer's, or the host's own).
pub(crate) fn enqueue_on(
    conn: &Connection,
    batch: &[ValidSubmission],
    rules: EnqueueRules,
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>> {
    batch
        .iter()
        .map(|valid| enqueue_one(conn, valid, rules, now))
        .collect()
}

fn enqueue_one(
    conn: &Connection,
    valid: &ValidSubmission,
    rules: EnqueueRules,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    let now_ms = to_millis(now);
    let existing: Option<(String, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT fingerprint, submission_id, expires_at FROM liaison_idempotency_keys \
             WHERE partner = ?1 AND idempotency_key = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![valid.partner, valid.idempotency_key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(db_err("read idempotency ledger"))?;

    if let Some((fingerprint, submission_id, expires_at)) = existing {
        let existing_id: SubmissionId = submission_id.parse()?;
        let holder = find_on(conn, existing_id)?;
        let expired = expires_at.is_some_and(|at| at <= now_ms);
        let holder_terminal = holder.as_ref().is_none_or(|s| s.state.is_terminal());
        if expired && holder_terminal {
            // Retention is over and the work is finished: the key is free again.
            conn.prepare_cached(
                "DELETE FROM liaison_idempotency_keys WHERE partner = ?1 AND idempotency_key = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![valid.partner, valid.idempotency_key]))
            .map_err(db_err("prune idempotency key"))?;
        } else {
            let holder = holder.ok_or_else(|| Error::not_found("submission", existing_id))?;
            if fingerprint != valid.fingerprint.to_hex() {
                return Err(Error::IdempotencyConflict {
                    partner: valid.partner.clone(),
                    key: valid.idempotency_key.clone(),
                    existing: existing_id,
                });
            }
            append_event(
                conn,
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
            )?;
            return Ok(Enqueued {
                submission: holder,
                deduplicated: true,
            });
        }
    }

    let id = SubmissionId::new();
    let due_at = valid
        .not_before
        .map_or(now_ms, |nb| to_millis(nb).max(now_ms));
    let correlation = if valid.correlation.is_empty() {
        None
    } else {
        Some(json!(valid.correlation).to_string())
    };
    // RETURNING gives back the stored row, so the enqueue does not read it again.
    let submission = conn
        .prepare_cached(&format!(
            "INSERT INTO liaison_submissions (id, partner, kind, payload, fingerprint, idempotency_key, \
             ordering_key, correlation, business_value, priority, state, attempts, due_at, not_before, \
             created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', 0, ?11, ?12, ?13, ?13) \
             RETURNING {SUBMISSION_COLUMNS}"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
            id.to_string(),
            valid.partner,
            valid.kind,
            valid.payload_json,
            valid.fingerprint.to_hex(),
            valid.idempotency_key,
            valid.ordering_key,
            correlation,
            valid.business_value,
            valid.priority,
            due_at,
                    valid.not_before.map(to_millis),
                    now_ms,
                ],
                submission_from_row,
            )
        })
        .map_err(db_err("insert submission"))?;
    let expires_at = rules
        .ledger_retention
        .map(|r| now_ms.saturating_add(duration_ms(r)));
    conn.prepare_cached(
        "INSERT INTO liaison_idempotency_keys (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            valid.partner,
            valid.idempotency_key,
            valid.fingerprint.to_hex(),
            id.to_string(),
            now_ms,
            expires_at,
        ])
    })
    .map_err(db_err("record idempotency key"))?;
    append_event(
        conn,
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
    )?;
    Ok(Enqueued {
        submission,
        deduplicated: false,
    })
}

pub(crate) fn claim_on(conn: &Connection, request: &ClaimRequest) -> Result<Vec<Lease>> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let now_ms = to_millis(request.now);
    let blocking_states = if request.dead_letter_blocks_ordering {
        "('queued', 'in_flight', 'dead_lettered')"
    } else {
        "('queued', 'in_flight')"
    };
    let sql = format!(
        "SELECT s.id FROM liaison_submissions s \
         WHERE s.partner = ?1 AND s.state = 'queued' AND s.due_at <= ?2 \
           AND (s.ordering_key IS NULL OR NOT EXISTS ( \
                SELECT 1 FROM liaison_submissions p \
                WHERE p.partner = s.partner AND p.ordering_key = s.ordering_key \
                  AND p.seq < s.seq AND p.state IN {blocking_states})) \
         ORDER BY s.priority DESC, s.due_at, s.seq LIMIT ?3"
    );
    let ids: Vec<String> = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    request.partner,
                    now_ms,
                    i64::try_from(request.limit).unwrap_or(i64::MAX)
                ],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(db_err("find due work"))?;

    let expires_at = request.lease_end();
    let actor = Actor::system("dispatcher");
    let mut leases = Vec::with_capacity(ids.len());
    for id in ids {
        let token = LeaseToken::fresh();
        let submission_id: SubmissionId = id.parse()?;
        let submission = conn
            .prepare_cached(&format!(
                "UPDATE liaison_submissions SET state = 'in_flight', lease_token = ?2, \
                 lease_expires_at = ?3, attempts = attempts + 1, updated_at = ?4 \
                 WHERE id = ?1 AND state = 'queued' RETURNING {SUBMISSION_COLUMNS}"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![id, token.to_string(), to_millis(expires_at), now_ms],
                    submission_from_row,
                )
            })
            .map_err(db_err("claim submission"))?;
        let attempt = submission.attempts;
        conn.prepare_cached(
            "INSERT INTO liaison_attempts (submission_id, number, lease_token, started_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut stmt| stmt.execute(params![id, attempt, token.to_string(), now_ms]))
        .map_err(db_err("start attempt"))?;
        append_event(
            conn,
            NewEvent {
                id: submission_id,
                at: request.now,
                kind: &EventKind::Claimed,
                from: Some(SubmissionState::Queued),
                to: Some(SubmissionState::InFlight),
                actor: &actor,
                reason: None,
                data: Some(&json!({ "attempt": attempt, "lease_token": token.to_string() })),
            },
        )?;
        leases.push(Lease {
            submission,
            token,
            attempt,
            expires_at,
        });
    }
    Ok(leases)
}

/// What [`complete_on`] did.
pub(crate) enum Completion {
    Applied(Box<Submission>),
    Stale,
}

pub(crate) fn complete_on(
    conn: &Connection,
    lease: &Lease,
    report: &AttemptReport,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Completion> {
    let id = lease.submission.id;
    // The row and its current lease in one read.
    let (current, current_token): (Submission, Option<String>) = conn
        .prepare_cached(&format!(
            "SELECT {SUBMISSION_COLUMNS}, lease_token FROM liaison_submissions WHERE id = ?1"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![id.to_string()], |row| {
                Ok((submission_from_row(row)?, row.get(24)?))
            })
            .optional()
        })
        .map_err(db_err("read submission"))?
        .ok_or_else(|| Error::not_found("submission", id))?;
    let token = lease.token.to_string();
    if current.state != SubmissionState::InFlight || current_token.as_deref() != Some(&token) {
        append_event(
            conn,
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
                    "lease_token": token,
                    "outcome": report.outcome.as_str(),
                    "http_status": report.http_status,
                    "wanted_state": change.target.as_str(),
                    "state": current.state.as_str(),
                })),
            },
        )?;
        return Ok(Completion::Stale);
    }
    check_transition(&current, change.target)?;
    finish_attempt(conn, id, &token, report)?;
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
    let applied = apply_change(conn, &current, &change, now)?;
    // A callback that arrived before this result was recorded can match now.
    let applied = if applied.state == SubmissionState::Queued {
        applied
    } else {
        super::callbacks::rematch_on(conn, &applied, now)?
    };
    // Reliability tests: the result is written, its transaction not
    // committed.
    #[cfg(feature = "failpoints")]
    fail::fail_point!("liaison::complete::before_commit");
    Ok(Completion::Applied(Box::new(applied)))
}

fn merge_data(given: Option<&Value>, extra: Value) -> Value {
    match (given, extra) {
        (Some(Value::Object(given)), Value::Object(mut extra)) => {
            extra.extend(given.clone());
            Value::Object(extra)
        }
        (Some(other), _) => other.clone(),
        (None, extra) => extra,
    }
}

fn finish_attempt(
    conn: &Connection,
    id: SubmissionId,
    token: &str,
    report: &AttemptReport,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE liaison_attempts SET finished_at = ?3, outcome = ?4, http_status = ?5, error = ?6 \
         WHERE submission_id = ?1 AND lease_token = ?2 AND finished_at IS NULL",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.to_string(),
            token,
            to_millis(report.finished_at),
            report.outcome.as_str(),
            report.http_status,
            bounded(report.error.as_deref()),
        ])
    })
    .map_err(db_err("finish attempt"))?;
    Ok(())
}

fn check_transition(current: &Submission, to: SubmissionState) -> Result<()> {
    if !current.state.can_become(to) {
        return Err(Error::InvalidTransition {
            id: current.id,
            from: current.state,
            to,
            reason: "not in the transition table",
        });
    }
    Ok(())
}

pub(crate) fn transition_on(
    conn: &Connection,
    id: SubmissionId,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let current = get_on(conn, id)?;
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
    if current.state == SubmissionState::InFlight {
        // Cancelled while an attempt runs: close the attempt; the worker's
        // late result will find its lease gone and be journaled as stale.
        let token: Option<String> = conn
            .prepare_cached("SELECT lease_token FROM liaison_submissions WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row(params![id.to_string()], |row| row.get(0)))
            .map_err(db_err("read lease"))?;
        if let Some(token) = token {
            let report = AttemptReport {
                outcome: AttemptOutcome::Cancelled,
                http_status: None,
                error: change.reason.clone(),
                finished_at: change.at.unwrap_or(now),
            };
            finish_attempt(conn, id, &token, &report)?;
        }
    }
    apply_change(conn, &current, change, now)
}

/// Write the new state and its event. The caller has checked the table.
pub(super) fn apply_change(
    conn: &Connection,
    current: &Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    use SubmissionState::*;
    let at = change.at.unwrap_or(now);
    let at_ms = to_millis(at);
    let to = change.target;
    if let Some(reference) = &change.external_ref {
        let holder: Option<String> = conn
            .prepare_cached(
                "SELECT id FROM liaison_submissions WHERE partner = ?1 AND external_ref = ?2 AND id <> ?3",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![current.partner, reference, current.id.to_string()],
                    |row| row.get(0),
                )
                .optional()
            })
            .map_err(db_err("check external reference"))?;
        if let Some(holder) = holder {
            return Err(Error::invalid(
                "external_ref",
                format!("partner reference {reference:?} already belongs to submission {holder}"),
            ));
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
    let external_ref = change.external_ref.clone().or(current.external_ref.clone());
    let last_error = bounded(change.error.as_deref()).or(current.last_error.clone());
    // The partner accepted it (and, for a synchronous answer, finished it).
    let accepted = current.state == InFlight && matches!(to, AwaitingResult | Succeeded | Failed);
    // A replay: a new cycle with a fresh retry budget.
    let new_cycle = to == Queued && current.state != InFlight;
    // One statement for the state, the acceptance time and the cycle; SET
    // expressions read the row as it was, and RETURNING gives it as it is.
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE liaison_submissions SET state = ?2, due_at = ?3, result_deadline = ?4, \
             terminal_at = ?5, external_ref = ?6, last_error = ?7, updated_at = ?8, \
             lease_token = NULL, lease_expires_at = NULL, \
             accepted_at = CASE WHEN ?9 THEN COALESCE(accepted_at, ?8) ELSE accepted_at END, \
             replays = replays + ?10, \
             attempts_before_cycle = CASE WHEN ?10 THEN attempts ELSE attempts_before_cycle END, \
             cycle_started_at = CASE WHEN ?10 THEN ?8 ELSE cycle_started_at END \
             WHERE id = ?1 RETURNING {SUBMISSION_COLUMNS}"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    current.id.to_string(),
                    to.as_str(),
                    due_at,
                    result_deadline,
                    terminal_at,
                    external_ref,
                    last_error,
                    at_ms,
                    accepted,
                    i64::from(new_cycle),
                ],
                submission_from_row,
            )
        })
        .map_err(db_err("change state"))?;
    let kind = change
        .event
        .clone()
        .unwrap_or_else(|| EventKind::for_transition(current.state, to));
    let reason = change.reason.as_deref().or(change.error.as_deref());
    append_event(
        conn,
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
    )?;
    Ok(updated)
}

/// The key a fresh-key replay uses: the original key (without an earlier
/// replay suffix) plus `~replay<n>`, cut to fit [`MAX_KEY_BYTES`].
fn replay_key(key: &str, n: u32) -> String {
    let base = match key.rsplit_once("~replay") {
        Some((base, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => key,
    };
    let suffix = format!("~replay{n}");
    let mut end = base.len().min(MAX_KEY_BYTES - suffix.len());
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

pub(crate) fn replay_on(
    conn: &Connection,
    id: SubmissionId,
    replay: &Replay,
    rules: EnqueueRules,
    now: DateTime<Utc>,
) -> Result<Submission> {
    use SubmissionState::*;
    if replay.reason.trim().is_empty() {
        return Err(Error::invalid("reason", "say why it is replayed"));
    }
    let current = get_on(conn, id)?;
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
        let inserted = conn
            .prepare_cached(
                "INSERT INTO liaison_idempotency_keys (partner, idempotency_key, fingerprint, submission_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (partner, idempotency_key) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    current.partner,
                    key,
                    current.fingerprint.to_hex(),
                    id.to_string(),
                    now_ms,
                    rules.ledger_retention.map(|r| now_ms.saturating_add(duration_ms(r))),
                ])
            })
            .map_err(db_err("record the replay key"))?;
        if inserted == 0 {
            // The host already used the derived key for other work.
            let existing: String = conn
                .query_row(
                    "SELECT submission_id FROM liaison_idempotency_keys \
                     WHERE partner = ?1 AND idempotency_key = ?2",
                    params![current.partner, key],
                    |row| row.get(0),
                )
                .map_err(db_err("read the replay key's holder"))?;
            return Err(Error::IdempotencyConflict {
                partner: current.partner.clone(),
                key,
                existing: existing.parse()?,
            });
        }
        conn.prepare_cached("UPDATE liaison_submissions SET idempotency_key = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![id.to_string(), key]))
            .map_err(db_err("change the idempotency key"))?;
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
    apply_change(conn, &current, &change, now)
}

pub(crate) fn note_on(
    conn: &Connection,
    id: SubmissionId,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<()> {
    get_on(conn, id)?;
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
    )
}

/// Return expired leases to the queue (at most 1,000 per call).
pub(crate) fn reap_on(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<SubmissionId>> {
    let expired: Vec<(String, String, u32)> = conn
        .prepare_cached(
            "SELECT id, lease_token, attempts FROM liaison_submissions \
             WHERE state = 'in_flight' AND lease_expires_at <= ?1 \
             ORDER BY lease_expires_at LIMIT 1000",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![to_millis(now)], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect()
        })
        .map_err(db_err("find expired leases"))?;
    let mut reaped = Vec::with_capacity(expired.len());
    for (id, token, attempt) in expired {
        let id: SubmissionId = id.parse()?;
        let current = get_on(conn, id)?;
        let report = AttemptReport {
            outcome: AttemptOutcome::LeaseExpired,
            http_status: None,
            error: Some("the worker did not report before its lease expired".into()),
            finished_at: now,
        };
        finish_attempt(conn, id, &token, &report)?;
        let change = StateChange::to(SubmissionState::Queued)
            .actor(Actor::system("reaper"))
            .event(EventKind::LeaseExpired)
            .reason("lease expired before the worker reported; returned to the queue")
            .data(json!({ "attempt": attempt, "lease_token": token }))
            .due_at(now)
            .at(now);
        apply_change(conn, &current, &change, now)?;
        reaped.push(id);
    }
    Ok(reaped)
}

/// `('a', 'b', ...)`: the stored names of the states that `keep` selects,
/// for an SQL `IN` list (names are our own constants, never input).
fn state_list(keep: impl Fn(SubmissionState) -> bool) -> String {
    let names: Vec<String> = SubmissionState::ALL
        .into_iter()
        .filter(|s| keep(*s))
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

pub(crate) fn prune_ledger_on(conn: &Connection, now: DateTime<Utc>) -> Result<u64> {
    let unfinished = state_list(|s| !s.is_terminal());
    let removed = conn
        .prepare_cached(&format!(
            "DELETE FROM liaison_idempotency_keys \
             WHERE expires_at IS NOT NULL AND expires_at <= ?1 \
               AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                    WHERE s.id = liaison_idempotency_keys.submission_id \
                      AND s.state IN {unfinished})"
        ))
        .and_then(|mut stmt| stmt.execute(params![to_millis(now)]))
        .map_err(db_err("prune idempotency ledger"))?;
    Ok(removed as u64)
}

#[cfg(test)]
mod tests {
    use super::replay_key;

    #[test]
    fn replay_keys_derive_from_the_original_and_fit() {
        assert_eq!(replay_key("C-1", 1), "C-1~replay1");
        assert_eq!(replay_key("C-1~replay1", 2), "C-1~replay2");
        assert_eq!(replay_key("a~replayx", 1), "a~replayx~replay1");
        let long = "é".repeat(200);
        let k = replay_key(&long, 12);
        assert!(k.len() <= 255 && k.ends_with("~replay12"));
    }
}
