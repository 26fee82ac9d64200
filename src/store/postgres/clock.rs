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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::DbClock;
    use crate::store::postgres::test_url as url;

    /// An outage during a measurement (a heartbeat's) keeps the offset last
    /// measured: decisions stay on the database's clock as last known, not
    /// on the host's own.
    #[tokio::test]
    async fn a_failed_measurement_keeps_the_last_offset() {
        let Some(url) = url() else { return };
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let connection = tokio::spawn(connection);
        let clock = DbClock::default();
        // Same host: the server's clock is ours to within the round trip.
        let offset = clock.measure(&client).await.expect("measure");
        assert!(offset.abs() < 1_000_000, "offset {offset} µs on one host");
        assert_eq!(clock.offset_us.load(Ordering::Relaxed), offset);

        // As if the server's clock ran 5 s ahead when last measured.
        clock.offset_us.store(5_000_000, Ordering::Relaxed);
        connection.abort();
        let _ = connection.await;
        let error = clock
            .measure(&client)
            .await
            .expect_err("the connection is gone");
        assert!(error.is_retryable(), "an outage is retryable: {error}");
        assert_eq!(clock.offset_us.load(Ordering::Relaxed), 5_000_000);
        let ahead = clock.now() - crate::clock::now();
        assert!(
            (4_900..=5_100).contains(&ahead.num_milliseconds()),
            "now() still applies the last offset: {ahead}"
        );
    }
}
