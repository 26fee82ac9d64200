//! The alert evaluator: from health to open, re-notified and resolved alerts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Liaison, Shared};
use crate::engine::CircuitState;
use crate::error::{Error, Result};
use crate::model::delivery::DeliveryState;
use crate::model::event::Actor;
use crate::ops::PartnerHealth;
use crate::ops::alerts::{Alert, AlertEvent, AlertId, ProblemClass};
use crate::ops::health::item_problems;
use crate::ops::journal::{JournalLine, OpsAction};
use crate::retry::Exponential;
use crate::store::rules::notify::reminder_due;
use crate::store::{DeliveryFilter, NewAlert, RoleLease, StatsQuery};

/// When alerts open, per partner. `Default` is what we recommend.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AlertThresholds {
    /// Consecutive unavailability failures (transient errors, timeouts)
    /// that raise "partner unavailable". Default 5.
    pub consecutive_failures: u32,
    /// Share of submissions ending in the window that the partner reported
    /// as failed above which "processing failed" opens. Default 0.10.
    pub error_rate: f64,
    /// Queued work older than this raises "partner unavailable". Default 15 min.
    pub queue_age: Duration,
    /// Stuck submissions that raise "result overdue". Default 1.
    pub stuck_count: u64,
    /// "Delay budget exceeded" opens when work reaches this share of the
    /// partner's delay budget, before the breach. Default 0.8.
    pub delay_budget_warning: f64,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            consecutive_failures: 5,
            error_rate: 0.10,
            queue_age: Duration::from_secs(15 * 60),
            stuck_count: 1,
            delay_budget_warning: 0.8,
        }
    }
}

impl AlertThresholds {
    /// Set [`AlertThresholds::consecutive_failures`].
    pub fn consecutive_failures(mut self, consecutive_failures: u32) -> Self {
        self.consecutive_failures = consecutive_failures;
        self
    }

    /// Set [`AlertThresholds::error_rate`].
    pub fn error_rate(mut self, error_rate: f64) -> Self {
        self.error_rate = error_rate;
        self
    }

    /// Set [`AlertThresholds::queue_age`].
    pub fn queue_age(mut self, queue_age: Duration) -> Self {
        self.queue_age = queue_age;
        self
    }

    /// Set [`AlertThresholds::stuck_count`].
    pub fn stuck_count(mut self, stuck_count: u64) -> Self {
        self.stuck_count = stuck_count;
        self
    }

    /// Set [`AlertThresholds::delay_budget_warning`].
    pub fn delay_budget_warning(mut self, delay_budget_warning: f64) -> Self {
        self.delay_budget_warning = delay_budget_warning;
        self
    }
}

/// How alerts are evaluated. `Default` is what we recommend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertSettings {
    /// How often conditions are evaluated. Default 30 s.
    pub interval: Duration,
    /// The window that rate classes (partner unavailable, processing
    /// failed) look at; classes about items stay open while the items
    /// remain, and only say how many of them are from this window.
    /// Default 15 min.
    pub window: Duration,
    /// Re-notify an open, unacknowledged alert this often. Default 1 h.
    pub renotify_every: Duration,
    /// Longest a sink may take per try. Default 10 s.
    pub sink_timeout: Duration,
    /// Tries per notification before it is journaled failed. Default 5.
    pub sink_attempts: u32,
    /// The backoff between a notification's tries. Default 2 s doubling to
    /// at most 5 min, with full jitter.
    pub sink_retry: Exponential,
    /// How long the running engine that evaluates alerts keeps that role
    /// without renewing it. One instance at a time evaluates (the
    /// [`crate::store::RoleLease::ALERT_EVALUATOR`] role, renewed at each
    /// evaluation); when its holder dies, another instance takes over once
    /// this lease runs out, within one `interval` after it. `None` (the
    /// default): three times `interval`. A lease set must be longer than
    /// `interval` (checked at build), or the role would lapse between
    /// renewals.
    pub evaluator_lease: Option<Duration>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            interval: Duration::from_secs(30),
            window: Duration::from_secs(15 * 60),
            renotify_every: Duration::from_secs(3600),
            sink_timeout: Duration::from_secs(10),
            sink_attempts: 5,
            sink_retry: Exponential::new(Duration::from_secs(2), Duration::from_secs(300))
                .unwrap_or_default(),
            evaluator_lease: None,
        }
    }
}

impl AlertSettings {
    /// Set [`AlertSettings::interval`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Set [`AlertSettings::window`].
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Set [`AlertSettings::renotify_every`].
    pub fn renotify_every(mut self, renotify_every: Duration) -> Self {
        self.renotify_every = renotify_every;
        self
    }

