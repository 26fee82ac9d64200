//! Timeline lines as the rules produce them.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::event::{Actor, Event, EventKind};
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::store::{LeaseToken, Note};

/// One timeline line to append.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewEvent {
    pub(crate) id: SubmissionId,
    pub(crate) at: DateTime<Utc>,
    pub(crate) kind: EventKind,
    pub(crate) from: Option<SubmissionState>,
    pub(crate) to: Option<SubmissionState>,
    pub(crate) actor: Actor,
    pub(crate) reason: Option<String>,
    pub(crate) data: Option<Value>,
}

impl NewEvent {
    /// A line that changes no state.
    pub(crate) fn note(
        id: SubmissionId,
        at: DateTime<Utc>,
        kind: EventKind,
        actor: Actor,
        reason: Option<String>,
        data: Option<Value>,
    ) -> Self {
        NewEvent {
            id,
            at,
            kind,
            from: None,
            to: None,
            actor,
            reason,
            data,
        }
    }

    /// A caller's [`Note`], dated `at`.
    pub(crate) fn from_note(id: SubmissionId, at: DateTime<Utc>, note: &Note) -> Self {
        Self::note(
            id,
            at,
            note.kind.clone(),
            note.actor.clone(),
            note.reason.clone(),
            note.data.clone(),
        )
    }

    /// The line as a read answers it, at `seq`.
    fn read_as(self, seq: i64) -> Event {
        Event {
            seq,
            submission_id: self.id,
            at: self.at,
            kind: self.kind,
            from_state: self.from,
            to_state: self.to,
            actor: self.actor,
            reason: self.reason,
            data: self.data,
        }
    }
}

/// A claim as its attempt records it: what a read makes its `claimed` line
/// from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClaimRecord {
    /// The attempt's number.
    pub(crate) attempt: u32,
    /// The lease the claim gave.
    pub(crate) token: LeaseToken,
    /// When it was claimed (the attempt's start).
    pub(crate) at: DateTime<Utc>,
    /// Its place among the stored lines: every line written before the
    /// claim has a `seq` at most this, every line written after a greater
    /// one (the attempt's `claim_seq`).
    pub(crate) seq: i64,
}

/// A submission's timeline as a read answers it, from the lines `stored`
/// for it (in `seq` order) and the claims its attempts record.
///
/// Two kinds of routine line are not written, their facts being in rows
/// written anyway: the first, `enqueued` (the submission's row: created
/// at, first state `queued`, actor `system:enqueue`), and each `claimed`
/// (its attempt: started at, number, lease token; always `queued` to
/// `in_flight` by `system:dispatcher`). A read puts them in their places.
/// To leave room for the claims between the stored lines, a stored line of
/// `seq` s is answered with `seq` 2s, a claim placed at s with 2s + 1, and
/// the `enqueued` line with 0 (nothing of a submission is written before
/// its enqueue). A submission enqueued by an earlier build has its
/// `enqueued` line stored as its first, and an attempt started by one no
/// place (its `claimed` line is stored): those are answered as stored, so
/// no line is there twice.
pub(crate) fn timeline(
    submission: &Submission,
    stored: Vec<Event>,
    claims: Vec<ClaimRecord>,
) -> Vec<Event> {
    let enqueued_stored = stored
        .first()
        .is_some_and(|line| line.kind == EventKind::Enqueued);
    let mut lines = Vec::with_capacity(stored.len() + claims.len() + 1);
    if !enqueued_stored {
        lines.push(super::ledger::enqueued(submission.id, submission.created_at).read_as(0));
    }
    lines.extend(stored.into_iter().map(|line| Event {
        seq: line.seq.saturating_mul(2),
        ..line
    }));
    lines.extend(claims.into_iter().map(|claim| {
        super::lease::claimed(submission.id, claim.attempt, claim.token, claim.at)
            .read_as(claim.seq.saturating_mul(2).saturating_add(1))
    }));
    lines.sort_by_key(|line| line.seq);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rules::fixtures::{submission, t};

    fn stored(row: &Submission, seq: i64, kind: EventKind) -> Event {
        Event {
            seq,
            submission_id: row.id,
            at: t(seq),
            kind,
            from_state: None,
            to_state: None,
            actor: Actor::system("test"),
            reason: None,
            data: None,
        }
    }

    fn claim(attempt: u32, seq: i64) -> ClaimRecord {
        ClaimRecord {
            attempt,
            token: LeaseToken::fresh(),
            at: t(seq),
            seq,
        }
    }

    fn kinds(lines: &[Event]) -> Vec<(i64, EventKind)> {
        lines
            .iter()
            .map(|line| (line.seq, line.kind.clone()))
            .collect()
    }

    #[test]
    fn the_enqueued_and_claimed_lines_are_read_into_their_places() {
        use EventKind::*;
        let row = submission(SubmissionState::Succeeded);
        // Claimed after line 3 (a retry), then after line 7 (the last
        // line before the second claim was 7, of another submission).
        let read = timeline(
            &row,
            vec![stored(&row, 3, RetryScheduled), stored(&row, 9, Succeeded)],
            vec![claim(2, 7), claim(1, 2)],
        );
        assert_eq!(
            kinds(&read),
            [
                (0, Enqueued),
                (5, Claimed),
                (6, RetryScheduled),
                (15, Claimed),
                (18, Succeeded)
            ]
        );
        let first = &read[0];
        assert_eq!(first.at, row.created_at);
        assert_eq!(first.to_state, Some(SubmissionState::Queued));
        assert_eq!(first.actor.as_str(), "system:enqueue");
        let second = &read[3];
        assert_eq!(second.at, t(7));
        assert_eq!(
            (second.from_state, second.to_state),
            (
                Some(SubmissionState::Queued),
                Some(SubmissionState::InFlight)
            )
        );
        assert_eq!(second.actor.as_str(), "system:dispatcher");
        assert_eq!(second.data.as_ref().unwrap()["attempt"], 2);
        assert_eq!(
            kinds(&timeline(&row, Vec::new(), Vec::new())),
            [(0, Enqueued)]
        );
    }

    #[test]
    fn lines_an_earlier_build_stored_are_read_as_stored_and_never_twice() {
        use EventKind::*;
        let row = submission(SubmissionState::InFlight);
        let read = timeline(
            &row,
            vec![stored(&row, 3, Enqueued), stored(&row, 4, Claimed)],
            Vec::new(),
        );
        assert_eq!(kinds(&read), [(6, Enqueued), (8, Claimed)]);
        assert_eq!(read[0].at, t(3), "the stored line, not the row's");
    }
}
