//! Problem classes, owners and alerts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::event::Actor;

/// What kind of problem an alert is about. Each maps to an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemClass {
    /// The partner cannot be reached (circuit open) or work is not moving.
    PartnerUnavailable,
    /// The partner refused submissions for good (dead letters).
    RejectedByPartner,
    /// Accepted submissions whose result did not come in time (stuck).
    ResultOverdue,
    /// The partner reported it could not process submissions.
    ProcessingFailed,
    /// Callbacks that could not be parsed.
    MalformedCallback,
    /// Callbacks that matched no submission within their window.
    UnmatchedCallback,
    /// Callbacks whose signature did not verify.
    BadSignature,
    /// Unfinished work approaching or past the delay budget.
    DelayBudgetExceeded,
    /// Callbacks that contradict what is known.
    ConflictingCallback,
    /// The host's result handler kept failing: finished submissions whose
    /// result did not reach the host (parked deliveries). Owned by the host
    /// team unless routed elsewhere.
    ResultsNotDelivered,
    /// Submissions dead-lettered by the reaper: the worker crashed or hung
    /// on each of them several times in a row (or its attempts or age ran
    /// out while it did). Open while such dead letters are not replayed,
    /// resolved or cancelled. Owned by the host team unless routed
    /// elsewhere.
    WorkerCrashed,
    /// A partner with expected traffic ([`crate::Partner::expect_traffic`])
    /// saw less than expected inside its windows: the host may have stopped
    /// sending, or the partner stopped answering.
    SilentPartner,
    /// Open work near or past its business deadline (e.g. a claim's timely
    /// filing limit): opens within the partner's lead time, before the
    /// breach, and stays open until that work finishes or is resolved.
    BusinessDeadlineAtRisk,
}

impl ProblemClass {
    /// Every class.
    pub const ALL: [ProblemClass; 13] = [
        ProblemClass::PartnerUnavailable,
        ProblemClass::RejectedByPartner,
        ProblemClass::ResultOverdue,
        ProblemClass::ProcessingFailed,
        ProblemClass::MalformedCallback,
        ProblemClass::UnmatchedCallback,
        ProblemClass::BadSignature,
        ProblemClass::DelayBudgetExceeded,
        ProblemClass::ConflictingCallback,
        ProblemClass::ResultsNotDelivered,
        ProblemClass::WorkerCrashed,
        ProblemClass::SilentPartner,
        ProblemClass::BusinessDeadlineAtRisk,
    ];

    /// The class of a quarantined callback of disposition `d` (`None` for
    /// a disposition outside the quarantine).
    pub fn of_quarantined(d: crate::model::callback::Disposition) -> Option<ProblemClass> {
        use crate::model::callback::Disposition;
        match d {
            Disposition::Malformed => Some(ProblemClass::MalformedCallback),
            Disposition::Expired => Some(ProblemClass::UnmatchedCallback),
            Disposition::Rejected => Some(ProblemClass::BadSignature),
            Disposition::Conflicting => Some(ProblemClass::ConflictingCallback),
            _ => None,
        }
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemClass::PartnerUnavailable => "partner_unavailable",
            ProblemClass::RejectedByPartner => "rejected_by_partner",
            ProblemClass::ResultOverdue => "result_overdue",
            ProblemClass::ProcessingFailed => "processing_failed",
            ProblemClass::MalformedCallback => "malformed_callback",
            ProblemClass::UnmatchedCallback => "unmatched_callback",
            ProblemClass::BadSignature => "bad_signature",
            ProblemClass::DelayBudgetExceeded => "delay_budget_exceeded",
            ProblemClass::ConflictingCallback => "conflicting_callback",
            ProblemClass::ResultsNotDelivered => "results_not_delivered",
            ProblemClass::WorkerCrashed => "worker_crashed",
            ProblemClass::SilentPartner => "silent_partner",
            ProblemClass::BusinessDeadlineAtRisk => "business_deadline_at_risk",
        }
    }
}

impl fmt::Display for ProblemClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for ProblemClass {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ProblemClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::invalid("problem class", format!("unknown class {s:?}")))
    }
}

/// Who answers for a class of problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Owner {
    /// A team or person.
    pub name: String,
    /// How to reach them (an address, a channel, a pager key).
    pub contact: String,
    /// Where the steps to recover are written.
    pub runbook: Option<String>,
}

impl Owner {
    /// An owner with a contact.
    pub fn new(name: impl Into<String>, contact: impl Into<String>) -> Self {
        Owner {
            name: name.into(),
            contact: contact.into(),
            runbook: None,
        }
    }

    /// Add a runbook link.
    pub fn runbook(mut self, link: impl Into<String>) -> Self {
        self.runbook = Some(link.into());
        self
    }
}

