//! Retention: purge what is past its period, prune the idempotency ledger.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Liaison, Shared};
use crate::error::Result;
use crate::store::{PurgeCutoffs, PurgeReport};

/// `retention` before `now`; retention "for ever" (`Duration::MAX`) purges
/// nothing, not a panic.
fn cutoff(now: DateTime<Utc>, retention: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Liaison {
    /// Run retention now: remove payloads, raw callback bodies and
    /// personal data (correlation values, partner references, error texts,
    /// progress notes, callback headers and errors; see docs/operations.md)
    /// of work that finished more than
    /// [`super::EngineSettings::payload_retention`] ago, bodies of rejected callbacks older than
    /// [`super::EngineSettings::rejected_body_retention`], rows of callbacks
    /// to names that are no configured partner older than
    /// `payload_retention` and rows of callbacks settled for good older than
    /// [`super::EngineSettings::callback_row_retention`] (in bounded
    /// batches until none is left), and prune the
    /// idempotency ledger. The running engine does this every
    /// `retention_interval`.
    pub async fn run_retention(&self) -> Result<PurgeReport> {
        let now = self.store().now();
        let settings = &self.shared.settings;
        let cutoffs = PurgeCutoffs::new(
            cutoff(now, settings.payload_retention),
            cutoff(now, settings.rejected_body_retention),
        )
        .rows(
            cutoff(now, settings.callback_row_retention),
            cutoff(now, settings.payload_retention),
            self.shared.partners.keys().cloned(),
        );
        let mut total = PurgeReport::default();
        loop {
            let pass = self.store().purge(cutoffs.clone()).await?;
            total.payloads += pass.payloads;
            total.callback_bodies += pass.callback_bodies;
            total.settled_callbacks += pass.settled_callbacks;
            total.unknown_callbacks += pass.unknown_callbacks;
            total.personal_data += pass.personal_data;
            total.callback_personal_data += pass.callback_personal_data;
            if !pass.more {
                break;
            }
        }
        let pruned = self.store().prune_ledger(now).await?;
        let callback_rows = total.settled_callbacks + total.unknown_callbacks;
        let personal = total.personal_data + total.callback_personal_data;
        if total.payloads + total.callback_bodies + callback_rows + personal + pruned > 0 {
            tracing::info!(
                payloads = total.payloads,
                personal_data = total.personal_data,
                callback_personal_data = total.callback_personal_data,
                callback_bodies = total.callback_bodies,
                settled_callbacks = total.settled_callbacks,
                unknown_callbacks = total.unknown_callbacks,
                ledger_keys = pruned,
                "retention removed expired data"
            );
        }
        Ok(total)
    }
}

pub(crate) async fn run_retention(shared: Arc<Shared>, stop: CancellationToken) {
    let liaison = Liaison { shared };
    loop {
        if let Err(error) = liaison.run_retention().await {
            tracing::warn!(%error, "retention failed");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(liaison.shared.settings.retention_interval) => {}
        }
    }
}
