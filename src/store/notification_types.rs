//! What the engine hands a store about alert notifications: the outcome
//! of a try, as decided by the shared rules. Hosts read notifications
//! ([`crate::ops::alerts::AlertNotification`]); they do not build these.

use chrono::{DateTime, Utc};

use crate::model::alert::AlertId;
use crate::model::notification::{NotificationId, NotificationState};

/// What the end of a notification's try writes, as the engine decided it
/// (the fields are the crate's own: a store writes them as they are).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotificationWrite {
    /// The notification.
    pub(crate) id: NotificationId,
    /// Its alert.
    pub(crate) alert_id: AlertId,
    /// Its try this write ends: a write whose try is no longer the row's
    /// last (the claim lapsed and another took it) changes nothing.
    pub(crate) attempt: u32,
    /// Its new state.
    pub(crate) state: NotificationState,
    /// When it is tried next (pending only).
    pub(crate) next_try_at: Option<DateTime<Utc>>,
    /// Why the try failed.
    pub(crate) last_error: Option<String>,
    /// Now.
    pub(crate) at: DateTime<Utc>,
    /// Record the alert as notified in this round (sent at this time):
    /// a delivered opening or reminder. Each round counts once.
    pub(crate) notified_round: Option<DateTime<Utc>>,
    /// The (partner, owner, sink) whose failing status this try changes.
    pub(crate) route: SinkRoute,
    /// `Some(error)`: the sink is failing for this route from now (unless
    /// it was already); `None`: it delivered, so it is not.
    pub(crate) failing: Option<String>,
    /// Leave the sink's failing status as it is (the try never reached
    /// the sink).
    pub(crate) keep_status: bool,
}

/// One sink's deliveries to one owner for one partner's alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkRoute {
    pub(crate) partner: String,
    pub(crate) owner: String,
    pub(crate) sink: String,
}
