//! Settling a stored callback: repeats and conflicts, matching, and the
//! outcome it applies at most once.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::NewEvent;
use crate::error::{Error, Result};
use crate::model::callback::{
    CallbackId, CallbackReceipt, CallbackReport, Correlation, Dismissal, Disposition,
    ReportedOutcome, StoredCallback,
};
use crate::model::event::{Actor, EventKind};
use crate::model::result::ResultDocument;
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::{NewCallback, StateChange};

/// Dispositions of an earlier callback that make a new one a repeat of it
/// (a callback rejected or quarantined earlier was never understood; one
/// dismissed was set aside, so a new delivery of it is news again).
pub(crate) const REPEATABLE: [Disposition; 5] = [
    Disposition::Applied,
    Disposition::Duplicate,
    Disposition::Late,
    Disposition::Unmatched,
    Disposition::Conflicting,
];

/// Dispositions that are final for retention: a callback with one of them
/// may have its row deleted after `callback_row_retention`. Never one still
/// `received` (not processed yet) or `unmatched` (waiting for a match).
/// Quarantined ones (malformed, rejected, expired) are included: their
/// bodies went long before, so they can no longer be reprocessed; so are
/// dismissed ones.
pub(crate) const SETTLED_FOR_GOOD: [Disposition; 10] = [
    Disposition::Applied,
    Disposition::Duplicate,
    Disposition::Late,
    Disposition::Conflicting,
    Disposition::Rejected,
    Disposition::Expired,
    Disposition::TooLarge,
    Disposition::Malformed,
    Disposition::Incomplete,
    Disposition::Dismissed,
];

/// The dispositions a callback to a name that is no configured partner is
/// stored with (it is never processed further).
pub(crate) const UNKNOWN_NAME: [Disposition; 3] = [
    Disposition::Rejected,
    Disposition::TooLarge,
    Disposition::Incomplete,
];

/// `dispositions` as a quoted SQL list (`'a', 'b'`): our own constants,
/// never input.
pub(crate) fn sql_list(dispositions: &[Disposition]) -> String {
    dispositions
        .iter()
        .map(|d| format!("'{}'", d.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuse to settle a callback that is settled already.
pub(crate) fn check_settleable(stored: &StoredCallback) -> Result<()> {
    if stored.disposition.is_reprocessable() {
        Ok(())
    } else {
        Err(Error::AlreadySettled {
            id: stored.id,
            disposition: stored.disposition,
        })
    }
}

/// Refuse a dismissal without an actor or a reason (before anything is read).
pub(crate) fn check_dismissal(actor: &Actor, reason: &str) -> Result<()> {
    if actor.as_str().trim().is_empty() {
        return Err(Error::invalid("actor", "say who dismisses the callback"));
    }
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            "say why the callback is dismissed (it is journaled)",
        ));
    }
    Ok(())
}

/// What dismissing a quarantined callback writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dismiss {
    /// The record kept with the callback (its disposition becomes
    /// [`Disposition::Dismissed`]).
    pub(crate) dismissal: Dismissal,
    /// A line on the timeline of the submission it was matched to, if any.
    pub(crate) note: Option<NewEvent>,
}

