//! Replay, resolve and cancel: the request, the call, and how errors answer.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::params::Params;
use crate::engine::Liaison;
use crate::error::{Error, ErrorKind};
use crate::event::Actor;
use crate::partner::Outcome;
use crate::store::Replay;
use crate::submission::{Submission, SubmissionId, SubmissionState};

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
        }
    }

    fn check(&self) -> Result<(Actor, &str), Failure> {
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
                Some("succeeded") => Outcome::Succeeded,
                Some("failed") => Outcome::Failed {
                    reason: reason.to_owned(),
                },
                _ => {
                    return Err(Failure::bad_request(
                        "invalid outcome: say whether the work was done (succeeded) or not (failed)",
                    ));
                }
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

/// A refusal or failure, with the status it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::NOT_FOUND, message)
    }

    /// `{"error": "..."}` with the status.
    pub(super) fn json(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let status = match error.kind() {
            ErrorKind::InvalidInput | ErrorKind::PayloadTooLarge => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidTransition
            | ErrorKind::IdempotencyConflict
            | ErrorKind::ReferenceTaken
            | ErrorKind::AlreadySettled
            | ErrorKind::StaleLease => StatusCode::CONFLICT,
            ErrorKind::Busy | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%error, "ops page: the store failed");
            let message = if status == StatusCode::SERVICE_UNAVAILABLE {
                "the database is busy or unreachable; try again in a moment"
            } else {
                "internal error: the store failed (see the server log)"
            };
            return Failure::new(status, message);
        }
        Failure::new(status, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses() {
        let id = SubmissionId::new();
        let status = |e: Error| Failure::from(e).status;
        assert_eq!(status(Error::invalid("reason", "say why")), 400);
        assert_eq!(
            status(Error::NotFound {
                what: "submission",
                id: id.to_string()
            }),
            404
        );
        assert_eq!(
            status(Error::InvalidTransition {
                id,
                from: SubmissionState::Succeeded,
                to: SubmissionState::Queued,
                reason: "terminal"
            }),
            409
        );
        assert_eq!(status(Error::Closed), 500);
    }

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
