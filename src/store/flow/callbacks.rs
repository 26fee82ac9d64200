//! Settling stored callbacks, and matching those that arrived early.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::journal;
use super::submissions::{apply_change, apply_changes};
use crate::error::{Error, Result};
use crate::model::callback::{
    CallbackId, CallbackReceipt, CallbackReport, Disposition, StoredCallback,
};
use crate::model::event::Actor;
use crate::model::submission::Submission;
use crate::store::driver::{Driver, Waiting};
use crate::store::rules::callbacks::{
    self as rules, Among, CallbackRow, Earlier, End, Repeat, Settle,
};
use crate::store::{NewCallback, Settlement, StateChange};

/// Store an inbound callback as it arrived (raw, or with a disposition
/// decided at once); its id.
pub(crate) async fn record<D: Driver>(d: &D, new: &NewCallback) -> Result<CallbackId> {
    let id = CallbackId::new();
    d.insert_callback(&CallbackRow::arrived(id, new)).await?;
    Ok(id)
}

/// Store an inbound callback and settle it in the same transaction. The
/// host answers the partner only after the commit, so a callback answered
/// with 2xx is stored; a crash before the commit stores nothing and sends
/// no 2xx, and the partner's retry is a new arrival.
pub(crate) async fn record_and_settle<D: Driver>(
    d: &D,
    new: &NewCallback,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    let id = CallbackId::new();
    let stored = CallbackRow::arrived(id, new).stored();
    settle_stored(d, stored, Row::New(new), settlement, now).await
}

/// Where a settled callback's end is written.
#[derive(Debug, Clone, Copy)]
enum Row<'a> {
    /// Its row exists: the report and the end update it.
    Stored,
    /// It arrives in this transaction: its row is written once, whole, when
    /// its end is known (nothing else reads it before the commit).
    New(&'a NewCallback),
}

/// Settle a stored callback: record the verdict and, for a parsed report,
/// recognise repeats and conflicts, match the submission and apply the
/// outcome at most once.
pub(crate) async fn settle<D: Driver>(
    d: &D,
    id: CallbackId,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    // One settle of a callback at a time; the second sees what the first did.
    let stored = d
        .lock_callback(id)
        .await?
        .ok_or_else(|| Error::not_found("callback", id))?;
    settle_stored(d, stored, Row::Stored, settlement, now).await
}

/// [`settle`] a callback this transaction holds: locked, or arriving in it.
async fn settle_stored<D: Driver>(
    d: &D,
    stored: StoredCallback,
    row: Row<'_>,
    settlement: &Settlement,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    let id = stored.id;
    rules::check_settleable(&stored)?;
    match settlement {
        Settlement::Rejected {
            reason,
            metadata_only,
        } => {
            let end = rules::rejected(&stored, reason, *metadata_only);
            finish(d, &stored, Written { row, report: None }, end, now).await
        }
        Settlement::Malformed { reason } => {
            let end = End::new(Disposition::Malformed).detail(reason);
            finish(d, &stored, Written { row, report: None }, end, now).await
        }
        Settlement::Report {
            report,
            unmatched_until,
        } => {
            let outcome = rules::outcome_json(report)?;
            if let Row::Stored = row {
                d.record_report(id, report, &outcome).await?;
            }
            d.lock_report(
                &stored.partner,
                report.event_id.as_deref(),
                &stored.body_hash,
                &report.correlation,
            )
            .await?;
            let written = Written {
                row,
                report: Some((report, &outcome)),
            };
            let applying = Applying {
                report,
                outcome: &outcome,
                unmatched_until: *unmatched_until,
            };
            let receipt = apply_report(d, &stored, written, Among::Others, applying, now).await?;
            // Reliability tests: the report is applied, its transaction not
            // committed.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("liaison::callback::before_commit");
            Ok(receipt)
        }
    }
}

/// Dismiss a quarantined callback: it leaves the quarantine with who, when
/// and why kept with it, and a line on its submission's timeline when it
/// was matched to one.
pub(crate) async fn dismiss<D: Driver>(
    d: &D,
    id: CallbackId,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<StoredCallback> {
    // Bad input is refused before anything is read or locked.
    rules::check_dismissal(actor, reason)?;
    let stored = d
        .lock_callback(id)
        .await?
        .ok_or_else(|| Error::not_found("callback", id))?;
    let plan = rules::dismiss(&stored, actor, reason, now)?;
    d.dismiss_callback(id, &plan.dismissal).await?;
    if let Some(note) = &plan.note {
        journal(d, note).await?;
    }
    d.callback(id).await
}

/// A callback's row and the report to write with it when it is new.
#[derive(Debug, Clone, Copy)]
struct Written<'a> {
    row: Row<'a>,
    report: Option<(&'a CallbackReport, &'a str)>,
}

impl Written<'_> {
    const STORED: Written<'static> = Written {
        row: Row::Stored,
        report: None,
    };
}

