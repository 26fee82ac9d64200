//! Replay, resolve and cancel, and re-running a parked result delivery:
//! the request, the call, and how errors answer.

use serde::Deserialize;

pub(super) use super::failure::Failure;
use super::params::Params;
use crate::callback::StoredCallback;
use crate::engine::Liaison;
use crate::model::callback::CallbackId;
use crate::model::callback::CallbackReceipt;
use crate::model::delivery::{Delivery, DeliveryId};
use crate::model::event::Actor;
use crate::model::submission::{Submission, SubmissionId, SubmissionState};
use crate::partner::Outcome;
use crate::store::Replay;

/// Longest accepted actor name, in characters.
const MAX_ACTOR_CHARS: usize = 200;
/// Longest accepted reason, in characters.
const MAX_REASON_CHARS: usize = 2000;

/// What an operator can do to one submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Replay,
    Resolve,
    Cancel,
}

impl Action {
    pub(super) const ALL: [Action; 3] = [Action::Replay, Action::Resolve, Action::Cancel];

    pub(super) fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Resolve => "resolve",
            Action::Cancel => "cancel",
        }
    }

    /// Whether the transition table allows it from `state`.
    pub(super) fn applies_to(self, state: SubmissionState) -> bool {
        use SubmissionState::*;
        match self {
            Action::Replay => matches!(state, Failed | DeadLettered | Stuck),
            Action::Resolve => matches!(state, Failed | DeadLettered | Stuck),
            Action::Cancel => !state.is_terminal(),
        }
    }
}

/// An action's fields, from JSON or a form.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Request {
    #[serde(default)]
    pub(super) actor: String,
    #[serde(default)]
    pub(super) reason: String,
    /// For resolve: `succeeded` or `failed`.
    #[serde(default)]
    pub(super) outcome: Option<String>,
    /// For replay: force a fresh key (`true`) or keep it (`false`); absent,
    /// liaison chooses (see `Liaison::replay`).
    #[serde(default)]
    pub(super) fresh_key: Option<bool>,
    /// For resolve: a result document to attach (JSON, or in a form the
    /// JSON text).
    #[serde(default)]
    pub(super) result: Option<serde_json::Value>,
    /// For a pause: when it ends (a UTC time or a length from now).
    #[serde(default)]
    pub(super) until: Option<String>,
    /// For forget: the submission's id, or its partner and key.
    #[serde(default)]
    pub(super) id: Option<String>,
    /// For forget by key: the partner.
    #[serde(default)]
    pub(super) partner: Option<String>,
    /// For forget by key: the host's idempotency key.
    #[serde(default)]
    pub(super) key: Option<String>,
}

impl Request {
    pub(super) fn from_json(body: &[u8]) -> Result<Request, Failure> {
        serde_json::from_slice(body).map_err(|e| {
            Failure::bad_request(format!(
                "the body must be JSON like {{\"actor\": \"...\", \"reason\": \"...\"}}: {e}"
            ))
        })
    }

    pub(super) fn from_form(params: &Params) -> Request {
        Request {
            actor: params.get("actor").unwrap_or_default().to_owned(),
            reason: params.get("reason").unwrap_or_default().to_owned(),
            outcome: params.get("outcome").map(str::to_owned),
            fresh_key: None,
            id: None,
            partner: None,
            key: None,
            result: params
                .get("result")
                .filter(|text| !text.trim().is_empty())
                .map(|text| {
                    serde_json::from_str(text)
                        .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
                }),
            until: params.get("until").map(str::to_owned),
        }
    }

    /// The actor's name, checked: given, on one line, not too long.
    pub(super) fn actor(&self) -> Result<String, Failure> {
        let actor = self.actor.trim();
        if actor.is_empty() {
            return Err(Failure::bad_request(
                "invalid actor: say who you are; it goes on the timeline",
            ));
        }
        if actor.chars().count() > MAX_ACTOR_CHARS || actor.chars().any(char::is_control) {
            return Err(Failure::bad_request(format!(
                "invalid actor: at most {MAX_ACTOR_CHARS} characters, on one line"
            )));
        }
        Ok(actor.to_owned())
    }

    /// The actor and the reason, both checked.
    pub(super) fn check(&self) -> Result<(Actor, &str), Failure> {
        let actor = self.actor()?;
        let actor = actor.as_str();
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(Failure::bad_request(
                "invalid reason: say why; it goes on the timeline",
            ));
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(Failure::bad_request(format!(
                "invalid reason: at most {MAX_REASON_CHARS} characters"
            )));
        }
        Ok((Actor::person(actor), reason))
    }
}

