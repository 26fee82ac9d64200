//! Acting on the store's wake-up hints ([`crate::store::OutboxStore::wakeups`]):
//! work made due by another process wakes this process's dispatchers without
//! waiting for their next poll.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::store::{Wake, Wakeups};

/// Forward hints to the dispatchers until told to stop or the store stops
/// sending them. Hints for partners this instance does not serve are
/// ignored.
pub(crate) async fn run_wakeups(
    shared: Arc<Shared>,
    mut wakeups: Wakeups,
    stop: CancellationToken,
) {
    loop {
        let wake = tokio::select! {
            _ = stop.cancelled() => return,
            wake = wakeups.next() => wake,
        };
        match wake {
            Some(Wake::Partner(name)) => {
                if let Some(partner) = shared.partners.get(&name) {
                    if partner.paused(shared.now()).is_some() {
                        // Perhaps resumed by another instance: look now
                        // rather than at the reaper's next refresh.
                        super::dispatcher::refresh_pauses(&shared).await;
                    }
                    partner.wake.notify_one();
                }
            }
            Some(Wake::All) => {
                for partner in shared.partners.values() {
                    partner.wake.notify_one();
                }
            }
            None => {
                tracing::debug!("the store stopped sending wake-ups; polling only");
                return;
            }
        }
    }
}