async fn finish<D: Driver>(
    d: &D,
    stored: &StoredCallback,
    written: Written<'_>,
    end: End,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    match written.row {
        Row::Stored => d.finish_callback(stored.id, &end, now).await?,
        Row::New(new) => {
            let row = CallbackRow {
                report: written.report,
                end: Some((&end, now)),
                ..CallbackRow::arrived(stored.id, new)
            };
            d.insert_callback(&row).await?;
        }
    }
    Ok(end.receipt(stored.id))
}

/// A callback's report being applied: what it says, that as stored (its
/// outcome's JSON), and until when it may wait for its submission.
#[derive(Debug, Clone, Copy)]
struct Applying<'a> {
    report: &'a CallbackReport,
    outcome: &'a str,
    unmatched_until: DateTime<Utc>,
}

/// Settle a callback by its report: a repeat of an earlier delivery, a
/// match, or none yet (see [`rules::repeat`], [`rules::matched`] and
/// [`rules::no_match`]); `among` says which callbacks it may repeat.
async fn apply_report<D: Driver>(
    d: &D,
    stored: &StoredCallback,
    written: Written<'_>,
    among: Among,
    applying: Applying<'_>,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    let Applying {
        report,
        outcome,
        unmatched_until,
    } = applying;
    // A repeat of an earlier delivery: same event id, or the same body.
    let (by_event, by_body) = repeats(d, &[(stored, report.event_id.as_deref())], among)
        .await?
        .pop()
        .unwrap_or_default();
    if let Some(plan) = rules::repeat(
        stored,
        report,
        outcome,
        by_event.as_ref(),
        by_body.as_ref(),
        now,
    ) {
        return write(d, stored, written, None, plan, now).await;
    }
    match d.correlated(&stored.partner, &report.correlation).await? {
        None => {
            let plan = rules::no_match(&report.correlation, unmatched_until);
            write(d, stored, written, None, plan, now).await
        }
        Some(submission) => {
            let plan = rules::matched(stored, report, &submission, unmatched_until, now);
            write(d, stored, written, Some(&submission), plan, now).await
        }
    }
}

/// Write what settling decided: the outcome on the matched submission, a
/// note on its timeline, the callback's end.
async fn write<D: Driver>(
    d: &D,
    stored: &StoredCallback,
    written: Written<'_>,
    matched: Option<&Submission>,
    plan: Settle,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    if let (Some(submission), Some(change)) = (matched, &plan.change) {
        apply_change(d, submission.clone(), change, now).await?;
    }
    if let Some(note) = &plan.note {
        journal(d, note).await?;
    }
    finish(d, stored, written, plan.end, now).await
}

/// Apply callbacks that were waiting for `submission` (they arrived before
/// its acceptance was recorded; the caller holds its row). Returns the
/// submission as it is after.
pub(super) async fn rematch<D: Driver>(
    d: &D,
    submission: &Submission,
    now: DateTime<Utc>,
) -> Result<Submission> {
    let references = rules::references(submission);
    let waiting = d
        .waiting_callbacks(&submission.partner, &references)
        .await?;
    let mut after = rematch_all(d, vec![(submission.clone(), waiting)], now).await?;
    after
        .pop()
        .ok_or_else(|| Error::not_found("submission", submission.id))
}

/// A waiting callback, read back to be settled again.
struct Pending {
    /// Which of the submissions given it waited for.
    at: usize,
    stored: StoredCallback,
    report: CallbackReport,
    outcome: String,
    /// Its matching window, kept should it still not apply.
    until: DateTime<Utc>,
}

/// Apply the callbacks that waited for each of `waiting`'s submissions
/// (each list oldest first; the caller holds the rows, all written in its
/// transaction), as settling them one after the other, submission by
/// submission, would: the submissions as they are after, in the order given.
///
/// When each callback names its submission by id or by the reference it
/// was found under (so the match is the row held, without a look-up), they
/// are settled in rounds, each with one statement per kind of read and
/// write for all of the round: a callback joins a round once every
/// callback before it (in the one-after-the-other order) that shares its
/// submission, event id or body has been settled, so each sees what those
/// did, as it would one at a time. A batch of results that finds a dozen
/// early callbacks then settles them in a few statements instead of some
/// eight each, while it holds its rows, its locks and its slots.
pub(super) async fn rematch_all<D: Driver>(
    d: &D,
    waiting: Vec<(Submission, Vec<Waiting>)>,
    now: DateTime<Utc>,
) -> Result<Vec<Submission>> {
    let mut current = Vec::with_capacity(waiting.len());
    let mut pending = Vec::new();
    let mut one_by_one = false;
    for (at, (submission, found)) in waiting.into_iter().enumerate() {
        for w in found {
            let stored = w.stored;
            let Some(report) =
                rules::waiting_report(&stored, stored.event_id.clone(), w.outcome.as_deref())
            else {
                continue;
            };
            one_by_one |= !rules::names(&report.correlation, &stored.partner, &submission);
            pending.push(Pending {
                at,
                outcome: rules::outcome_json(&report)?,
                until: w.match_until.unwrap_or(now),
                stored,
                report,
            });
        }
        current.push(submission);
    }
    if one_by_one {
        // A key names the newest submission with it, which may be another
        // one: each is settled as it arrives, with its own look-up.
        for p in &pending {
            let applying = Applying {
                report: &p.report,
                outcome: &p.outcome,
                unmatched_until: p.until,
            };
            apply_report(d, &p.stored, Written::STORED, Among::Before, applying, now).await?;
        }
        let mut after = Vec::with_capacity(current.len());
        for (at, submission) in current.iter().enumerate() {
            let settled_any = pending.iter().any(|p| p.at == at);
            after.push(if settled_any {
                d.submission(submission.id)
                    .await?
                    .ok_or_else(|| Error::not_found("submission", submission.id))?
            } else {
                submission.clone()
            });
        }
        return Ok(after);
    }
    while !pending.is_empty() {
        let (round, later) = next_round(pending);
        settle_round(d, &mut current, &round, now).await?;
        pending = later;
    }
    Ok(current)
}

