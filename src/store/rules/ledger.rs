//! The idempotency-key ledger: what an enqueue of a key that is already
//! recorded does.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::NewEvent;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::model::event::{Actor, EventKind};
use crate::model::submission::{Submission, SubmissionId, SubmissionState, ValidSubmission};
use crate::store::common::{millis_after, stored_time, to_millis};

/// A ledger row as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeldKey {
    /// The fingerprint of the payload that took the key, as stored: keyed
    /// (`k1:`…), or plain hex SHA-256 for a row written before keying.
    pub(crate) fingerprint: String,
    /// The submission holding the key.
    pub(crate) submission: SubmissionId,
    /// When the key's retention ends (milliseconds; `None`: never).
    pub(crate) expires_at: Option<i64>,
}

/// A ledger row to write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRow<'a> {
    pub(crate) partner: &'a str,
    pub(crate) key: &'a str,
    pub(crate) fingerprint: &'a Fingerprint,
    pub(crate) submission: SubmissionId,
    pub(crate) created_at: DateTime<Utc>,
    /// Milliseconds; saturates at the end of time for a long retention.
    pub(crate) expires_at: Option<i64>,
}

impl<'a> KeyRow<'a> {
    /// The row recording `key` for `submission` now, kept for `retention`.
    pub(crate) fn new(
        partner: &'a str,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        submission: SubmissionId,
        now: DateTime<Utc>,
        retention: Option<Duration>,
    ) -> Self {
        KeyRow {
            partner,
            key,
            fingerprint,
            submission,
            created_at: now,
            expires_at: retention.map(|r| millis_after(now, r)),
        }
    }
}

/// What an enqueue does with a key the ledger already holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The key's retention is over and its work finished: remove the row;
    /// the key is free again.
    Free,
    /// The same key and payload: answer with the holder, write nothing new.
    Duplicate(Box<Submission>),
}

/// Decide on `valid`'s key, held as `held` by `holder` (as read).
///
/// Errors: [`Error::IdempotencyConflict`] for another payload under the
/// key; [`Error::Corrupt`] for a ledger row whose submission is missing
/// while its retention lasts.
pub(crate) fn verdict(
    valid: &ValidSubmission,
    held: &HeldKey,
    holder: Option<Submission>,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    let expired = held.expires_at.is_some_and(|at| at <= to_millis(now));
    let finished = holder.as_ref().is_none_or(|s| s.state.is_terminal());
    if expired && finished {
        return Ok(Verdict::Free);
    }
    let Some(holder) = holder else {
        return Err(Error::corrupt(
            format!(
                "idempotency key {:?} of partner {:?} names submission {}, which does not exist",
                valid.idempotency_key, valid.partner, held.submission
            ),
            None,
        ));
    };
    if !same_payload(&held.fingerprint, valid) {
        return Err(conflict(
            &valid.partner,
            &valid.idempotency_key,
            held.submission,
        ));
    }
    Ok(Verdict::Duplicate(Box::new(holder)))
}

/// Whether a ledger row's fingerprint is `valid`'s payload: a keyed one is
/// compared with the keyed fingerprint, a plain one (written before
/// fingerprints were keyed) with the plain SHA-256, so keys recorded by an
/// earlier version keep deduplicating and detecting conflicts. A row that
/// holds no fingerprint at all matches nothing.
pub(crate) fn same_payload(held: &str, valid: &ValidSubmission) -> bool {
    match Fingerprint::parse(held) {
        Some(f) if f.is_keyed() => f == valid.fingerprint,
        Some(f) => f == valid.plain_fingerprint,
        None => false,
    }
}

/// The error for a key that another payload holds.
pub(crate) fn conflict(partner: &str, key: &str, existing: SubmissionId) -> Error {
    Error::IdempotencyConflict {
        partner: partner.to_owned(),
        key: key.to_owned(),
        existing,
    }
}

/// When a new submission is first due: now, or its not-before time.
pub(crate) fn first_due(valid: &ValidSubmission, now: DateTime<Utc>) -> DateTime<Utc> {
    valid.not_before.map_or(now, |nb| nb.max(now))
}

