//! `Liaison::health`: the store's statistics joined with what this process
//! knows live (circuit, verification scheme, delay budget).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;

use super::Liaison;
use crate::error::{Error, Result};
use crate::ops::HealthReport;
use crate::ops::health::{LiveState, partner_health, roll_up};
use crate::store::StatsQuery;

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
        let now = Utc::now();
        let delay_budgets: BTreeMap<String, Duration> = self
            .shared
            .partners
            .iter()
            .filter_map(|(name, rt)| Some((name.clone(), rt.config.delay_budget?)))
            .collect();
        let mut stats = self
            .store()
            .stats(&StatsQuery {
                now,
                window,
                partners: Vec::new(),
                delay_budgets: delay_budgets.clone(),
            })
            .await?;
        // Registered partners with nothing stored yet still appear.
        let missing: Vec<String> = self
            .shared
            .partners
            .keys()
            .filter(|name| !stats.iter().any(|s| &s.partner == *name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            stats.extend(
                self.store()
                    .stats(&StatsQuery {
                        now,
                        window,
                        partners: missing,
                        delay_budgets,
                    })
                    .await?,
            );
            stats.sort_by(|a, b| a.partner.cmp(&b.partner));
        }
        let pauses = self.store().pauses(now).await?;
        let sink_failures = self.store().sink_failures().await?;
        let partners = stats
            .into_iter()
            .map(|s| {
                let mut live = self
                    .shared
                    .partners
                    .get(&s.partner)
                    .map(|rt| LiveState {
                        circuit: Some(rt.circuit_state()),
                        callback_verification: rt.config.callbacks.as_ref().map(|m| m.scheme()),
                        delay_budget: rt.config.delay_budget,
                        pause: None,
                        undelivered_alerts: Vec::new(),
                    })
                    .unwrap_or_default();
                live.pause = pauses.iter().find(|p| p.partner == s.partner).cloned();
                live.undelivered_alerts = sink_failures
                    .iter()
                    .filter(|f| f.partner == s.partner)
                    .cloned()
                    .collect();
                partner_health(s, &live, now)
            })
            .collect();
        Ok(roll_up(partners, now, window))
    }
}
