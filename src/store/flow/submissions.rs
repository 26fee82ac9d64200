//! Enqueue, unleased state changes, replays, notes and deadline moves.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{journal, journal_all};
use crate::error::{Error, Result};
use crate::model::delivery::DeliveryId;
use crate::model::event::Actor;
use crate::model::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};
use crate::store::driver::Driver;
use crate::store::rules::delivery as deliveries;
use crate::store::rules::ledger::{self, KeyRow, Verdict};
use crate::store::rules::{NewEvent, privacy, replay as replays, transition as rules};
use crate::store::{Enqueued, Note, Replay, StateChange};

/// How often an enqueue tries again when the ledger row it ran into went
/// away before it could read it (pruned by another instance meanwhile).
const LEDGER_ROUNDS: usize = 8;

/// Enqueue validated submissions, all of them or (when the caller rolls
/// back on an error) none, in input order.
///
/// A batch records its keys in one statement; each run of items whose key
/// was new is written with one statement per table (submissions,
/// correlations, timeline). An item whose key was held already (by earlier
/// work, or by an earlier item of the batch) goes the one-at-a-time way,
/// in its place, so enqueue order is input order and each item sees the
/// ones before it, as if they had been enqueued one by one.
pub(crate) async fn enqueue<D: Driver>(
    d: &D,
    batch: &[ValidSubmission],
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Vec<Enqueued>> {
    let ids: Vec<SubmissionId> = batch.iter().map(|_| SubmissionId::new()).collect();
    if let ([valid], [id]) = (batch, ids.as_slice()) {
        return Ok(vec![enqueue_one(d, valid, *id, retention, now).await?]);
    }
    let keys: Vec<KeyRow<'_>> = batch
        .iter()
        .zip(&ids)
        .map(|(valid, id)| key_row(valid, *id, now, retention))
        .collect();
    let won = d.insert_keys(&keys).await?;
    let mut out = Vec::with_capacity(batch.len());
    let mut i = 0;
    while i < batch.len() {
        if !won.get(i).copied().unwrap_or(false) {
            out.push(enqueue_one(d, &batch[i], ids[i], retention, now).await?);
            i += 1;
            continue;
        }
        let run = won[i..].iter().take_while(|w| **w).count();
        let created = insert_won(d, &batch[i..i + run], &ids[i..i + run], now).await?;
        out.extend(created.into_iter().map(|submission| Enqueued {
            submission,
            deduplicated: false,
        }));
        i += run;
    }
    Ok(out)
}

fn key_row(
    valid: &ValidSubmission,
    id: SubmissionId,
    now: DateTime<Utc>,
    retention: Option<Duration>,
) -> KeyRow<'_> {
    KeyRow::new(
        &valid.partner,
        &valid.idempotency_key,
        &valid.fingerprint,
        id,
        now,
        retention,
    )
}

/// Write the submissions whose keys this transaction just recorded (under
/// `ids`): rows and correlation index (their `enqueued` lines are read from
/// the rows, [`crate::store::rules::timeline`]).
async fn insert_won<D: Driver>(
    d: &D,
    batch: &[ValidSubmission],
    ids: &[SubmissionId],
    now: DateTime<Utc>,
) -> Result<Vec<Submission>> {
    let rows: Vec<(SubmissionId, &ValidSubmission, DateTime<Utc>)> = batch
        .iter()
        .zip(ids)
        .map(|(valid, id)| (*id, valid, ledger::first_due(valid, now)))
        .collect();
    d.insert_submissions(&rows, now).await?;
    let created = rows
        .iter()
        .map(|(id, valid, due_at)| ledger::created(*id, valid, *due_at, now))
        .collect();
    let correlated: Vec<SubmissionId> = batch
        .iter()
        .zip(ids)
        .filter(|(valid, _)| !valid.correlation.is_empty())
        .map(|(_, id)| *id)
        .collect();
    d.index_correlations(&correlated).await?;
    Ok(created)
}

