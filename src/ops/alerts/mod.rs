//! Alerts: an open problem of one class at one partner, routed to its owner.
//!
//! The engine evaluates conditions periodically (see
//! [`crate::engine::AlertSettings`]), opens at most one alert per (partner,
//! class), re-notifies on a schedule while it stays open and unacknowledged,
//! and resolves it when the condition clears. Alerts are persisted, so every
//! host instance and the CLI see the same ones. Where they go is an
//! [`AlertSink`]: [`TracingSink`], [`ChannelSink`], [`WebhookSink`] (signed
//! JSON), [`ChatWebhookSink`] (Slack-compatible incoming webhooks).
//!
//! Each alert goes to its owner's sinks ([`crate::engine::LiaisonBuilder::owner_sink`])
//! plus the catch-all sinks ([`crate::engine::LiaisonBuilder::alert_sink`]).
//! Every (alert, event, sink) notification is journaled
//! ([`AlertNotification`]); a failed or timed-out try is retried with
//! backoff up to [`crate::engine::AlertSettings::sink_attempts`], then
//! journaled failed, and health says `alerts are not reaching <owner>`
//! while a sink keeps failing ([`SinkFailure`]).

mod chat;
mod sinks;

pub use crate::model::alert::{Alert, AlertEvent, AlertId, Owner, Ownership, ProblemClass};
pub use crate::model::notification::{
    AlertNotification, NotificationId, NotificationState, SinkFailure,
};
pub use chat::{ChatWebhookSink, ChatWebhookSinkBuilder};
pub use sinks::{AlertSink, ChannelSink, SinkError, TracingSink, WebhookSink, WebhookSinkBuilder};