/// Dismiss a quarantined callback: only one of [`Disposition::QUARANTINED`]
/// leaves the quarantine this way ([`Error::NotQuarantined`] otherwise).
pub(crate) fn dismiss(
    stored: &StoredCallback,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Dismiss> {
    check_dismissal(actor, reason)?;
    if !stored.disposition.is_quarantined() {
        return Err(Error::NotQuarantined {
            id: stored.id,
            disposition: stored.disposition,
        });
    }
    let reason = crate::store::common::bounded(Some(reason.trim())).unwrap_or_default();
    let note = stored.submission_id.map(|id| {
        NewEvent::note(
            id,
            now,
            EventKind::CallbackDismissed,
            actor.clone(),
            Some(reason.clone()),
            Some(json!({
                "callback_id": stored.id.to_string(),
                "was": stored.disposition.as_str(),
            })),
        )
    });
    Ok(Dismiss {
        dismissal: Dismissal {
            actor: actor.clone(),
            at: now,
            reason,
            from: stored.disposition,
        },
        note,
    })
}

/// How a callback ends: its disposition and what goes with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct End {
    pub(crate) disposition: Disposition,
    pub(crate) detail: Option<String>,
    pub(crate) submission: Option<SubmissionId>,
    /// For an unmatched callback: until when a submission may still match it.
    pub(crate) match_until: Option<DateTime<Utc>>,
    /// Keep the callback as metadata only: clear its body and replace its
    /// headers with these (the allowlisted ones).
    pub(crate) metadata_only: Option<Vec<(String, String)>>,
}

impl End {
    pub(crate) fn new(disposition: Disposition) -> Self {
        End {
            disposition,
            detail: None,
            submission: None,
            match_until: None,
            metadata_only: None,
        }
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn submission(mut self, submission: Option<SubmissionId>) -> Self {
        self.submission = submission;
        self
    }

    fn until(mut self, until: DateTime<Utc>) -> Self {
        self.match_until = Some(until);
        self
    }

    /// The answer for the partner.
    pub(crate) fn receipt(&self, id: CallbackId) -> CallbackReceipt {
        CallbackReceipt {
            callback_id: id,
            disposition: self.disposition,
            http_status: self.disposition.http_status(),
            submission_id: self.submission,
            detail: self.detail.clone(),
        }
    }
}

/// A callback's row as it is first written: as it arrived, or, for one
/// stored and settled in the same transaction, whole with what settling
/// decided (its report and its end), so the row is written once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallbackRow<'a> {
    pub(crate) id: CallbackId,
    pub(crate) new: &'a NewCallback,
    /// What it reports, and that outcome as JSON ([`outcome_json`]).
    pub(crate) report: Option<(&'a CallbackReport, &'a str)>,
    /// How it was settled, and when.
    pub(crate) end: Option<(&'a End, DateTime<Utc>)>,
}

impl<'a> CallbackRow<'a> {
    /// `new` as it arrived (its disposition and error as given).
    pub(crate) fn arrived(id: CallbackId, new: &'a NewCallback) -> Self {
        CallbackRow {
            id,
            new,
            report: None,
            end: None,
        }
    }

    /// The row as the rules see it before it is written: arrived, not yet
    /// settled.
    pub(crate) fn stored(&self) -> StoredCallback {
        let new = self.new;
        StoredCallback {
            id: self.id,
            partner: new.partner.clone(),
            received_at: new.received_at,
            headers: new.headers.clone(),
            body: new.body.clone(),
            body_hash: new.body_hash.clone(),
            size: new.size,
            event_id: None,
            correlation: None,
            disposition: new.disposition,
            error: new.error.clone(),
            submission_id: None,
            processed_at: None,
            dismissal: None,
        }
    }

    /// The headers to keep: the allowlisted ones alone when it is kept as
    /// metadata only.
    pub(crate) fn headers(&self) -> &'a [(String, String)] {
        match self.end {
            Some((
                End {
                    metadata_only: Some(headers),
                    ..
                },
                _,
            )) => headers,
            _ => &self.new.headers,
        }
    }

