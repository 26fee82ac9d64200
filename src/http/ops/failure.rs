//! How a refused or failed ops request answers: its status and message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{Error, ErrorKind};

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
            | ErrorKind::NotParked
            | ErrorKind::NotQuarantined
            | ErrorKind::Unfinished
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
    use crate::model::callback::{CallbackId, Disposition};
    use crate::model::submission::{SubmissionId, SubmissionState};

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
        assert_eq!(
            status(Error::ReferenceTaken {
                partner: "lab".into(),
                reference: "R".into(),
                holder: Some(id),
            }),
            409
        );
        assert_eq!(
            status(Error::AlreadySettled {
                id: CallbackId::new(),
                disposition: Disposition::Applied,
            }),
            409
        );
        assert_eq!(
            status(Error::NotParked {
                id: "0190a7b2-58f1-7c2e-9a35-5d0e8b1f2c3d".parse().unwrap(),
                state: crate::model::delivery::DeliveryState::Delivered,
            }),
            409
        );
        assert_eq!(
            status(Error::NotQuarantined {
                id: CallbackId::new(),
                disposition: Disposition::Applied,
            }),
            409
        );
        let lost = Error::Unavailable {
            operation: "read submission",
            source: "connection closed".into(),
        };
        let answer = Failure::from(lost);
        assert_eq!(answer.status, 503);
        assert!(
            !answer.message.contains("connection closed"),
            "{}",
            answer.message
        );
        assert_eq!(status(Error::corrupt("state", None)), 500);
        assert_eq!(status(Error::Closed), 500);
    }
}