    /// Set [`AlertSettings::sink_timeout`].
    pub fn sink_timeout(mut self, sink_timeout: Duration) -> Self {
        self.sink_timeout = sink_timeout;
        self
    }

    /// Set [`AlertSettings::sink_attempts`] (at least 1, checked at build).
    pub fn sink_attempts(mut self, sink_attempts: u32) -> Self {
        self.sink_attempts = sink_attempts;
        self
    }

    /// Set [`AlertSettings::sink_retry`].
    pub fn sink_retry(mut self, sink_retry: Exponential) -> Self {
        self.sink_retry = sink_retry;
        self
    }

    /// Set [`AlertSettings::evaluator_lease`].
    pub fn evaluator_lease(mut self, evaluator_lease: Duration) -> Self {
        self.evaluator_lease = Some(evaluator_lease);
        self
    }

    /// The evaluator role's lease: as set, or three times the interval.
    pub(crate) fn evaluator_lease_or_default(&self) -> Duration {
        self.evaluator_lease
            .unwrap_or_else(|| self.interval.saturating_mul(3))
    }
}

/// `share` of `budget` (the delay-budget warning), saturating: a budget
/// "for ever" (`Duration::MAX`) or a share above 1 that would overflow gives
/// `Duration::MAX`, a negative share zero, a NaN share the budget itself.
fn share_of(budget: Duration, share: f64) -> Duration {
    if share.is_nan() {
        return budget;
    }
    Duration::try_from_secs_f64((budget.as_secs_f64() * share).max(0.0)).unwrap_or(Duration::MAX)
}

/// The conditions that hold now for one partner: class -> details.
///
/// Classes about items (dead letters, stuck work, quarantined callbacks,
/// parked results) hold while such items remain and clear when they are
/// recovered; rate classes (unavailable, processing failed) look at the
/// `window` and the live failure count.
fn conditions(
    p: &PartnerHealth,
    thresholds: &AlertThresholds,
    consecutive_failures: u32,
    approaching_budget: u64,
    parked_results: u64,
    window: Duration,
) -> BTreeMap<ProblemClass, String> {
    let mut found = BTreeMap::new();
    // Open until the parked deliveries are re-run and delivered: the
    // problem lasts as long as the results are missing from the host.
    if parked_results > 0 {
        found.insert(
            ProblemClass::ResultsNotDelivered,
            format!(
                "{parked_results} finished submission(s) whose result the host's handler kept failing to take; fix the handler, then re-run the parked deliveries"
            ),
        );
    }
    // Open until those dead letters are replayed, resolved or cancelled.
    if p.worker_crashed > 0 {
        found.insert(
            ProblemClass::WorkerCrashed,
            format!(
                "{}; fix the worker, then replay, resolve or cancel them",
                crate::ops::health::worker_crashed_words(p.worker_crashed)
            ),
        );
    }
    let mut unavailable = Vec::new();
    if matches!(p.circuit, Some(CircuitState::Open | CircuitState::HalfOpen)) {
        unavailable.push("its circuit is open".to_owned());
    }
    if consecutive_failures >= thresholds.consecutive_failures {
        unavailable.push(format!(
            "{consecutive_failures} consecutive failed attempts"
        ));
    }
    if let Some(age) = p.oldest_queued_secs
        && age > thresholds.queue_age.as_secs()
    {
        unavailable.push(format!("the oldest queued submission has waited {age} s"));
    }
    if p.dispatcher.missing {
        unavailable.push("work is due and no live engine instance dispatches it".to_owned());
    }
    if !unavailable.is_empty() {
        found.insert(ProblemClass::PartnerUnavailable, unavailable.join("; "));
    }
    if let Some(reason) = p.traffic.as_ref().and_then(|t| t.reason.clone()) {
        found.insert(ProblemClass::SilentPartner, reason);
    }
    let decided = p.window.succeeded + p.window.failed + p.window.dead_lettered;
    if p.window.failed > 0 && p.window.failed as f64 / decided as f64 > thresholds.error_rate {
        found.insert(
            ProblemClass::ProcessingFailed,
            format!(
                "the partner reported {} failure(s) of {decided} in the window",
                p.window.failed
            ),
        );
    }
    if p.stuck >= thresholds.stuck_count && p.stuck > 0 {
        found.insert(
            ProblemClass::ResultOverdue,
            format!("{} submission(s) stuck without a result", p.stuck),
        );
    }
    if p.past_delay_budget.count > 0 || approaching_budget > 0 {
        found.insert(
            ProblemClass::DelayBudgetExceeded,
            format!(
                "{} past the delay budget, {} approaching it",
                p.past_delay_budget.count,
                approaching_budget.saturating_sub(p.past_delay_budget.count)
            ),
        );
    }
    // Dead letters and quarantined callbacks: open while the items remain
    // (whenever they happened), in the same words as the verdict.
    found.extend(item_problems(
        &p.by_state,
        p.worker_crashed,
        &p.window,
        &p.quarantined,
        &p.callbacks,
        window,
    ));
    // Open before the breach (work within the lead time) and while work
    // that missed its deadline stays open; resolves when that work
    // succeeds, is cancelled or resolved by hand.
    if let Some(why) = crate::ops::health::deadline_reason(&p.deadlines) {
        found.insert(ProblemClass::BusinessDeadlineAtRisk, why);
    }
    found
}

