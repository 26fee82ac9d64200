//! Alert notifications: an alert goes to its owner's sinks plus the
//! catch-all sinks; every (alert, event, sink) notification is journaled,
//! each try runs in its own task under the sink timeout, and a failed try
//! is retried with backoff by the alert loop until it is delivered or fails
//! for good. The decisions (what is due, when a try has failed for good,
//! what counts as notified) are `store::rules::notify`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{Liaison, Shared};
use crate::error::{Error, Result};
use crate::model::alert::{Alert, AlertEvent, AlertId, Ownership};
use crate::model::notification::AlertNotification;
use crate::ops::alerts::{AlertSink, TracingSink};
use crate::store::rules::notify::{self, Tried, TryPolicy};

/// Most notifications claimed for a retry in one round.
const RETRY_BATCH: usize = 100;

/// Added to the sink timeout to get a try's lease: a try that outlives it
/// (its instance died) is taken again.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// One configured sink, under the name its notifications are journaled by.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) label: String,
    pub(crate) sink: Arc<dyn AlertSink>,
}

/// Where alerts go: catch-all sinks, and each owner's own.
#[derive(Debug, Default)]
pub(crate) struct Sinks {
    catch_all: Vec<Target>,
    by_owner: BTreeMap<String, Vec<Target>>,
}

