//! Replays: which submissions may be sent again, and under which key.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::error::{Error, Result};
use crate::model::event::EventKind;
use crate::model::submission::{MAX_KEY_BYTES, Submission, SubmissionState};
use crate::store::{Replay, StateChange};

/// What a replay writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReplayPlan {
    /// The derived key to record in the ledger and send from now on, for a
    /// replay under a fresh key.
    pub(crate) fresh_key: Option<String>,
    /// Back to the queue, due now, journaled with the actor and reason.
    pub(crate) change: StateChange,
}

/// Refuse a replay that does not say why (before anything is read).
pub(crate) fn check_reason(replay: &Replay) -> Result<()> {
    if replay.reason.trim().is_empty() {
        return Err(Error::invalid("reason", "say why it is replayed"));
    }
    Ok(())
}

/// Plan the replay of `current`: only a failed, dead-lettered or stuck
/// submission whose payload is still stored is sent again.
pub(crate) fn plan(
    current: &Submission,
    replay: &Replay,
    now: DateTime<Utc>,
) -> Result<ReplayPlan> {
    use SubmissionState::*;
    check_reason(replay)?;
    let refuse = |reason| Error::InvalidTransition {
        id: current.id,
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
    let number = current.replays + 1;
    let fresh_key = replay
        .fresh_key
        .then(|| replay_key(&current.idempotency_key, number));
    let key = fresh_key
        .clone()
        .unwrap_or_else(|| current.idempotency_key.clone());
    let change = StateChange::to(Queued)
        .actor(replay.actor.clone())
        .reason(replay.reason.clone())
        .event(EventKind::Replayed)
        .data(json!({
            "replay": number,
            "previous_key": current.idempotency_key,
            "key": key,
            "fresh_key": replay.fresh_key,
        }))
        .due_at(now)
        .at(now);
    Ok(ReplayPlan { fresh_key, change })
}

/// The key a fresh-key replay uses: the original key (without an earlier
/// replay suffix) plus `~replay<n>`, cut to fit [`MAX_KEY_BYTES`].
pub(crate) fn replay_key(key: &str, n: u32) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::Actor;
    use crate::store::rules::fixtures::{submission, t};

    #[test]
    fn replay_keys_derive_from_the_original_and_fit() {
        assert_eq!(replay_key("C-1", 1), "C-1~replay1");
        assert_eq!(replay_key("C-1~replay1", 2), "C-1~replay2");
        assert_eq!(replay_key("a~replayx", 1), "a~replayx~replay1");
        let long = "é".repeat(200);
        let k = replay_key(&long, 12);
        assert!(k.len() <= MAX_KEY_BYTES && k.ends_with("~replay12"));
    }

    #[test]
    fn only_failed_dead_lettered_or_stuck_work_with_its_payload_is_replayed() {
        use SubmissionState::*;
        let replay = Replay::new(Actor::person("ana"), "partner fixed its bug");
        for state in SubmissionState::ALL {
            let allowed = matches!(state, Failed | DeadLettered | Stuck);
            let result = plan(&submission(state), &replay, t(9_000));
            assert_eq!(result.is_ok(), allowed, "{state}: {result:?}");
        }
        let mut purged = submission(Failed);
        purged.payload = None;
        let err = plan(&purged, &replay, t(9_000)).unwrap_err();
        assert!(err.to_string().contains("purged"), "{err}");
        let silent = Replay::new(Actor::person("ana"), "  ");
        assert!(
            plan(&submission(Failed), &silent, t(9_000))
                .unwrap_err()
                .is_invalid_input()
        );
    }

    #[test]
    fn a_fresh_key_replay_derives_the_next_key_and_journals_both() {
        let mut current = submission(SubmissionState::DeadLettered);
        current.replays = 1;
        let replay = Replay::new(Actor::person("ana"), "refused key").fresh_key(true);
        let plan = plan(&current, &replay, t(9_000)).unwrap();
        assert_eq!(plan.fresh_key.as_deref(), Some("pay-1~replay2"));
        assert_eq!(plan.change.due_at, Some(t(9_000)));
        let data = plan.change.data.unwrap();
        assert_eq!(data["previous_key"], "pay-1");
        assert_eq!(data["key"], "pay-1~replay2");
        assert_eq!(data["replay"], 2);
        let same = super::plan(
            &current,
            &Replay::new(Actor::person("ana"), "again"),
            t(9_000),
        )
        .unwrap();
        assert_eq!(same.fresh_key, None);
        assert_eq!(same.change.data.unwrap()["key"], "pay-1");
    }
}