impl Liaison {
    /// Evaluate alert conditions now: open what started, re-notify what is
    /// due, resolve what cleared. The running engine does this every
    /// [`AlertSettings::interval`] — one engine instance at a time on a
    /// shared store, the holder of the evaluator role (see
    /// [`AlertSettings::evaluator_lease`]); hosts and tests may call it
    /// directly, whoever holds the role.
    ///
    /// Conditions read the partner's circuit and its consecutive failures
    /// as all instances share them, so every instance would come to the
    /// same alerts.
    pub async fn evaluate_alerts(&self) -> Result<()> {
        let settings = self.shared.alert_settings;
        // Due retries first: a reminder waits while its alert's
        // notifications are still being tried.
        self.retry_notifications().await?;
        let report = self.health(settings.window).await?;
        let now = self.store().now();
        // Work that reached the warning share of its delay budget.
        let warning_budgets: BTreeMap<String, Duration> = self
            .shared
            .partners
            .iter()
            .filter_map(|(name, rt)| {
                let budget = rt.config.delay_budget?;
                Some((
                    name.clone(),
                    share_of(budget, rt.config.alert_thresholds.delay_budget_warning),
                ))
            })
            .collect();
        let approaching: BTreeMap<String, u64> = if warning_budgets.is_empty() {
            BTreeMap::new()
        } else {
            self.store()
                .stats(&StatsQuery {
                    now,
                    window: settings.window,
                    partners: warning_budgets.keys().cloned().collect(),
                    delay_budgets: warning_budgets,
                    expected_traffic: BTreeMap::new(),
                    deadline_lead_times: BTreeMap::new(),
                })
                .await?
                .into_iter()
                .map(|s| (s.partner, s.past_delay_budget.count))
                .collect()
        };
        // Parked result deliveries, per partner.
        let mut parked: BTreeMap<String, u64> = BTreeMap::new();
        for d in self
            .store()
            .deliveries(
                &DeliveryFilter::default()
                    .state(DeliveryState::Parked)
                    .limit(crate::store::ListFilter::MAX_LIMIT),
            )
            .await?
        {
            *parked.entry(d.partner).or_default() += 1;
        }
        // Failures counted by every instance since the partner last answered.
        let failures: BTreeMap<String, u32> = self
            .store()
            .circuits()
            .await?
            .into_iter()
            .map(|c| (c.partner, c.consecutive_failures))
            .collect();
        let open = self.store().alerts(true, 10_000).await?;
        let being_notified = self.alerts_being_notified().await?;
        let defaults = AlertThresholds::default();
        for p in &report.partners {
            let rt = self.shared.partners.get(&p.partner);
            let thresholds = rt.map_or(&defaults, |rt| &rt.config.alert_thresholds);
            let active = conditions(
                p,
                thresholds,
                failures.get(&p.partner).copied().unwrap_or(0),
                approaching.get(&p.partner).copied().unwrap_or(0),
                parked.get(&p.partner).copied().unwrap_or(0),
                settings.window,
            );
            for class in ProblemClass::ALL {
                let existing = open
                    .iter()
                    .find(|a| a.partner == p.partner && a.class == class);
                match (active.get(&class), existing) {
                    (Some(details), existing) => {
                        let new = NewAlert {
                            partner: p.partner.clone(),
                            class,
                            owner: self.shared.ownership.owner_for(&p.partner, class).clone(),
                            details: details.clone(),
                            expected: p.paused.is_some(),
                            at: now,
                        };
                        let (alert, opened) = self.store().open_alert(new).await?;
                        let due = existing.is_some_and(|a| {
                            reminder_due(
                                a,
                                being_notified.contains(&a.id),
                                now,
                                settings.renotify_every,
                            )
                        });
                        if opened {
                            self.send_alert(AlertEvent::Opened, &alert).await?;
                        } else if due {
                            self.send_alert(AlertEvent::Renotified, &alert).await?;
                        }
                    }
                    // Outside its windows silence is not checked: an open
                    // "silent partner" alert waits for the next check
                    // instead of resolving because the clock moved.
                    (None, Some(_))
                        if class == ProblemClass::SilentPartner
                            && p.traffic.as_ref().is_some_and(|t| !t.checked) => {}
                    (None, Some(alert)) => {
                        let resolved = self.store().resolve_alert(alert.id, now).await?;
                        self.send_alert(AlertEvent::Resolved, &resolved).await?;
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }

    /// Open alerts (or all, newest first, at most 1,000).
    pub async fn alerts(&self, open_only: bool) -> Result<Vec<Alert>> {
        self.store().alerts(open_only, 1000).await
    }

    /// Acknowledge an open alert: its owner is on it; reminders stop.
    /// Journaled (with no note) like
    /// [`Liaison::acknowledge_alert_with_note`].
    pub async fn acknowledge_alert(&self, id: AlertId, actor: Actor) -> Result<Alert> {
        self.acknowledge_alert_with_note(id, actor, "").await
    }

    /// [`Liaison::acknowledge_alert`] with a note ("on it, partner called"),
    /// journaled in the operations journal ([`Liaison::ops_journal`]) with
    /// `actor` and the note, in the acknowledgement's own transaction.
    ///
    /// Errors, each changing nothing: [`Error::InvalidInput`] naming
    /// `actor` when blank, or `alert` when it is already resolved;
    /// [`Error::NotFound`].
    pub async fn acknowledge_alert_with_note(
        &self,
        id: AlertId,
        actor: Actor,
        note: &str,
    ) -> Result<Alert> {
        if actor.as_str().trim().is_empty() {
            return Err(Error::invalid("actor", "say who acknowledges it"));
        }
        let partner = self.store().alert(id).await?.partner;
        let now = self.store().now();
        let line = JournalLine::new(now, actor.clone(), OpsAction::AcknowledgeAlert, note.trim())
            .partner(partner)
            .target(id.to_string());
        let (alert, _) = self
            .store()
            .acknowledge_alert_journaled(id, actor, now, line)
            .await?;
        Ok(alert)
    }
}

/// How often the alert loop looks for notifications due a retry (at most
/// the evaluation interval).
const RETRY_TICK: Duration = Duration::from_millis(500);

/// Evaluate alerts periodically while this instance holds the evaluator
/// role (taking it when it is free or its holder's lease ran out), and
/// retry due notifications in between, until told to stop; then give the
/// role up so another instance takes over at once.
pub(crate) async fn run_alerts(shared: Arc<Shared>, instance: Arc<str>, stop: CancellationToken) {
    let liaison = Liaison { shared };
    let interval = liaison.shared.alert_settings.interval;
    let tick = RETRY_TICK.min(interval);
    // `None`: an interval too long to represent, never reached.
    let mut next_evaluation = Instant::now().checked_add(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
        if next_evaluation.is_some_and(|at| Instant::now() >= at) {
            next_evaluation = Instant::now().checked_add(interval);
            if evaluator(&liaison, &instance).await
                && let Err(error) = liaison.evaluate_alerts().await
            {
                tracing::warn!(%error, "evaluating alerts failed");
            }
        } else if let Err(error) = liaison.retry_notifications().await {
            tracing::warn!(%error, "retrying alert notifications failed");
        }
    }
    if let Err(error) = liaison
        .store()
        .release_role(RoleLease::ALERT_EVALUATOR, &instance, liaison.shared.now())
        .await
    {
        // Its lease runs out instead.
        tracing::warn!(%error, "giving up the alert evaluator role failed");
    }
}

/// Take or renew the evaluator role; `true` when this instance holds it.
async fn evaluator(liaison: &Liaison, instance: &str) -> bool {
    let lease = liaison.shared.alert_settings.evaluator_lease_or_default();
    match liaison
        .store()
        .claim_role(
            RoleLease::ALERT_EVALUATOR,
            instance,
            liaison.shared.now(),
            lease,
        )
        .await
    {
        Ok(held) => held,
        Err(error) => {
            tracing::warn!(%error, "claiming the alert evaluator role failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_a_budget_saturates() {
        let minute = Duration::from_secs(60);
        assert_eq!(share_of(minute, 0.5), Duration::from_secs(30));
        assert_eq!(share_of(Duration::MAX, 1.0), Duration::MAX);
        assert_eq!(share_of(Duration::MAX, 2.0), Duration::MAX);
        assert_eq!(share_of(minute, -1.0), Duration::ZERO);
        assert_eq!(share_of(minute, f64::NAN), minute);
    }
}