    /// The body to keep: none when it is kept as metadata only.
    pub(crate) fn body(&self) -> Option<&'a [u8]> {
        match self.end {
            Some((end, _)) if end.metadata_only.is_some() => None,
            _ => self.new.body.as_deref(),
        }
    }

    pub(crate) fn disposition(&self) -> Disposition {
        self.end
            .map_or(self.new.disposition, |(end, _)| end.disposition)
    }

    pub(crate) fn error(&self) -> Option<&'a str> {
        match self.end {
            Some((end, _)) => end.detail.as_deref(),
            None => self.new.error.as_deref(),
        }
    }

    pub(crate) fn submission(&self) -> Option<SubmissionId> {
        self.end.and_then(|(end, _)| end.submission)
    }

    /// When it was settled: now for a settled one, on arrival for one
    /// whose disposition was decided at once.
    pub(crate) fn processed_at(&self) -> Option<DateTime<Utc>> {
        match self.end {
            Some((_, now)) => Some(now),
            None => (self.new.disposition != Disposition::Received).then_some(self.new.received_at),
        }
    }

    pub(crate) fn match_until(&self) -> Option<DateTime<Utc>> {
        self.end.and_then(|(end, _)| end.match_until)
    }

    pub(crate) fn event_id(&self) -> Option<&'a str> {
        self.report.and_then(|(r, _)| r.event_id.as_deref())
    }

    /// The correlation as stored (`Correlation::to_stored`).
    pub(crate) fn reference(&self) -> Option<String> {
        self.report.map(|(r, _)| r.correlation.to_stored())
    }

    pub(crate) fn outcome(&self) -> Option<&'a str> {
        self.report.map(|(_, outcome)| outcome)
    }
}

/// What settling a parsed report writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settle {
    pub(crate) end: End,
    /// A line on the matched submission's timeline.
    pub(crate) note: Option<NewEvent>,
    /// The outcome to apply to the matched submission.
    pub(crate) change: Option<StateChange>,
}

impl Settle {
    fn end(end: End) -> Self {
        Settle {
            end,
            note: None,
            change: None,
        }
    }

    fn noted(end: End, note: Option<NewEvent>) -> Self {
        Settle {
            end,
            note,
            change: None,
        }
    }
}

/// The end of a callback that failed verification. Past the partner's
/// hourly cap of stored unverified bodies (`metadata_only`), it keeps
/// metadata only: no body, and of its headers only those kept for callbacks
/// to unknown names ([`METADATA_HEADERS`], values up to
/// [`MAX_METADATA_HEADER_BYTES`]).
pub(crate) fn rejected(stored: &StoredCallback, reason: &str, metadata_only: bool) -> End {
    let end = End::new(Disposition::Rejected).detail(reason);
    if !metadata_only {
        return end;
    }
    let headers = stored
        .headers
        .iter()
        .filter(|(name, value)| {
            METADATA_HEADERS.contains(&name.to_ascii_lowercase().as_str())
                && value.len() <= MAX_METADATA_HEADER_BYTES
        })
        .cloned()
        .collect();
    End {
        metadata_only: Some(headers),
        ..end
    }
}

/// The only headers kept with a callback whose body is not kept (one to a
/// name that is no configured partner, or one beyond the hourly cap of
/// rejected bodies): what helps tell where a flood comes from, nothing a
/// sender could use to store data.
pub(crate) const METADATA_HEADERS: [&str; 2] = ["content-type", "user-agent"];
/// Longest allowlisted header value kept with metadata only, in bytes.
pub(crate) const MAX_METADATA_HEADER_BYTES: usize = 256;

/// An earlier callback of the same partner that a new one may repeat.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Earlier {
    /// Its reported outcome, as stored ([`outcome_json`]).
    pub(crate) outcome: Option<String>,
    pub(crate) submission: Option<SubmissionId>,
}

/// What an earlier callback is looked up by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Repeat<'a> {
    /// The partner's event id.
    Event(&'a str),
    /// The body's hash.
    Body(&'a str),
}

/// Which of the partner's other callbacks a repeat is looked for among.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Among {
    /// Every other one: a callback settled as it arrives, or settled again
    /// (a recovery sweep, a reprocess), is a repeat of any delivery of the
    /// same event or body that was judged before it was.
    Others,
    /// Those that arrived before it: a callback that waited for its
    /// acceptance and is applied now. Each delivery of the same event that
    /// arrived while it waited was judged against it (a duplicate or a
    /// conflict of it); such a repeat of its own must not now make it a
    /// repeat, or the partner's result would never be applied.
    Before,
}