/// The row an enqueue inserts for `valid` under `id`, as a read returns it
/// (times in whole milliseconds): queued, due at `due_at`, nothing tried
/// yet. A store inserts the same values and reads nothing back; this is the
/// enqueue's answer.
pub(crate) fn created(
    id: SubmissionId,
    valid: &ValidSubmission,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Submission {
    let now = stored_time(now);
    Submission {
        id,
        partner: valid.partner.clone(),
        kind: valid.kind.clone(),
        payload: Some(valid.payload.clone()),
        fingerprint: valid.fingerprint,
        idempotency_key: valid.idempotency_key.clone(),
        ordering_key: valid.ordering_key.clone(),
        correlation: valid.correlation.clone(),
        external_ref: None,
        business_value: valid.business_value,
        currency: valid.currency,
        business_deadline: valid.business_deadline.map(stored_time),
        priority: valid.priority,
        state: SubmissionState::Queued,
        attempts: 0,
        due_at: stored_time(due_at),
        not_before: valid.not_before.map(stored_time),
        lease_expires_at: None,
        result_deadline: None,
        created_at: now,
        updated_at: now,
        terminal_at: None,
        last_error: None,
        replays: 0,
        result: None,
        attempts_before_cycle: 0,
        cycle_started_at: now,
    }
}

/// The timeline line of a new submission. An enqueue does not write it:
/// the row holds its facts (the time, the first state, the actor is always
/// the enqueue), so a read puts it at the head of what is stored
/// ([`super::timeline`]).
pub(crate) fn enqueued(id: SubmissionId, now: DateTime<Utc>) -> NewEvent {
    NewEvent {
        to: Some(SubmissionState::Queued),
        ..NewEvent::note(
            id,
            now,
            EventKind::Enqueued,
            Actor::system("enqueue"),
            None,
            None,
        )
    }
}

/// The timeline line of an enqueue answered with the existing submission.
pub(crate) fn deduplicated(id: SubmissionId, now: DateTime<Utc>) -> NewEvent {
    NewEvent::note(
        id,
        now,
        EventKind::Deduplicated,
        Actor::system("enqueue"),
        Some("enqueued again with the same key and payload".into()),
        None,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::submission::NewSubmission;
    use crate::store::rules::fixtures::{submission, t};

    fn valid(payload: serde_json::Value) -> ValidSubmission {
        NewSubmission::new("bank", "payment", payload)
            .idempotency_key("pay-1")
            .validate(1024 * 1024)
            .unwrap()
    }

    #[test]
    fn the_ledger_decides_by_payload_retention_and_the_holders_state() {
        use SubmissionState::*;
        let same = valid(json!({"cents": 500}));
        let other = valid(json!({"cents": 501}));
        let holder_id = SubmissionId::new();
        let held = |expires_at| HeldKey {
            fingerprint: same.fingerprint.to_string(),
            submission: holder_id,
            expires_at,
        };
        let holder = |state| Some(submission(state));
        // (name, enqueued, held until, holder, expected)
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            &ValidSubmission,
            Option<i64>,
            Option<Submission>,
            &str,
        )> = vec![
            (
                "same payload, kept",
                &same,
                None,
                holder(Queued),
                "duplicate",
            ),
            (
                "same payload, retention not over",
                &same,
                Some(10_000),
                holder(Succeeded),
                "duplicate",
            ),
            ("other payload", &other, None, holder(Succeeded), "conflict"),
            (
                "expired, work finished",
                &other,
                Some(5_000),
                holder(Succeeded),
                "free",
            ),
            (
                "expired, work unfinished",
                &other,
                Some(5_000),
                holder(AwaitingResult),
                "conflict",
            ),
            ("expired, holder gone", &same, Some(5_000), None, "free"),
            ("kept, holder gone", &same, None, None, "corrupt"),
        ];
        for (name, enqueued, until, holder, expected) in cases {
            let got = match verdict(enqueued, &held(until), holder, t(5_000)) {
                Ok(Verdict::Free) => "free",
                Ok(Verdict::Duplicate(_)) => "duplicate",
                Err(e) if e.is_conflict() => "conflict",
                Err(e) if e.is_corrupt() => "corrupt",
                Err(e) => panic!("{name}: {e:?}"),
            };
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn keyed_and_plain_ledger_rows_both_decide_by_payload() {
        let key = crate::fingerprint::StoreKey::from_stored(&[7; 32]).unwrap();
        let keyed = |payload| {
            let mut v = valid(payload);
            v.fingerprint = key.fingerprint(&v.plain_fingerprint);
            v
        };
        let same = keyed(json!({"cents": 500}));
        let other = keyed(json!({"cents": 501}));
        let plain_row = Fingerprint::of(&json!({"cents": 500})).to_string();
        let keyed_row = same.fingerprint.to_string();
        assert!(keyed_row.starts_with("k1:"));
        // A row from before keying, and one written now.
        for row in [&plain_row, &keyed_row] {
            assert!(same_payload(row, &same), "{row}");
            assert!(!same_payload(row, &other), "{row}");
        }
        // Another store's key: the same payload does not match.
        let elsewhere = crate::fingerprint::StoreKey::from_stored(&[8; 32])
            .unwrap()
            .fingerprint(&same.plain_fingerprint);
        assert!(!same_payload(&elsewhere.to_string(), &same));
        assert!(!same_payload("not a fingerprint", &same));
    }

    #[test]
    fn a_conflict_names_the_holder_and_new_work_is_due_at_its_not_before() {
        let err = conflict("bank", "pay-1", SubmissionId::new());
        assert!(err.to_string().contains("pay-1"), "{err}");
        let later = NewSubmission::new("bank", "payment", json!({}))
            .not_before(t(9_000))
            .validate(1024)
            .unwrap();
        assert_eq!(first_due(&later, t(5_000)), t(9_000));
        assert_eq!(first_due(&later, t(10_000)), t(10_000));
        let row = KeyRow::new(
            "bank",
            "k",
            &later.fingerprint,
            SubmissionId::new(),
            t(1),
            Some(Duration::MAX),
        );
        assert_eq!(row.expires_at, Some(i64::MAX), "a long retention saturates");
    }
}
