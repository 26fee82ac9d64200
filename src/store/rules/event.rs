//! Timeline lines as the rules produce them.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::event::{Actor, EventKind};
use crate::model::submission::{SubmissionId, SubmissionState};
use crate::store::Note;

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
}
