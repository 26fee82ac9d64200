//! Backend-agnostic helpers that the SQLite store keeps private today.
//!
//! Every item here is a copy of the SQLite store's, with the same
//! behaviour; each is marked to move to a module both stores share.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::callback::ReportedOutcome;
use crate::error::{Error, Result};
use crate::submission::{MAX_KEY_BYTES, Submission, SubmissionState};

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs MAX_TEXT_BYTES).
/// Longest error or reason text kept in the database, in bytes.
const MAX_TEXT_BYTES: usize = 4096;

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `to_millis`).
pub(super) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `from_millis`).
pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `duration_ms`).
pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `bounded`).
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

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `merge_data`).
/// The event data of a completion: the caller's fields win over the
/// attempt's.
pub(super) fn merge_data(given: Option<&Value>, extra: Value) -> Value {
    match (given, extra) {
        (Some(Value::Object(given)), Value::Object(mut extra)) => {
            extra.extend(given.clone());
            Value::Object(extra)
        }
        (Some(other), _) => other.clone(),
        (None, extra) => extra,
    }
}

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `check_transition`).
pub(super) fn check_transition(current: &Submission, to: SubmissionState) -> Result<()> {
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

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `replay_key`).
/// The key a fresh-key replay uses: the original key (without an earlier
/// replay suffix) plus `~replay<n>`, cut to fit [`MAX_KEY_BYTES`].
pub(super) fn replay_key(key: &str, n: u32) -> String {
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

// TODO(shared): move to store/common.rs (copy of sqlite/callbacks.rs `same_outcome`).
pub(super) fn same_outcome(state: SubmissionState, outcome: &ReportedOutcome) -> bool {
    matches!(
        (state, outcome),
        (SubmissionState::Succeeded, ReportedOutcome::Succeeded)
            | (SubmissionState::Failed, ReportedOutcome::Failed { .. })
    )
}

// TODO(shared): move to store/common.rs (the SQLite store builds the same
// list as SQL text in sqlite/sql.rs `state_list`).
/// The stored names of the states that `keep` selects.
pub(super) fn state_names(keep: impl Fn(SubmissionState) -> bool) -> Vec<&'static str> {
    SubmissionState::ALL
        .into_iter()
        .filter(|s| keep(*s))
        .map(SubmissionState::as_str)
        .collect()
}

// TODO(shared): move to store/common.rs (copy of sqlite/stats.rs `count`).
/// A SQL count as u64 (counts are never negative).
pub(super) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

// TODO(shared): move to store/common.rs (copy of sqlite/retention.rs `BATCH`).
/// Rows changed per retention pass, so one pass never holds locks for long.
pub(super) const PURGE_BATCH: i64 = 1000;

// TODO(shared): move to store/common.rs (copy of sqlite/sql.rs `Completion`).
/// What a completion did.
pub(super) enum Completion {
    Applied(Box<Submission>),
    Stale,
}

#[cfg(test)]
mod tests {
    use super::replay_key;

    #[test]
    fn replay_keys_derive_from_the_original_and_fit() {
        assert_eq!(replay_key("C-1", 1), "C-1~replay1");
        assert_eq!(replay_key("C-1~replay1", 2), "C-1~replay2");
        let long = "é".repeat(200);
        let k = replay_key(&long, 12);
        assert!(k.len() <= 255 && k.ends_with("~replay12"));
    }
}
