//! Alerts: an open problem of one class at one partner, routed to its owner.
//!
//! The engine evaluates conditions periodically (see
//! [`crate::engine::AlertSettings`]), opens at most one alert per (partner,
//! class), re-notifies on a schedule while it stays open and unacknowledged,
//! and resolves it when the condition clears. Alerts are persisted, so every
//! host instance and the CLI see the same ones. Where they go is an
//! [`AlertSink`]: [`TracingSink`], [`ChannelSink`], [`WebhookSink`].

mod sinks;

pub use crate::model::alert::{Alert, AlertEvent, AlertId, Owner, Ownership, ProblemClass};
pub use sinks::{AlertSink, ChannelSink, SinkError, TracingSink, WebhookSink, WebhookSinkBuilder};