impl Sinks {
    /// Check and label the builder's sinks. Each sink is journaled under its
    /// [`AlertSink::name`]; a name used by more than one sink gets `#2`,
    /// `#3`... in the order they were added (catch-all sinks first), so
    /// keep that order stable across restarts. An owner name that the
    /// ownership does not know is `InvalidInput`. Without a catch-all sink,
    /// [`TracingSink`] is the catch-all.
    pub(crate) fn build(
        catch_all: Vec<Arc<dyn AlertSink>>,
        owners: Vec<(String, Arc<dyn AlertSink>)>,
        ownership: &Ownership,
    ) -> Result<Sinks> {
        let known: BTreeSet<&str> = ownership.owners().map(|o| o.name.as_str()).collect();
        for (owner, _) in &owners {
            if !known.contains(owner.as_str()) {
                return Err(Error::invalid(
                    "owner_sink",
                    format!(
                        "no owner is named {owner:?} in the ownership (known: {})",
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut catch_all = catch_all;
        if catch_all.is_empty() {
            catch_all.push(Arc::new(TracingSink));
        }
        let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut label = |sink: &Arc<dyn AlertSink>| {
            let n = seen.entry(sink.name()).or_default();
            *n += 1;
            if *n == 1 {
                sink.name().to_owned()
            } else {
                format!("{}#{n}", sink.name())
            }
        };
        let mut sinks = Sinks::default();
        for sink in catch_all {
            sinks.catch_all.push(Target {
                label: label(&sink),
                sink,
            });
        }
        for (owner, sink) in owners {
            let target = Target {
                label: label(&sink),
                sink,
            };
            sinks.by_owner.entry(owner).or_default().push(target);
        }
        Ok(sinks)
    }

    /// The sinks an alert of `owner` goes to: the owner's, then the
    /// catch-all ones.
    pub(crate) fn for_owner(&self, owner: &str) -> Vec<Target> {
        self.by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .chain(&self.catch_all)
            .cloned()
            .collect()
    }

    fn by_label(&self, label: &str) -> Option<&Target> {
        self.catch_all
            .iter()
            .chain(self.by_owner.values().flatten())
            .find(|t| t.label == label)
    }
}

fn policy(shared: &Shared) -> TryPolicy {
    let settings = &shared.alert_settings;
    TryPolicy {
        backoff: settings.sink_retry,
        max_attempts: settings.sink_attempts,
        lease: settings.sink_timeout.saturating_add(LEASE_MARGIN),
    }
}

impl Liaison {
    /// Journal a notification of `event` for each of the alert owner's
    /// sinks and the catch-all sinks, and try each in its own task. Returns
    /// once they are journaled, without waiting for any sink.
    pub(super) async fn send_alert(&self, event: AlertEvent, alert: &Alert) -> Result<()> {
        if event == AlertEvent::Opened {
            self.shared
                .metrics
                .alert_opened(&alert.partner, alert.class.as_str());
        }
        let now = self.shared.now();
        let policy = policy(&self.shared);
        let targets = self.shared.sinks.for_owner(&alert.owner.name);
        let rows: Vec<AlertNotification> = targets
            .iter()
            .map(|t| notify::first_try(alert, event, &t.label, now, &policy))
            .collect();
        self.store().record_notifications(rows.clone()).await?;
        for (row, target) in rows.into_iter().zip(targets) {
            spawn_try(&self.shared, row, target.sink, alert.clone());
        }
        Ok(())
    }

    /// Claim the notifications whose next try is due and try them again,
    /// each in its own task. The alert loop does this between evaluations.
    pub(super) async fn retry_notifications(&self) -> Result<()> {
        let now = self.shared.now();
        let policy = policy(&self.shared);
        let claimed = self
            .store()
            .claim_notifications(now, notify::claim_until(now, &policy), RETRY_BATCH)
            .await?;
        for n in claimed {
            let alert = match self.store().alert(n.alert_id).await {
                Ok(alert) => Some(alert),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            let target = self.shared.sinks.by_label(&n.sink).cloned();
            let stop = match (&target, notify::superseded(&n, alert.as_ref())) {
                (None, _) => Some(("this sink is no longer configured", true)),
                (Some(_), Some(why)) => Some((why, false)),
                (Some(_), None) => None,
            };
            match (stop, target, alert) {
                (None, Some(target), Some(alert)) => spawn_try(&self.shared, n, target.sink, alert),
                (stop, ..) => {
                    let (why, sink_gone) = stop.unwrap_or(("the alert no longer exists", false));
                    // Not a try of the sink: journaled, not counted.
                    let write = notify::given_up(&n, why, sink_gone, self.shared.now());
                    self.store().finish_notification(write).await?;
                }
            }
        }
        Ok(())
    }

    /// The notifications of one alert, in the order they were sent: to
    /// which sink and owner, how many tries, delivered, pending (with its
    /// next try) or failed (with the last error).
    pub async fn alert_notifications(&self, id: AlertId) -> Result<Vec<AlertNotification>> {
        self.store().alert_notifications(id).await
    }

    /// Alert ids with a notification still being tried.
    pub(super) async fn alerts_being_notified(&self) -> Result<BTreeSet<AlertId>> {
        Ok(self
            .store()
            .pending_notifications(10_000)
            .await?
            .into_iter()
            .map(|n| n.alert_id)
            .collect())
    }
}

/// Try one notification under the sink timeout, in its own task, and
/// journal how it went.
fn spawn_try(shared: &Arc<Shared>, n: AlertNotification, sink: Arc<dyn AlertSink>, alert: Alert) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let timeout = shared.alert_settings.sink_timeout;
        let tried = match tokio::time::timeout(timeout, sink.notify(n.event, &alert)).await {
            Ok(Ok(())) => Tried::Delivered,
            Ok(Err(error)) => Tried::Failed(error.reason),
            Err(_) => Tried::Failed(format!("no answer within {} ms", timeout.as_millis())),
        };
        if let Tried::Failed(error) = &tried {
            tracing::warn!(
                sink = %n.sink, owner = %n.owner, alert_id = %alert.id, attempt = n.attempts,
                %error, "alert notification failed"
            );
        }
        let write = notify::after_try(&n, tried, &policy(&shared), shared.now());
        shared
            .metrics
            .alert_notification(&n.sink, notify::outcome(&write));
        if let Err(error) = shared.store.finish_notification(write).await {
            tracing::warn!(%error, alert_id = %alert.id, "recording an alert notification failed");
        }
    });
}
