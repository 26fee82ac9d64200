//! The heartbeat: a running engine records itself in the store and beats,
//! so that health computed anywhere can tell a partner whose engines all
//! died from one that is merely quiet. It also records each partner's
//! expected traffic, and prunes instances long gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::store::Instance;

/// Instances are removed this long after their last beat (their partners
/// keep the time of that beat).
pub(crate) const INSTANCE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Beat every interval until `stop`; the first beat goes out at once.
pub(crate) async fn run_heartbeat(
    shared: Arc<Shared>,
    mut instance: Instance,
    stop: CancellationToken,
) {
    let interval = instance.beat_interval;
    let mut expectations_recorded = false;
    let mut pruned_at: Option<Instant> = None;
    loop {
        if !expectations_recorded {
            expectations_recorded = record_expectations(&shared).await;
        }
        instance.last_beat_at = shared.now();
        if let Err(error) = shared.store.beat(&instance).await {
            tracing::warn!(%error, instance = %instance.id, "could not record this engine's beat");
        }
        if pruned_at.is_none_or(|at| at.elapsed() >= shared.settings.retention_interval) {
            let before = shared.now()
                - chrono::Duration::from_std(INSTANCE_RETENTION).unwrap_or(chrono::Duration::MAX);
            match shared.store.prune_instances(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "pruned engine instances gone for a day"),
                Err(error) => tracing::warn!(%error, "could not prune engine instances"),
            }
            pruned_at = Some(Instant::now());
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Record every partner's expected traffic (or its absence) in the store;
/// `false` when a write failed (tried again on the next beat).
async fn record_expectations(shared: &Shared) -> bool {
    let mut all = true;
    for (name, rt) in &shared.partners {
        if let Err(error) = shared
            .store
            .set_expected_traffic(name, rt.config.expected_traffic.as_ref())
            .await
        {
            tracing::warn!(partner = %name, %error, "could not record the expected traffic");
            all = false;
        }
    }
    all
}