/// Split `pending` (in the one-after-the-other order) into the callbacks
/// settled in the next round and the rest.
fn next_round(pending: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
    let mut submissions = HashSet::new();
    let mut events = HashSet::new();
    let mut bodies = HashSet::new();
    let mut round = Vec::new();
    let mut later = Vec::new();
    for p in pending {
        // Each callback holds back every later one it could affect or be
        // affected by, whether it goes in this round or waits itself.
        let free = submissions.insert(p.at)
            & p.stored
                .event_id
                .as_ref()
                .is_none_or(|e| events.insert(e.clone()))
            & bodies.insert(p.stored.body_hash.clone());
        if free {
            round.push(p);
        } else {
            later.push(p);
        }
    }
    (round, later)
}

/// Settle one round of [`rematch_all`]: look for repeats, match, write.
async fn settle_round<D: Driver>(
    d: &D,
    current: &mut [Submission],
    round: &[Pending],
    now: DateTime<Utc>,
) -> Result<()> {
    // Repeats, by event id and by body (the rule decides by event first).
    let looked_up: Vec<(&StoredCallback, Option<&str>)> = round
        .iter()
        .map(|p| (&p.stored, p.report.event_id.as_deref()))
        .collect();
    let found = repeats(d, &looked_up, Among::Before).await?;

    // Decide each, against its submission as the rounds before left it.
    let mut notes = Vec::new();
    let mut changes: Vec<(usize, StateChange)> = Vec::new();
    let mut ends: Vec<(CallbackId, End)> = Vec::with_capacity(round.len());
    for (p, (by_event, by_body)) in round.iter().zip(&found) {
        let plan = match rules::repeat(
            &p.stored,
            &p.report,
            &p.outcome,
            by_event.as_ref(),
            by_body.as_ref(),
            now,
        ) {
            Some(plan) => plan,
            None => rules::matched(&p.stored, &p.report, &current[p.at], p.until, now),
        };
        notes.extend(plan.note);
        if let Some(change) = plan.change {
            changes.push((p.at, change));
        }
        ends.push((p.stored.id, plan.end));
    }

    // Write: states (with their lines and deliveries), notes, ends.
    let applying = changes
        .iter()
        .map(|(at, change)| (current[*at].clone(), change))
        .collect();
    let updated = apply_changes(d, applying, notes, now).await?;
    for ((at, _), after) in changes.iter().zip(updated) {
        current[*at] = after;
    }
    let ends: Vec<(CallbackId, &End)> = ends.iter().map(|(id, end)| (*id, end)).collect();
    d.finish_callbacks(&ends, now).await
}

/// The earlier deliveries each callback (with its event id, if it has one)
/// may repeat, `(by event, by body)`, among `among`: both keys of every
/// callback in one look-up (one statement on PostgreSQL), since
/// [`rules::repeat`] decides by the event first whatever the body found.
async fn repeats<D: Driver>(
    d: &D,
    callbacks: &[(&StoredCallback, Option<&str>)],
    among: Among,
) -> Result<Vec<(Option<Earlier>, Option<Earlier>)>> {
    let mut wanted = Vec::with_capacity(callbacks.len() * 2);
    for (stored, event_id) in callbacks {
        if let Some(event_id) = event_id {
            wanted.push((*stored, Repeat::Event(event_id)));
        }
        wanted.push((*stored, Repeat::Body(&stored.body_hash)));
    }
    let mut found = d.earlier_callbacks(&wanted, among).await?.into_iter();
    let mut out = Vec::with_capacity(callbacks.len());
    for (_, event_id) in callbacks {
        let by_event = match event_id {
            Some(_) => found.next().flatten(),
            None => None,
        };
        out.push((by_event, found.next().flatten()));
    }
    Ok(out)
}