/// A report's outcome and result document as stored and compared: the
/// outcome's JSON, with a `result` member when the report carries a
/// document (so a repeat with another document is not a duplicate).
pub(crate) fn outcome_json(report: &CallbackReport) -> Result<String> {
    let encode = |e: serde_json::Error| Error::Storage {
        operation: "encode callback outcome",
        source: Box::new(e),
    };
    let outcome = serde_json::to_string(&report.outcome).map_err(encode)?;
    let Some(result) = &report.result else {
        return Ok(outcome);
    };
    let result = serde_json::to_string(result).map_err(encode)?;
    // The outcome is a JSON object (an internally tagged enum): add the
    // member before its closing brace, leaving the rest as it always was.
    match outcome.strip_suffix('}') {
        Some(open) => Ok(format!("{open},\"result\":{result}}}")),
        None => Ok(outcome),
    }
}

/// The outcome and result document of a stored [`outcome_json`].
fn recorded(outcome: &str) -> Option<(ReportedOutcome, Option<ResultDocument>)> {
    let value: serde_json::Value = serde_json::from_str(outcome).ok()?;
    let result = match value.get("result") {
        Some(r) => Some(serde_json::from_value(r.clone()).ok()?),
        None => None,
    };
    Some((serde_json::from_value(value).ok()?, result))
}

fn callback_note(
    stored: &StoredCallback,
    id: SubmissionId,
    kind: EventKind,
    detail: &str,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent::note(
        id,
        now,
        kind,
        Actor::system("callbacks"),
        Some(detail.to_owned()),
        Some(json!({ "callback_id": stored.id.to_string() })),
    )
}

/// Whether a report repeats an earlier delivery: one of the same event id
/// (`by_event`, looked for first) makes it a duplicate or a conflict;
/// otherwise one of the same body (`by_body`) with the same outcome makes
/// it a duplicate. `None`: it is no repeat, and is matched.
pub(crate) fn repeat(
    stored: &StoredCallback,
    report: &CallbackReport,
    outcome: &str,
    by_event: Option<&Earlier>,
    by_body: Option<&Earlier>,
    now: DateTime<Utc>,
) -> Option<Settle> {
    if let (Some(event_id), Some(earlier)) = (&report.event_id, by_event) {
        return Some(repeat_of_event(stored, event_id, earlier, outcome, now));
    }
    by_body.and_then(|earlier| repeat_of_body(earlier, outcome))
}

/// A callback whose event id was received before: a duplicate when the
/// outcome is the same, a conflict (noted on the submission) otherwise.
fn repeat_of_event(
    stored: &StoredCallback,
    event_id: &str,
    earlier: &Earlier,
    outcome: &str,
    now: DateTime<Utc>,
) -> Settle {
    if earlier.outcome.as_deref() == Some(outcome) {
        let end = End::new(Disposition::Duplicate)
            .detail(format!("event {event_id:?} was received before"))
            .submission(earlier.submission);
        return Settle::end(end);
    }
    let detail = format!("event {event_id:?} was received before with a different outcome");
    let note = earlier
        .submission
        .map(|id| callback_note(stored, id, EventKind::ConflictingCallback, &detail, now));
    let end = End::new(Disposition::Conflicting)
        .detail(detail)
        .submission(earlier.submission);
    Settle::noted(end, note)
}

/// A callback whose body was received before: a duplicate when the outcome
/// is the same; otherwise not a repeat (`None`).
fn repeat_of_body(earlier: &Earlier, outcome: &str) -> Option<Settle> {
    (earlier.outcome.as_deref() == Some(outcome)).then(|| {
        Settle::end(
            End::new(Disposition::Duplicate)
                .detail("the same body was received before")
                .submission(earlier.submission),
        )
    })
}

