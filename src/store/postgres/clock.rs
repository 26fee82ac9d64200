//! The database server's clock, as this host sees it: the store decides by
//! `host clock + offset`, the offset measured against `clock_timestamp()`
//! when the store connects and again with every engine heartbeat. So hosts
//! whose clocks disagree still agree on leases, due times and deadlines, to
//! within half a round trip to the server plus the drift between two
//! measurements.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

use super::db::pg_err;
use crate::error::Result;

/// Round trips per measurement; the shortest is kept.
const SAMPLES: usize = 3;

/// The offset from this host's clock to the server's.
#[derive(Debug, Default)]
pub(super) struct DbClock {
    offset_us: AtomicI64,
}

impl DbClock {
    /// Now, by the server's clock.
    pub(super) fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::microseconds(self.offset_us.load(Ordering::Relaxed));
        let local = crate::clock::now();
        local.checked_add_signed(offset).unwrap_or(local)
    }

    /// Measure the offset again on `client`; the measured offset (µs).
    pub(super) async fn measure(&self, client: &tokio_postgres::Client) -> Result<i64> {
        let mut best: Option<(i64, i64)> = None; // (round trip, offset)
        for _ in 0..SAMPLES {
            let before = crate::clock::now();
            let server: i64 = client
                .query_one(
                    "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT",
                    &[],
                )
                .await
                .and_then(|row| row.try_get(0))
                .map_err(pg_err("read the database's clock"))?;
            let after = crate::clock::now();
            let (before, after) = (before.timestamp_micros(), after.timestamp_micros());
            let round_trip = after.saturating_sub(before);
            let offset = server.saturating_sub(before.saturating_add(round_trip / 2));
            if best.is_none_or(|(rt, _)| round_trip < rt) {
                best = Some((round_trip, offset));
            }
        }
        let offset = best.map_or(0, |(_, offset)| offset);
        self.offset_us.store(offset, Ordering::Relaxed);
        Ok(offset)
    }
}
