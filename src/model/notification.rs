//! The journal of alert notifications: one row per (alert, event, sink).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::alert::{AlertEvent, AlertId};

/// A notification's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(Uuid);

crate::id::uuid_id!(NotificationId, "notification id");

impl NotificationId {
    pub(crate) fn new() -> Self {
        NotificationId(Uuid::now_v7())
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotificationState {
    /// Not delivered yet: being tried, or waiting for its next try.
    Pending,
    /// The sink took it.
    Delivered,
    /// Every try failed; no more are made.
    Failed,
}

impl NotificationState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationState::Pending => "pending",
            NotificationState::Delivered => "delivered",
            NotificationState::Failed => "failed",
        }
    }
}

impl fmt::Display for NotificationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for NotificationState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [
            NotificationState::Pending,
            NotificationState::Delivered,
            NotificationState::Failed,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
        .ok_or_else(|| Error::invalid("notification state", format!("unknown state {s:?}")))
    }
}

/// One notification of one alert event to one sink, with its tries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AlertNotification {
    /// Its id.
    pub id: NotificationId,
    /// The alert.
    pub alert_id: AlertId,
    /// The alert's partner.
    pub partner: String,
    /// What the owner is told: opened, a reminder, resolved.
    pub event: AlertEvent,
    /// The sink (its name, as listed in the engine's sinks).
    pub sink: String,
    /// The owner the alert went to (its name).
    pub owner: String,
    /// Where it stands.
    pub state: NotificationState,
    /// Tries so far.
    pub attempts: u32,
    /// Why the last try failed (bounded; never a secret or a payload).
    pub last_error: Option<String>,
    /// When it is tried next (pending only).
    pub next_try_at: Option<DateTime<Utc>>,
    /// When the alert event was sent out.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the sink took it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Deliveries of alerts by one sink to one owner that are failing now, for
/// one partner's alerts: health says `alerts are not reaching <owner>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SinkFailure {
    /// The partner whose alerts are not arriving.
    pub partner: String,
    /// The owner they should reach.
    pub owner: String,
    /// The sink that fails.
    pub sink: String,
    /// Its last error (bounded; never a secret).
    pub error: String,
    /// The first failure since the sink last delivered.
    pub since: DateTime<Utc>,
}

impl AlertEvent {
    /// Every event.
    pub const ALL: [AlertEvent; 3] = [
        AlertEvent::Opened,
        AlertEvent::Renotified,
        AlertEvent::Resolved,
    ];
}

impl FromStr for AlertEvent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        AlertEvent::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| Error::invalid("alert event", format!("unknown event {s:?}")))
    }
}
