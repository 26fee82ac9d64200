//! Result deliveries: one per change that finishes a submission of a
//! partner whose results go to the host, recorded with that change and run
//! by the engine until the host's handler took it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::submission::{SubmissionId, SubmissionState};

/// Identifies one result delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(Uuid);

crate::id::uuid_id!(DeliveryId, "delivery id");

impl DeliveryId {
    /// A new, time-ordered id.
    pub(crate) fn new() -> Self {
        DeliveryId(Uuid::now_v7())
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting to be handed to the host's handler (first time or retry).
    Pending,
    /// The host's handler took it.
    Delivered,
    /// The handler kept failing; waits for someone to re-run it. Holds back
    /// later results of the same ordering key.
    Parked,
}

impl DeliveryState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Parked => "parked",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "parked" => Ok(DeliveryState::Parked),
            other => Err(Error::invalid(
                "delivery state",
                format!("{other:?} is not pending, delivered or parked"),
            )),
        }
    }
}

/// One result delivery as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The finished submission.
    pub submission_id: SubmissionId,
    /// Its partner.
    pub partner: String,
    /// The state that finished it (what the host is told).
    pub final_state: SubmissionState,
    /// Where the delivery stands.
    pub state: DeliveryState,
    /// Handler calls started so far.
    pub attempts: u32,
    /// When it is next due (while pending).
    pub due_at: DateTime<Utc>,
    /// When it was recorded (with the change that finished the submission).
    pub created_at: DateTime<Utc>,
    /// When the handler took it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The handler's last error.
    pub last_error: Option<String>,
}
