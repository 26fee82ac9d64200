//! Settling stored callbacks, and matching those that arrived early.

use chrono::{DateTime, Utc};

use super::journal;
use super::submissions::apply_change;
use crate::error::{Error, Result};
use crate::model::callback::{
    CallbackId, CallbackReceipt, CallbackReport, Disposition, StoredCallback,
};
use crate::model::event::Actor;
use crate::model::submission::Submission;
use crate::store::driver::{Driver, Waiting};
use crate::store::rules::callbacks::{self as rules, CallbackRow, End, Repeat, Settle};
use crate::store::{NewCallback, Settlement};

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
            let receipt =
                apply_report(d, &stored, written, report, &outcome, *unmatched_until, now).await?;
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

async fn apply_report<D: Driver>(
    d: &D,
    stored: &StoredCallback,
    written: Written<'_>,
    report: &CallbackReport,
    outcome: &str,
    unmatched_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<CallbackReceipt> {
    // A repeat of an earlier delivery: same event id, or the same body.
    if let Some(event_id) = &report.event_id
        && let Some(earlier) = d.earlier_callback(stored, Repeat::Event(event_id)).await?
    {
        let plan = rules::repeat_of_event(stored, event_id, &earlier, outcome, now);
        return write(d, stored, written, None, plan, now).await;
    }
    if let Some(earlier) = d
        .earlier_callback(stored, Repeat::Body(&stored.body_hash))
        .await?
        && let Some(plan) = rules::repeat_of_body(&earlier, outcome)
    {
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
        apply_change(d, submission, change, now).await?;
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
    rematch_waiting(d, submission, waiting, now).await
}

/// [`rematch`] with the callbacks waiting for `submission` already found
/// (oldest first).
pub(super) async fn rematch_waiting<D: Driver>(
    d: &D,
    submission: &Submission,
    waiting: Vec<Waiting>,
    now: DateTime<Utc>,
) -> Result<Submission> {
    if waiting.is_empty() {
        // Nothing arrived early (the usual case): the row is as given.
        return Ok(submission.clone());
    }
    for w in waiting {
        let stored = w.stored;
        let Some(report) =
            rules::waiting_report(&stored, stored.event_id.clone(), w.outcome.as_deref())
        else {
            continue;
        };
        let outcome = rules::outcome_json(&report)?;
        // Keep its matching window should it still not apply.
        let until = w.match_until.unwrap_or(now);
        apply_report(d, &stored, Written::STORED, &report, &outcome, until, now).await?;
    }
    d.submission(submission.id)
        .await?
        .ok_or_else(|| Error::not_found("submission", submission.id))
}
