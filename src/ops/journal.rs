//! The operations journal: who did what on the recovery desk, when and why,
//! for the actions that have no submission's timeline to go on — a partner
//! paused or resumed, an alert acknowledged (with its note), a callback that
//! matched no submission reprocessed, a bulk dismissal or reprocessing of
//! quarantined callbacks by filter (one line, with the count).
//!
//! Written by the [`crate::Liaison`] methods that take those actions, so the
//! CLI and the ops page both journal; read with
//! [`crate::Liaison::ops_journal`].

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::event::Actor;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpsAction {
    /// A partner paused until a time ([`crate::Liaison::pause`]).
    PausePartner,
    /// A partner's pause lifted ([`crate::Liaison::resume`]).
    ResumePartner,
    /// An alert acknowledged by its owner, with a note
    /// ([`crate::Liaison::acknowledge_alert_with_note`]).
    AcknowledgeAlert,
    /// A callback that concerns no submission reprocessed
    /// ([`crate::Liaison::reprocess_callback_by`]); one that concerns a
    /// submission is journaled on its timeline instead.
    ReprocessCallback,
    /// Quarantined callbacks reprocessed by filter
    /// ([`crate::Liaison::reprocess_callbacks_by`]).
    ReprocessCallbacks,
    /// Quarantined callbacks dismissed by filter
    /// ([`crate::Liaison::dismiss_callbacks`]).
    DismissCallbacks,
}

impl OpsAction {
    /// Every action, in declaration order.
    pub const ALL: [OpsAction; 6] = [
        OpsAction::PausePartner,
        OpsAction::ResumePartner,
        OpsAction::AcknowledgeAlert,
        OpsAction::ReprocessCallback,
        OpsAction::ReprocessCallbacks,
        OpsAction::DismissCallbacks,
    ];

    /// The stored name: `pause_partner`, `resume_partner`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            OpsAction::PausePartner => "pause_partner",
            OpsAction::ResumePartner => "resume_partner",
            OpsAction::AcknowledgeAlert => "acknowledge_alert",
            OpsAction::ReprocessCallback => "reprocess_callback",
            OpsAction::ReprocessCallbacks => "reprocess_callbacks",
            OpsAction::DismissCallbacks => "dismiss_callbacks",
        }
    }

    /// In plain words: "paused the partner".
    pub fn words(self) -> &'static str {
        match self {
            OpsAction::PausePartner => "paused the partner",
            OpsAction::ResumePartner => "resumed the partner",
            OpsAction::AcknowledgeAlert => "acknowledged the alert",
            OpsAction::ReprocessCallback => "reprocessed a callback",
            OpsAction::ReprocessCallbacks => "reprocessed callbacks by filter",
            OpsAction::DismissCallbacks => "dismissed callbacks by filter",
        }
    }
}

impl fmt::Display for OpsAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for OpsAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        OpsAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::invalid("action", format!("not an operations action: {s:?}")))
    }
}

/// A line to journal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalLine {
    /// When (the store's clock).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: OpsAction,
    /// The partner concerned, if one is.
    pub partner: Option<String>,
    /// What it was done to: an alert or callback id, or the filter of a
    /// bulk action.
    pub target: Option<String>,
    /// Why (for a bulk action, with the count); an acknowledgement's note.
    pub reason: String,
}

impl JournalLine {
    /// A line for `action` by `actor` at `at`, with its reason.
    pub fn new(
        at: DateTime<Utc>,
        actor: Actor,
        action: OpsAction,
        reason: impl Into<String>,
    ) -> Self {
        JournalLine {
            at,
            actor,
            action,
            partner: None,
            target: None,
            reason: reason.into(),
        }
    }

    /// The partner concerned.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    /// What it was done to.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
}

/// A journaled line, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JournalEntry {
    /// Its place in the journal: later lines have higher ids.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What, by its stored name ([`OpsAction::as_str`]); a name a later
    /// version wrote reads as it is.
    pub action: String,
    /// The partner concerned, if one is.
    pub partner: Option<String>,
    /// What it was done to: an alert or callback id, or a bulk action's
    /// filter.
    pub target: Option<String>,
    /// Why; an acknowledgement's note.
    pub reason: String,
}

impl JournalEntry {
    /// The action, when this version knows it.
    pub fn ops_action(&self) -> Option<OpsAction> {
        self.action.parse().ok()
    }

    /// What was done in plain words ("paused the partner"), or the stored
    /// name of an action this version does not know.
    pub fn action_words(&self) -> &str {
        match self.ops_action() {
            Some(action) => action.words(),
            None => &self.action,
        }
    }
}

/// Which journal lines to read: newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalFilter {
    /// Only this partner's lines.
    pub partner: Option<String>,
    /// Only the lines about this target (an alert or callback id).
    pub target: Option<String>,
    /// Only lines older than this id (the next page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most
    /// [`JournalFilter::MAX_LIMIT`]).
    pub limit: Option<usize>,
}

impl JournalFilter {
    /// The most lines one read returns.
    pub const MAX_LIMIT: usize = 1000;

    /// Only this partner's lines.
    pub fn partner(mut self, partner: impl Into<String>) -> Self {
        self.partner = Some(partner.into());
        self
    }

    /// Only the lines about this target.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Only lines older than `id`.
    pub fn before(mut self, id: i64) -> Self {
        self.before = Some(id);
        self
    }

    /// At most `limit` lines.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The limit to read with.
    pub(crate) fn effective_limit(&self) -> i64 {
        i64::try_from(self.limit.unwrap_or(100).min(Self::MAX_LIMIT)).unwrap_or(100)
    }
}