/// Enqueue one submission under `id` if its key is free: the whole of
/// an enqueue that wins its key, in one statement on PostgreSQL (which
/// runs it alone, without a transaction, when no host transaction is
/// open). `None`, with nothing written, when the key is held: then
/// [`enqueue`] decides (in a transaction).
pub(crate) async fn enqueue_fresh<D: Driver>(
    d: &D,
    valid: &ValidSubmission,
    id: SubmissionId,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Option<Enqueued>> {
    let key = key_row(valid, id, now, retention);
    let due_at = ledger::first_due(valid, now);
    Ok(d.insert_fresh(&key, valid, due_at)
        .await?
        .then(|| Enqueued {
            submission: ledger::created(id, valid, due_at, now),
            deduplicated: false,
        }))
}

/// The ledger decides: the insert that wins the key (partner, key) creates
/// the submission; any other enqueue of that key reads the holder (on
/// PostgreSQL, after the winner's commit) and answers with it, or with a
/// conflict. Never read-then-insert.
async fn enqueue_one<D: Driver>(
    d: &D,
    valid: &ValidSubmission,
    id: SubmissionId,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Enqueued> {
    for _ in 0..LEDGER_ROUNDS {
        if let Some(enqueued) = enqueue_fresh(d, valid, id, retention, now).await? {
            return Ok(enqueued);
        }
        let Some(held) = d.held_key(&valid.partner, &valid.idempotency_key).await? else {
            continue;
        };
        let holder = d.submission(held.submission).await?;
        match ledger::verdict(valid, &held, holder, now)? {
            Verdict::Free => d.delete_key(&valid.partner, &valid.idempotency_key).await?,
            Verdict::Duplicate(holder) => {
                journal(d, &ledger::deduplicated(holder.id, now)).await?;
                return Ok(Enqueued {
                    submission: *holder,
                    deduplicated: true,
                });
            }
        }
    }
    Err(Error::Busy {
        operation: "enqueue",
        source: "the idempotency key kept changing hands; retry".into(),
    })
}

/// A state change no lease governs (deadline passed, result received,
/// manual resolution, cancel).
pub(crate) async fn transition<D: Driver>(
    d: &D,
    id: SubmissionId,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    if let Some(reference) = &change.external_ref {
        // Partners never change: read it unlocked to take the reference
        // lock before the row's.
        let partner = d
            .submission(id)
            .await?
            .ok_or_else(|| Error::not_found("submission", id))?
            .partner;
        d.lock_reference(&partner, reference).await?;
    }
    let locked = d
        .lock_submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))?;
    rules::check_unleased(&locked.submission, change)?;
    if locked.submission.state == SubmissionState::InFlight
        && let Some(token) = locked.lease
    {
        let report = rules::cancelled_attempt(change, now);
        d.finish_attempt(id, token, &report).await?;
    }
    apply_change(d, locked.submission, change, now).await
}

/// Write an allowed change and its timeline line; the row as it is after
/// (built from `current`, which it takes).
pub(crate) async fn apply_change<D: Driver>(
    d: &D,
    current: Submission,
    change: &StateChange,
    now: DateTime<Utc>,
) -> Result<Submission> {
    if let Some(reference) = &change.external_ref
        && let Some(holder) = d
            .reference_holder(&current.partner, reference, current.id)
            .await?
    {
        return Err(rules::reference_taken(
            &current.partner,
            reference,
            Some(holder),
        ));
    }
    let marker = rules::result_not_kept(&current, change, now);
    let (write, event) = stored(d, rules::apply(current, change, now));
    d.write_state(&write).await?;
    journal(d, &event).await?;
    if let Some(marker) = marker {
        journal(d, &marker).await?;
    }
    super::deliveries::record(d, write.from, &write.after, now).await?;
    Ok(write.after)
}

/// A change's write with its texts as `d` keeps them, so that the row it
/// answers with is the row a read returns.
fn stored<D: Driver>(
    d: &D,
    (mut write, event): (rules::StateWrite, NewEvent),
) -> (rules::StateWrite, NewEvent) {
    let after = &mut write.after;
    after.external_ref = after.external_ref.take().map(|t| d.stored_text(t));
    after.last_error = after.last_error.take().map(|t| d.stored_text(t));
    (write, event)
}