/// A callback no submission matches (yet): kept until `until`.
pub(crate) fn no_match(correlation: &Correlation, until: DateTime<Utc>) -> Settle {
    Settle::end(
        End::new(Disposition::Unmatched)
            .detail(format!("no submission matches {correlation} yet"))
            .until(until),
    )
}

/// A callback matched to `submission` (as read, locked).
pub(crate) fn matched(
    stored: &StoredCallback,
    report: &CallbackReport,
    submission: &Submission,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Settle {
    use SubmissionState::*;
    let id = submission.id;
    let state = submission.state;
    let end = |d| End::new(d).submission(Some(id));
    match (state, &report.outcome) {
        (Cancelled | ResolvedManually, _) => {
            let detail = format!("the submission was already {state}");
            let note = callback_note(stored, id, EventKind::LateCallback, &detail, now);
            Settle::noted(end(Disposition::Late).detail(detail), Some(note))
        }
        // The acceptance is not recorded yet (an early callback): keep it;
        // recording the acceptance matches it.
        (Queued | InFlight, _) => Settle::end(
            end(Disposition::Unmatched)
                .detail(format!(
                    "the submission is {state}; waiting for its acceptance to be recorded"
                ))
                .until(until),
        ),
        (AwaitingResult | Stuck, ReportedOutcome::Progress { note: words }) => {
            let detail = words
                .clone()
                .unwrap_or_else(|| "the partner reports progress".into());
            let note = callback_note(stored, id, EventKind::Progress, &detail, now);
            Settle::noted(end(Disposition::Applied), Some(note))
        }
        (AwaitingResult | Stuck, outcome) => {
            let mut change = match outcome {
                ReportedOutcome::Failed { reason } => StateChange::to(Failed).error(reason.clone()),
                _ => StateChange::to(Succeeded),
            }
            .actor(Actor::system("callbacks"))
            .reason("result reported by the partner's callback")
            .data(json!({ "callback_id": stored.id.to_string(), "event_id": report.event_id }))
            .at(now);
            if let Some(result) = &report.result {
                change = change.result(result.clone());
            }
            Settle {
                end: end(Disposition::Applied),
                note: None,
                change: Some(change),
            }
        }
        (_, ReportedOutcome::Progress { .. }) => Settle::end(end(Disposition::Duplicate).detail(
            format!("progress reported after the submission became {state}"),
        )),
        (Succeeded, ReportedOutcome::Succeeded) | (Failed, ReportedOutcome::Failed { .. })
            if same_result(submission.result.as_ref(), report.result.as_ref()) =>
        {
            Settle::end(
                end(Disposition::Duplicate).detail(format!("the submission is already {state}")),
            )
        }
        (Succeeded, ReportedOutcome::Succeeded) | (Failed, ReportedOutcome::Failed { .. }) => {
            let detail = format!(
                "the submission is already {state} with another result document; the callback's was not applied"
            );
            let note = callback_note(stored, id, EventKind::ConflictingCallback, &detail, now);
            Settle::noted(end(Disposition::Conflicting).detail(detail), Some(note))
        }
        _ => {
            let detail =
                format!("the submission is already {state}; the callback reports otherwise");
            let note = callback_note(stored, id, EventKind::ConflictingCallback, &detail, now);
            Settle::noted(end(Disposition::Conflicting).detail(detail), Some(note))
        }
    }
}

/// Whether a repeated outcome's document says nothing new: it brings none,
/// or the same one the submission keeps.
fn same_result(kept: Option<&ResultDocument>, reported: Option<&ResultDocument>) -> bool {
    match reported {
        None => true,
        Some(reported) => kept == Some(reported),
    }
}

/// The stored correlations under which callbacks that arrived before
/// `submission`'s acceptance wait for it.
pub(crate) fn references(submission: &Submission) -> Vec<String> {
    let mut references = vec![
        Correlation::SubmissionId(submission.id).to_stored(),
        Correlation::IdempotencyKey(submission.idempotency_key.clone()).to_stored(),
    ];
    if let Some(r) = &submission.external_ref {
        references.push(Correlation::ExternalRef(r.clone()).to_stored());
    }
    references
}

/// Whether `correlation`, in a callback of `partner`, names `submission`
/// without a look-up: by its id, or by its partner reference (which one
/// submission of a partner holds). A key names the newest submission with
/// it, which only a look-up tells.
pub(crate) fn names(correlation: &Correlation, partner: &str, submission: &Submission) -> bool {
    submission.partner == partner
        && match correlation {
            Correlation::SubmissionId(id) => *id == submission.id,
            Correlation::ExternalRef(r) => submission.external_ref.as_deref() == Some(r.as_str()),
            _ => false,
        }
}

/// The report of a waiting callback, as its settle recorded it; `None` when
/// it holds none that can be read back.
pub(crate) fn waiting_report(
    stored: &StoredCallback,
    event_id: Option<String>,
    outcome: Option<&str>,
) -> Option<CallbackReport> {
    let correlation = stored.correlation.clone()?;
    let (outcome, result) = recorded(outcome?)?;
    Some(CallbackReport {
        correlation,
        event_id,
        outcome,
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rules::fixtures::{submission, t};

    fn stored(disposition: Disposition) -> StoredCallback {
        StoredCallback {
            id: CallbackId::new(),
            partner: "bank".into(),
            received_at: t(1_000),
            headers: Vec::new(),
            body: Some(b"{}".to_vec()),
            body_hash: "h".into(),
            size: 2,
            event_id: None,
            correlation: None,
            disposition,
            error: None,
            submission_id: None,
            processed_at: None,
            dismissal: None,
        }
    }

    fn report(outcome: ReportedOutcome) -> CallbackReport {
        CallbackReport::new(Correlation::IdempotencyKey("pay-1".into()), outcome).event_id("evt-1")
    }

    fn json(outcome: ReportedOutcome) -> String {
        outcome_json(&CallbackReport::new(
            Correlation::IdempotencyKey("k".into()),
            outcome,
        ))
        .unwrap()
    }

    #[test]
    fn only_unsettled_unmatched_or_quarantined_callbacks_are_settled() {
        for d in [
            Disposition::Received,
            Disposition::Unmatched,
            Disposition::Malformed,
            Disposition::Rejected,
            Disposition::Expired,
        ] {
            assert_eq!(
                check_settleable(&stored(d)).is_ok(),
                d.is_reprocessable(),
                "{d}"
            );
        }
        for d in [
            Disposition::Applied,
            Disposition::Duplicate,
            Disposition::Late,
            Disposition::Conflicting,
        ] {
            let err = check_settleable(&stored(d)).unwrap_err();
            assert!(err.is_already_settled(), "{d}: {err:?}");
        }
    }

    #[test]
    fn only_quarantined_callbacks_are_dismissed_and_only_with_actor_and_reason() {
        let ops = Actor::person("dana");
        for d in Disposition::QUARANTINED {
            let mut callback = stored(d);
            callback.submission_id = Some(SubmissionId::new());
            let plan = dismiss(&callback, &ops, "  partner resent it  ", t(5)).unwrap();
            assert_eq!(plan.dismissal.from, d);
            assert_eq!(plan.dismissal.reason, "partner resent it");
            assert_eq!(plan.dismissal.at, t(5));
            let note = plan.note.expect("journaled on the matched submission");
            assert_eq!(note.kind, EventKind::CallbackDismissed);
            assert_eq!(Some(note.id), callback.submission_id);
            assert_eq!(note.actor, ops);
        }
        assert!(
            dismiss(&stored(Disposition::Malformed), &ops, "x", t(5))
                .unwrap()
                .note
                .is_none(),
            "nothing to journal on without a submission"
        );
        for d in [
            Disposition::Received,
            Disposition::Applied,
            Disposition::Duplicate,
            Disposition::Late,
            Disposition::Unmatched,
            Disposition::TooLarge,
            Disposition::Incomplete,
            Disposition::Dismissed,
        ] {
            let err = dismiss(&stored(d), &ops, "why", t(5)).unwrap_err();
            assert!(
                matches!(err, Error::NotQuarantined { disposition, .. } if disposition == d),
                "{d}: {err:?}"
            );
        }
        let malformed = stored(Disposition::Malformed);
        for (actor, reason, field) in [
            (Actor::person(" "), "why", "actor"),
            (ops.clone(), "", "reason"),
            (ops.clone(), " \t ", "reason"),
        ] {
            let err = dismiss(&malformed, &actor, reason, t(5)).unwrap_err();
            assert!(
                matches!(err, Error::InvalidInput { field: f, .. } if f == field),
                "{err:?}"
            );
        }
        // Bad input is refused before the disposition is looked at.
        let err = dismiss(&stored(Disposition::Applied), &ops, "", t(5)).unwrap_err();
        assert!(err.is_invalid_input(), "{err:?}");
    }

    #[test]
    fn a_matched_report_does_what_the_submissions_state_allows() {
        use SubmissionState::*;
        let ok = ReportedOutcome::Succeeded;
        let failed = ReportedOutcome::Failed {
            reason: "denied".into(),
        };
        let progress = ReportedOutcome::Progress { note: None };
        // (state, outcome, disposition, changes state to, notes)
        let cases = [
            (
                AwaitingResult,
                &ok,
                Disposition::Applied,
                Some(Succeeded),
                None,
            ),
            (Stuck, &failed, Disposition::Applied, Some(Failed), None),
            (
                AwaitingResult,
                &progress,
                Disposition::Applied,
                None,
                Some(EventKind::Progress),
            ),
            (Queued, &ok, Disposition::Unmatched, None, None),
            (InFlight, &failed, Disposition::Unmatched, None, None),
            (
                Cancelled,
                &ok,
                Disposition::Late,
                None,
                Some(EventKind::LateCallback),
            ),
            (
                ResolvedManually,
                &failed,
                Disposition::Late,
                None,
                Some(EventKind::LateCallback),
            ),
            (Succeeded, &ok, Disposition::Duplicate, None, None),
            (Failed, &failed, Disposition::Duplicate, None, None),
            (Succeeded, &progress, Disposition::Duplicate, None, None),
            (
                Succeeded,
                &failed,
                Disposition::Conflicting,
                None,
                Some(EventKind::ConflictingCallback),
            ),
            (
                DeadLettered,
                &ok,
                Disposition::Conflicting,
                None,
                Some(EventKind::ConflictingCallback),
            ),
        ];
        let callback = stored(Disposition::Received);
        for (state, outcome, disposition, to, note) in cases {
            let name = format!("{state} + {outcome:?}");
            let current = submission(state);
            let plan = matched(
                &callback,
                &report(outcome.clone()),
                &current,
                t(9_000),
                t(5_000),
            );
            assert_eq!(plan.end.disposition, disposition, "{name}");
            assert_eq!(plan.end.submission, Some(current.id), "{name}");
            assert_eq!(plan.change.as_ref().map(|c| c.target), to, "{name}");
            assert_eq!(plan.note.as_ref().map(|n| n.kind.clone()), note, "{name}");
            let waits = disposition == Disposition::Unmatched;
            assert_eq!(plan.end.match_until.is_some(), waits, "{name}");
        }
    }

    #[test]
    fn repeats_are_duplicates_with_the_same_outcome_and_conflicts_by_event_otherwise() {
        let callback = stored(Disposition::Received);
        let ok = json(ReportedOutcome::Succeeded);
        let failed = json(ReportedOutcome::Failed { reason: "x".into() });
        let holder = SubmissionId::new();
        let earlier = Earlier {
            outcome: Some(ok.clone()),
            submission: Some(holder),
        };
        let same = repeat_of_event(&callback, "e", &earlier, &ok, t(1));
        assert_eq!(same.end.disposition, Disposition::Duplicate);
        assert!(same.note.is_none());
        let other = repeat_of_event(&callback, "e", &earlier, &failed, t(1));
        assert_eq!(other.end.disposition, Disposition::Conflicting);
        assert_eq!(other.note.map(|n| n.id), Some(holder));
        assert_eq!(
            repeat_of_body(&earlier, &ok).map(|s| s.end.disposition),
            Some(Disposition::Duplicate)
        );
        assert_eq!(
            repeat_of_body(&earlier, &failed),
            None,
            "the same body with another outcome is not a repeat"
        );
        let unmatched = no_match(&Correlation::ExternalRef("R".into()), t(9));
        assert_eq!(
            (unmatched.end.disposition, unmatched.end.match_until),
            (Disposition::Unmatched, Some(t(9)))
        );
    }

    #[test]
    fn a_waiting_callback_is_matched_under_each_of_the_submissions_references() {
        let mut current = submission(SubmissionState::AwaitingResult);
        assert_eq!(references(&current).len(), 2);
        current.external_ref = Some("R-9".into());
        let refs = references(&current);
        assert!(refs.contains(&Correlation::ExternalRef("R-9".into()).to_stored()));
        let mut waiting = stored(Disposition::Unmatched);
        let ok = json(ReportedOutcome::Succeeded);
        assert_eq!(
            waiting_report(&waiting, None, Some(&ok)),
            None,
            "no correlation recorded"
        );
        waiting.correlation = Some(Correlation::ExternalRef("R-9".into()));
        assert_eq!(waiting_report(&waiting, None, Some("not json")), None);
        let report = waiting_report(&waiting, Some("e".into()), Some(&ok)).unwrap();
        assert_eq!(report.outcome, ReportedOutcome::Succeeded);
    }

    #[test]
    fn only_an_id_or_the_held_reference_names_a_submission_without_a_look_up() {
        let mut current = submission(SubmissionState::AwaitingResult);
        current.external_ref = Some("R-9".into());
        let partner = current.partner.clone();
        assert!(names(
            &Correlation::SubmissionId(current.id),
            &partner,
            &current
        ));
        assert!(names(
            &Correlation::ExternalRef("R-9".into()),
            &partner,
            &current
        ));
        assert!(!names(
            &Correlation::ExternalRef("R-8".into()),
            &partner,
            &current
        ));
        assert!(!names(
            &Correlation::SubmissionId(SubmissionId::new()),
            &partner,
            &current
        ));
        assert!(
            !names(&Correlation::SubmissionId(current.id), "other", &current),
            "another partner's callback"
        );
        let key = Correlation::IdempotencyKey(current.idempotency_key.clone());
        assert!(!names(&key, &partner, &current), "a key needs its look-up");
    }

    #[test]
    fn an_event_repeat_decides_before_a_body_repeat() {
        let callback = stored(Disposition::Received);
        let ok = json(ReportedOutcome::Succeeded);
        let mut report = CallbackReport::new(
            Correlation::ExternalRef("R".into()),
            ReportedOutcome::Succeeded,
        );
        let other = Earlier {
            outcome: Some(json(ReportedOutcome::Failed {
                reason: "no".into(),
            })),
            submission: None,
        };
        let same = Earlier {
            outcome: Some(ok.clone()),
            submission: None,
        };
        // No event id: the body decides.
        let by_body = repeat(&callback, &report, &ok, Some(&other), Some(&same), t(1));
        assert_eq!(by_body.unwrap().end.disposition, Disposition::Duplicate);
        report.event_id = Some("e".into());
        let by_event = repeat(&callback, &report, &ok, Some(&other), Some(&same), t(1));
        assert_eq!(by_event.unwrap().end.disposition, Disposition::Conflicting);
        assert_eq!(
            repeat(&callback, &report, &ok, None, Some(&other), t(1)),
            None
        );
        assert_eq!(repeat(&callback, &report, &ok, None, None, t(1)), None);
    }
}
