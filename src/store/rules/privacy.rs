//! Personal data: what retention clears from finished work past its period,
//! and what `forget` erases from one submission at once. Decided here, once:
//! each store builds its statements from these lists (in its own SQL
//! dialect and placeholders) and runs them, and decides nothing itself.
//!
//! Both keep the skeleton of what happened: ids, states, times, event
//! kinds and actors, attempt numbers and outcomes, HTTP statuses, callback
//! sizes, dispositions and (keyed) hashes, the fingerprint and the
//! idempotency key (the ledger still answers for it).

use chrono::{DateTime, Utc};

use super::NewEvent;
use crate::error::{Error, Result};
use crate::model::event::{Actor, EventKind};
use crate::model::submission::Submission;

/// Which clearing: the one retention does to finished work past its
/// period, or the one `forget` does on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Retention: personal data goes; the payload and result follow their
    /// own rule (the payload purge), and an operator's own words on the
    /// timeline (replay, resolve, dismiss reasons) stay as the record of
    /// what was decided.
    Retention,
    /// `forget`: everything personal about the submission, payload and
    /// result included, and every reason and data on its timeline.
    Forget,
}

/// The placeholder a store's statement uses for "now" (replaced by the
/// store with its own, `?2` or `$2`).
pub(crate) const NOW: &str = "{now}";

/// `liaison_submissions`: the SET clause (without `WHERE`). The row records
/// when its personal data went (`personal_cleared_at`), so retention passes
/// over it from then on.
pub(crate) fn submission_set(scope: Scope) -> String {
    let mut set = vec![
        "correlation = NULL",
        "external_ref = NULL",
        "last_error = NULL",
        "personal_cleared_at = {now}",
    ];
    if scope == Scope::Forget {
        set.extend([
            "payload = NULL",
            "result_document = NULL",
            "payload_purged_at = COALESCE(payload_purged_at, {now})",
        ]);
    }
    set.join(", ")
}

/// `liaison_attempts`: the error excerpts (up to 200 characters of the
/// partner's error body).
pub(crate) const ATTEMPT_SET: &str = "error = NULL";

/// `liaison_deliveries`: the host handler's last error.
pub(crate) const DELIVERY_SET: &str = "last_error = NULL";

/// Events written by liaison itself carry the partner's words in their
/// reason (error texts, progress notes, failure reasons): their actor
/// starts with this.
pub(crate) const SYSTEM_ACTORS: &str = "system:%";

/// Keys of an event's data that hold personal data (the rest are ids and
/// counts): removed by retention. `forget` clears the whole data.
pub(crate) const EVENT_DATA_KEYS: [&str; 1] = ["rejected_external_ref"];

/// `liaison_events`: whether the reasons of every event go (`forget`) or
/// only those written by liaison itself (retention, see
/// [`SYSTEM_ACTORS`]); `forget` also clears all data, retention only
/// [`EVENT_DATA_KEYS`].
pub(crate) fn events_all(scope: Scope) -> bool {
    scope == Scope::Forget
}

/// `liaison_callbacks`: the SET clause. Headers become an empty list
/// (the column is required); `forget` also removes the body and the parsed
/// outcome (which holds a failure reason).
pub(crate) fn callback_set(scope: Scope) -> String {
    let mut set = vec![
        "headers = '[]'",
        "error = NULL",
        "reference = NULL",
        "personal_cleared_at = {now}",
    ];
    if scope == Scope::Forget {
        set.extend([
            "body_purged_at = CASE WHEN body IS NULL THEN body_purged_at ELSE {now} END",
            "body = NULL",
            "outcome = NULL",
        ]);
    }
    set.join(", ")
}

/// A SET clause with the store's placeholder for now.
pub(crate) fn with_now(set: &str, now: &str) -> String {
    set.replace(NOW, now)
}

/// Refuse a `forget` without an actor or a reason (before anything is
/// read): the erasure is journaled with both.
pub(crate) fn check_request(actor: &Actor, reason: &str) -> Result<()> {
    if actor.as_str().trim().is_empty() {
        return Err(Error::invalid("actor", "say who erases the submission"));
    }
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            "say why the submission is erased (it is journaled)",
        ));
    }
    Ok(())
}

/// Refuse forgetting unfinished work: a submission still queued, in
/// flight, awaiting its result or stuck is refused with
/// [`Error::Unfinished`] (cancel or resolve it first), so no attempt or
/// callback can find its data gone half-way, and a result the partner
/// still sends is recognised and recorded.
pub(crate) fn check_forgettable(current: &Submission) -> Result<()> {
    if current.state.is_terminal() {
        Ok(())
    } else {
        Err(Error::Unfinished {
            id: current.id,
            state: current.state,
        })
    }
}

/// The timeline line recording the erasure: who, why, when. Its own reason
/// is the requester's and stays.
pub(crate) fn forgotten(
    current: &Submission,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent::note(
        current.id,
        now,
        EventKind::Forgotten,
        actor.clone(),
        Some(reason.to_owned()),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::submission::SubmissionState;
    use crate::store::rules::fixtures::{submission, t};

    #[test]
    fn forget_clears_more_than_retention_and_both_record_when() {
        let retention = submission_set(Scope::Retention);
        let forget = submission_set(Scope::Forget);
        for column in ["correlation", "external_ref", "last_error"] {
            assert!(retention.contains(&format!("{column} = NULL")), "{column}");
            assert!(forget.contains(&format!("{column} = NULL")), "{column}");
        }
        assert!(!retention.contains("payload = NULL"));
        assert!(forget.contains("payload = NULL") && forget.contains("result_document = NULL"));
        assert_eq!(
            with_now(&retention, "?9")
                .matches("personal_cleared_at = ?9")
                .count(),
            1
        );
        assert!(!with_now(&forget, "$2").contains(NOW));
        let cb = callback_set(Scope::Retention);
        assert!(cb.contains("headers = '[]'") && cb.contains("error = NULL"));
        assert!(!cb.contains("body = NULL"));
        assert!(callback_set(Scope::Forget).contains("body = NULL"));
        assert!(events_all(Scope::Forget) && !events_all(Scope::Retention));
    }

    #[test]
    fn only_finished_work_is_forgotten_and_only_with_who_and_why() {
        for state in SubmissionState::ALL {
            let result = check_forgettable(&submission(state));
            if state.is_terminal() {
                assert!(result.is_ok(), "{state}");
            } else {
                let err = result.expect_err(&format!("{state} must be refused"));
                assert!(err.is_unfinished(), "{state}: {err:?}");
                assert!(err.to_string().contains("cancel"), "{err}");
            }
        }
        assert!(check_request(&Actor::person(" "), "gdpr").is_err());
        assert!(check_request(&Actor::person("dpo"), " ").is_err());
        assert!(check_request(&Actor::person("dpo"), "art. 17 request").is_ok());
        let s = submission(SubmissionState::Succeeded);
        let line = forgotten(&s, &Actor::person("dpo"), "request 42", t(5));
        assert_eq!(line.kind, EventKind::Forgotten);
        assert_eq!(line.reason.as_deref(), Some("request 42"));
        assert_eq!(line.at, t(5));
    }
}
