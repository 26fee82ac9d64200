//! Each write operation of the outbox, written once: read through the
//! [`Driver`], decide with [`super::rules`], write through the driver. Both
//! stores run these inside a transaction of their own (or the host's).

mod callbacks;
mod deliveries;
mod leases;
mod shared;
mod submissions;

pub(crate) use callbacks::{
    dismiss as dismiss_callback, record as record_callback, record_and_settle, settle,
};
pub(crate) use deliveries::{
    claim as claim_deliveries, finish as finish_delivery, rerun as rerun_delivery,
};
pub(crate) use leases::{claim, complete, complete_batch, reap};
pub(crate) use shared::{circuit_step, claim_role, release_role};
/// PostgreSQL runs an enqueue whose key is new as one statement alone.
#[cfg(feature = "postgres")]
pub(crate) use submissions::enqueue_fresh;
pub(crate) use submissions::{defer_deadline, enqueue, forget, note, replay, transition};

use super::driver::Driver;
use super::rules::NewEvent;
use crate::error::Result;

/// Append a timeline line whose data the store can read back.
async fn journal<D: Driver>(d: &D, event: &NewEvent) -> Result<()> {
    if let Some(data) = &event.data {
        crate::model::submission::check_depth("data", data)?;
    }
    d.append_event(event).await
}

/// Append timeline lines, in order, whose data the store can read back.
async fn journal_all<D: Driver>(d: &D, events: &[NewEvent]) -> Result<()> {
    for event in events {
        if let Some(data) = &event.data {
            crate::model::submission::check_depth("data", data)?;
        }
    }
    d.append_events(events).await
}
