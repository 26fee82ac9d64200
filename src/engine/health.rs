//! `Liaison::health`: the store's statistics joined with what this process
//! knows live (verification scheme, delay budget) and what all instances
//! share (circuits, pauses).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Liaison;
use crate::callback::Disposition;
use crate::engine::CircuitState;
use crate::error::{Error, Result};
use crate::model::delivery::DeliveryState;
use crate::model::traffic::ExpectedTraffic;
use crate::ops::HealthReport;
use crate::ops::health::{LiveState, partner_health, roll_up};
use crate::ops::questions::{self, FourQuestions};
use crate::store::StatsQuery;
use crate::store::{CallbackFilter, DeliveryFilter, ListFilter};

impl Liaison {
    /// Health of every partner over `window` (and its trend against the
    /// window before), rolled up into one verdict with the reasons that
    /// produced it. Partners this hub has registered are always included;
    /// others that have submissions in the store are too.
    ///
    /// ```
    /// # use liaison::{Liaison, store::SqliteStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// let report = liaison.health(std::time::Duration::from_secs(3600)).await?;
    /// println!("{:?}: {}", report.verdict, report.reasons.join("; "));
    /// # Ok(()) }
    /// ```
    pub async fn health(&self, window: Duration) -> Result<HealthReport> {
        if window.is_zero() {
            return Err(Error::invalid("window", "must be above zero"));
        }
        let now = self.store().now();
        // What the engines recorded; this hub's own partners as configured.
        let mut expected: BTreeMap<String, ExpectedTraffic> =
            self.store().expected_traffic().await?.into_iter().collect();
        for (name, rt) in &self.shared.partners {
            match &rt.config.expected_traffic {
                Some(e) => expected.insert(name.clone(), e.clone()),
                None => expected.remove(name),
            };
        }
        let instances = self.store().instances().await?;
        let delay_budgets: BTreeMap<String, Duration> = self
            .shared
            .partners
            .iter()
            .filter_map(|(name, rt)| Some((name.clone(), rt.config.delay_budget?)))
            .collect();
        let deadline_lead_times: BTreeMap<String, Duration> = self
            .shared
            .partners
            .iter()
            .map(|(name, rt)| (name.clone(), rt.config.deadline_lead_time))
            .collect();
        let mut stats = self
            .store()
            .stats(&StatsQuery {
                now,
                window,
                partners: Vec::new(),
                delay_budgets: delay_budgets.clone(),
                expected_traffic: expected.clone(),
                deadline_lead_times: deadline_lead_times.clone(),
            })
            .await?;
        // Registered partners with nothing stored yet still appear, and so
        // do partners expected to have traffic.
        let mut missing: Vec<String> = self
            .shared
            .partners
            .keys()
            .chain(expected.keys())
            .filter(|name| !stats.iter().any(|s| &s.partner == *name))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            stats.extend(
                self.store()
                    .stats(&StatsQuery {
                        now,
                        window,
                        partners: missing,
                        delay_budgets,
                        expected_traffic: expected.clone(),
                        deadline_lead_times,
                    })
                    .await?,
            );
            stats.sort_by(|a, b| a.partner.cmp(&b.partner));
        }
        let pauses = self.store().pauses(now).await?;
        // The circuit every instance shares, not this process's view of it.
        let circuits: BTreeMap<String, CircuitState> = self
            .store()
            .circuits()
            .await?
            .into_iter()
            .filter(|c| c.state != CircuitState::Closed || c.since.is_some())
            .map(|c| (c.partner, c.state))
            .collect();
        let sink_failures = self.store().sink_failures().await?;
        let partners = stats
            .into_iter()
            .map(|s| {
                let mut live = self
                    .shared
                    .partners
                    .get(&s.partner)
                    .map(|rt| LiveState {
                        circuit: Some(CircuitState::Closed),
                        callback_verification: rt.config.callbacks.as_ref().map(|m| m.scheme()),
                        delay_budget: rt.config.delay_budget,
                        pause: None,
                        expected_traffic: None,
                        undelivered_alerts: Vec::new(),
                    })
                    .unwrap_or_default();
                if let Some(state) = circuits.get(&s.partner) {
                    live.circuit = Some(*state);
                }
                live.pause = pauses.iter().find(|p| p.partner == s.partner).cloned();
                live.expected_traffic = expected.get(&s.partner).cloned();
                live.undelivered_alerts = sink_failures
                    .iter()
                    .filter(|f| f.partner == s.partner)
                    .cloned()
                    .collect();
                partner_health(s, &live, &instances, now, window)
            })
            .collect();
        Ok(roll_up(partners, instances, now, window))
    }

    /// The four questions — is it working today, do we notice when it
    /// breaks, is there an impact, can we recover — answered yes or no with
    /// their reasons, from `report` (of [`Liaison::health`]) and the
    /// unverified callbacks and parked results it does not count. The CLI's
    /// `status` and the ops page both show these answers.
    ///
    /// ```
    /// # use liaison::{Liaison, store::SqliteStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liaison::Result<()> {
    /// # let liaison = Liaison::builder(SqliteStore::open_temporary()?).build()?;
    /// let report = liaison.health(std::time::Duration::from_secs(3600)).await?;
    /// for a in liaison.four_questions(&report).await?.answers() {
    ///     println!("{} {}: {}", a.question.words(), if a.yes { "Yes" } else { "No" }, a.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn four_questions(&self, report: &HealthReport) -> Result<FourQuestions> {
        let cap = ListFilter::MAX_LIMIT;
        // Counted, never shown: read no body.
        let unverified = self
            .store()
            .list_callbacks(
                &CallbackFilter::default()
                    .disposition(Disposition::Received)
                    .limit(cap)
                    .without_body(),
            )
            .await?
            .len();
        // Counted as the alert evaluation counts them: up to the list cap.
        let parked = self
            .store()
            .deliveries(
                &DeliveryFilter::default()
                    .state(DeliveryState::Parked)
                    .limit(cap),
            )
            .await?
            .len();
        let mut counts = questions::counts_from(report);
        counts.unverified_callbacks = unverified as u64;
        counts.parked_results = parked as u64;
        counts.capped = unverified >= cap || parked >= cap;
        Ok(questions::answer(report, counts))
    }
}