/// Who owns each problem, by partner and class, with defaults.
///
/// An alert's owner is looked up in this order; the first that is set wins:
///
/// 1. the route for its (partner, class) ([`Ownership::route_partner`]);
/// 2. the partner's owner ([`Ownership::partner`]);
/// 3. the class's owner ([`Ownership::route`]; [`ProblemClass::ResultsNotDelivered`]
///    goes to the host team unless routed);
/// 4. the default owner ([`Ownership::new`]).
///
/// ```
/// use liaison::ops::alerts::{Owner, Ownership, ProblemClass};
///
/// let revenue_cycle = Owner::new("revenue cycle", "#revenue-cycle");
/// let lab_ops = Owner::new("lab operations", "lab-ops@clinic.example");
/// let ownership = Ownership::new(Owner::new("integrations team", "#integrations"))
///     .route(ProblemClass::ProcessingFailed, Owner::new("billing ops", "billing@clinic.example"))
///     .route_partner("clearinghouse", ProblemClass::PartnerUnavailable, revenue_cycle)
///     .partner("lab", lab_ops);
///
/// // (partner, class) first...
/// assert_eq!(ownership.owner_for("clearinghouse", ProblemClass::PartnerUnavailable).name, "revenue cycle");
/// // ...then the partner's owner, for every class of that partner...
/// assert_eq!(ownership.owner_for("lab", ProblemClass::PartnerUnavailable).name, "lab operations");
/// assert_eq!(ownership.owner_for("lab", ProblemClass::ProcessingFailed).name, "lab operations");
/// // ...then the class's owner...
/// assert_eq!(ownership.owner_for("clearinghouse", ProblemClass::ProcessingFailed).name, "billing ops");
/// // ...then the default.
/// assert_eq!(ownership.owner_for("clearinghouse", ProblemClass::BadSignature).name, "integrations team");
/// // The host's own failures go to the host team unless routed (a partner's
/// // owner comes first, as above: route (partner, class) to keep them apart).
/// assert_eq!(ownership.owner_for("clearinghouse", ProblemClass::ResultsNotDelivered).name, "host team");
/// assert_eq!(ownership.owner_for("lab", ProblemClass::ResultsNotDelivered).name, "lab operations");
/// assert_eq!(ownership.owner_for("clearinghouse", ProblemClass::WorkerCrashed).name, "host team");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    default: Owner,
    classes: BTreeMap<ProblemClass, Owner>,
    partners: BTreeMap<String, Owner>,
    partner_classes: BTreeMap<(String, ProblemClass), Owner>,
}

impl Ownership {
    /// Everything goes to `default` unless routed elsewhere — except the
    /// host's own failures, which go to the host team unless routed:
    /// [`ProblemClass::ResultsNotDelivered`] (the application whose result
    /// handler fails) and [`ProblemClass::WorkerCrashed`] (the application
    /// whose worker crashed or hung on submissions).
    pub fn new(default: Owner) -> Self {
        Ownership {
            default,
            classes: BTreeMap::from([
                (
                    ProblemClass::ResultsNotDelivered,
                    Owner::new(
                        "host team",
                        "the application whose result handler fails; fix it, then re-run the parked deliveries",
                    ),
                ),
                (
                    ProblemClass::WorkerCrashed,
                    Owner::new(
                        "host team",
                        "the application whose worker crashed or hung on these submissions; fix it, then replay, resolve or cancel the dead letters",
                    ),
                ),
            ]),
            partners: BTreeMap::new(),
            partner_classes: BTreeMap::new(),
        }
    }

    /// Route one class, at every partner, to an owner.
    pub fn route(mut self, class: ProblemClass, owner: Owner) -> Self {
        self.classes.insert(class, owner);
        self
    }

    /// Route every class of one partner to an owner (a (partner, class)
    /// route still comes first).
    pub fn partner(mut self, partner: impl Into<String>, owner: Owner) -> Self {
        self.partners.insert(partner.into(), owner);
        self
    }

    /// Route one class of one partner to an owner: the most specific route.
    pub fn route_partner(
        mut self,
        partner: impl Into<String>,
        class: ProblemClass,
        owner: Owner,
    ) -> Self {
        self.partner_classes.insert((partner.into(), class), owner);
        self
    }

    /// The owner of a class of problem at a partner (see the order above).
    pub fn owner_for(&self, partner: &str, class: ProblemClass) -> &Owner {
        self.partner_classes
            .get(&(partner.to_owned(), class))
            .or_else(|| self.partners.get(partner))
            .or_else(|| self.classes.get(&class))
            .unwrap_or(&self.default)
    }

    /// Every owner named here (the default included), in no particular
    /// order and possibly repeated.
    pub fn owners(&self) -> impl Iterator<Item = &Owner> {
        std::iter::once(&self.default)
            .chain(self.classes.values())
            .chain(self.partners.values())
            .chain(self.partner_classes.values())
    }
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership::new(Owner::new(
            "unassigned",
            "configure Ownership on the Liaison builder",
        ))
    }
}

/// An alert's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertId(Uuid);

crate::id::uuid_id!(AlertId, "alert id");

impl AlertId {
    pub(crate) fn new() -> Self {
        AlertId(Uuid::now_v7())
    }
}

/// One problem of one class at one partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Alert {
    /// Its id.
    pub id: AlertId,
    /// The partner.
    pub partner: String,
    /// The class of problem.
    pub class: ProblemClass,
    /// Who owns it (as configured when it opened).
    pub owner: Owner,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// When its owner was last notified.
    pub last_notified_at: Option<DateTime<Utc>>,
    /// How many notifications were sent.
    pub notify_count: u32,
    /// Who acknowledged it (re-notifications stop).
    pub acknowledged_by: Option<Actor>,
    /// When it was acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When it resolved (the condition cleared).
    pub resolved_at: Option<DateTime<Utc>>,
    /// Raised while the partner was paused for announced maintenance.
    pub expected: bool,
    /// What the condition was, in words.
    pub details: String,
}

impl Alert {
    /// Still open.
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }
}

/// Why a sink is told about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertEvent {
    /// The problem started.
    Opened,
    /// Still open and unacknowledged: a reminder.
    Renotified,
    /// The condition cleared.
    Resolved,
}

impl AlertEvent {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Opened => "opened",
            AlertEvent::Renotified => "renotified",
            AlertEvent::Resolved => "resolved",
        }
    }
}