/// Do `action` to submission `id`.
pub(super) async fn perform(
    liaison: &Liaison,
    id: &str,
    action: Action,
    request: &Request,
) -> Result<Submission, Failure> {
    let id: SubmissionId = id.parse()?;
    let (actor, reason) = request.check()?;
    let done = match action {
        Action::Replay => match request.fresh_key {
            Some(fresh) => {
                let replay = Replay::new(actor, reason).fresh_key(fresh);
                liaison.replay_with(id, replay).await?
            }
            None => liaison.replay(id, actor, reason).await?,
        },
        Action::Resolve => {
            let outcome = match request.outcome.as_deref().map(str::trim) {
                Some("succeeded") => Outcome::succeeded(),
                Some("failed") => Outcome::failed(reason),
                _ => {
                    return Err(Failure::bad_request(
                        "invalid outcome: say whether the work was done (succeeded) or not (failed)",
                    ));
                }
            };
            let outcome = match &request.result {
                Some(document) => outcome.with_result(document.clone()),
                None => outcome,
            };
            liaison.resolve_manually(id, outcome, actor, reason).await?
        }
        Action::Cancel => liaison.cancel(id, actor, reason).await?,
    };
    tracing::warn!(
        submission = %id,
        action = action.as_str(),
        actor = request.actor.trim(),
        "ops page action"
    );
    Ok(done)
}

/// Erase a finished submission's personal data, named by `id` or by
/// `partner` and `key` ([`Liaison::forget`]).
pub(super) async fn forget(liaison: &Liaison, request: &Request) -> Result<Submission, Failure> {
    let (actor, reason) = request.check()?;
    let target = match (&request.id, &request.partner, &request.key) {
        (Some(id), None, None) => crate::engine::ForgetTarget::Id(id.parse()?),
        (None, Some(partner), Some(key)) => crate::engine::ForgetTarget::key(partner, key),
        _ => {
            return Err(Failure::bad_request(
                "name the submission: {\"id\": \"...\"} or {\"partner\": \"...\", \"key\": \"...\"}",
            ));
        }
    };
    let done = liaison.forget(target, actor, reason).await?;
    tracing::warn!(
        submission = %done.id,
        action = "forget",
        actor = request.actor.trim(),
        "ops page action"
    );
    Ok(done)
}

/// Re-run parked result delivery `id` (hand it to the host's handler
/// again). `of`: the submission it must belong to (the page's form), so a
/// form cannot act on another submission's delivery.
pub(super) async fn rerun(
    liaison: &Liaison,
    id: &str,
    of: Option<SubmissionId>,
    request: &Request,
) -> Result<Delivery, Failure> {
    let id: DeliveryId = id.parse()?;
    let (actor, reason) = request.check()?;
    if let Some(submission) = of {
        let filter = crate::store::DeliveryFilter::default().submission(submission);
        if !liaison
            .deliveries(&filter)
            .await?
            .iter()
            .any(|d| d.id == id)
        {
            return Err(Failure::not_found(format!(
                "submission {submission} has no delivery {id}"
            )));
        }
    }
    let done = liaison.rerun_delivery(id, actor, reason).await?;
    tracing::warn!(
        delivery = %id,
        submission = %done.submission_id,
        action = "rerun_delivery",
        actor = request.actor.trim(),
        "ops page action"
    );
    Ok(done)
}

/// Run stored callback `id` through verification, parsing and matching
/// again (after a fix shipped), naming who asked and why (journaled on its
/// submission's timeline when it concerns one, and logged).
pub(super) async fn reprocess(
    liaison: &Liaison,
    id: &str,
    request: &Request,
) -> Result<CallbackReceipt, Failure> {
    let id: CallbackId = id.parse()?;
    let (actor, reason) = request.check()?;
    Ok(liaison.reprocess_callback_by(id, actor, reason).await?)
}

/// Dismiss quarantined callback `id` (`POST /api/callbacks/{id}/dismiss`).
pub(super) async fn dismiss(
    liaison: &Liaison,
    id: &str,
    request: &Request,
) -> Result<StoredCallback, Failure> {
    let id: CallbackId = id.parse()?;
    let (actor, reason) = request.check()?;
    let done = liaison.dismiss_callback(id, actor, reason).await?;
    tracing::warn!(
        callback = %id,
        partner = %done.partner,
        action = "dismiss_callback",
        actor = request.actor.trim(),
        "ops page action"
    );
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_need_an_actor_and_a_reason() {
        let r = |actor: &str, reason: &str| Request {
            actor: actor.into(),
            reason: reason.into(),
            ..Request::default()
        };
        assert!(r("", "why").check().is_err());
        assert!(r("ann", " ").check().is_err());
        assert!(r("ann\nbob", "why").check().is_err());
        assert_eq!(r(" ann ", "why").check().unwrap().0.as_str(), "ann");
    }
}