/// [`apply_change`] for changes of distinct submissions (each as read and
/// held by this transaction, and taken) that set no partner reference,
/// with one statement per kind of write for all: the states, the timeline
/// (`lines` first, then each change's), the result deliveries. The rows as
/// they are after, in the order given.
pub(crate) async fn apply_changes<D: Driver, C: std::borrow::Borrow<StateChange>>(
    d: &D,
    changes: Vec<(Submission, C)>,
    mut lines: Vec<NewEvent>,
    now: DateTime<Utc>,
) -> Result<Vec<Submission>> {
    let mut writes = Vec::with_capacity(changes.len());
    for (current, change) in changes {
        let change = change.borrow();
        let marker = rules::result_not_kept(&current, change, now);
        let (write, event) = stored(d, rules::apply(current, change, now));
        writes.push(write);
        lines.push(event);
        lines.extend(marker);
    }
    d.write_states(&writes).await?;
    journal_all(d, &lines).await?;
    let finished: Vec<(DeliveryId, &Submission)> = writes
        .iter()
        .filter(|w| deliveries::finishes(w.from, w.after.state))
        .map(|w| (DeliveryId::new(), &w.after))
        .collect();
    d.insert_deliveries(&finished, now).await?;
    Ok(writes.into_iter().map(|w| w.after).collect())
}

/// Replay a failed, dead-lettered or stuck submission.
pub(crate) async fn replay<D: Driver>(
    d: &D,
    id: SubmissionId,
    replay: &Replay,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Submission> {
    replays::check_reason(replay)?;
    let mut current = d
        .lock_submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))?
        .submission;
    let plan = replays::plan(&current, replay, now)?;
    if let Some(key) = &plan.fresh_key {
        let row = KeyRow::new(
            &current.partner,
            key,
            &current.fingerprint,
            id,
            now,
            retention,
        );
        if !d.insert_key(&row).await? {
            // The host already used the derived key for other work.
            return Err(match d.held_key(&current.partner, key).await? {
                Some(held) => ledger::conflict(&current.partner, key, held.submission),
                None => Error::Busy {
                    operation: "replay",
                    source: "the derived idempotency key changed hands; retry".into(),
                },
            });
        }
        d.set_idempotency_key(id, key).await?;
        // The row as it is now: the change's answer is built from it.
        current.idempotency_key.clone_from(key);
    }
    apply_change(d, current, &plan.change, now).await
}

/// Append a note; the state is not touched.
pub(crate) async fn note<D: Driver>(
    d: &D,
    id: SubmissionId,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<()> {
    if d.submission(id).await?.is_none() {
        return Err(Error::not_found("submission", id));
    }
    journal(d, &NewEvent::from_note(id, now, note)).await
}

/// Move an awaited result's deadline and journal why.
pub(crate) async fn defer_deadline<D: Driver>(
    d: &D,
    id: SubmissionId,
    until: DateTime<Utc>,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let current = d
        .lock_submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))?
        .submission;
    rules::check_deferrable(&current)?;
    let updated = d.set_result_deadline(id, until, now).await?;
    journal(d, &NewEvent::from_note(id, now, note)).await?;
    Ok(updated)
}

/// Erase a finished submission's personal data (payload, result,
/// correlation, errors, its callbacks' bodies and headers, the reasons and
/// data on its timeline) and journal the erasure with who and why; the
/// skeleton (ids, states, times, event kinds) stays. The row as it is after.
pub(crate) async fn forget<D: Driver>(
    d: &D,
    id: SubmissionId,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Submission> {
    // Bad input is refused before anything is read or locked.
    privacy::check_request(actor, reason)?;
    d.lock_callbacks_of(id).await?;
    let locked = d
        .lock_submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))?;
    privacy::check_forgettable(&locked.submission)?;
    d.erase(id, now).await?;
    journal(
        d,
        &privacy::forgotten(&locked.submission, actor, reason, now),
    )
    .await?;
    d.submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission", id))
}
