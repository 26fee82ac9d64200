//! The host's clock, read in one place.
//!
//! Stores and the engine read the time here (a store may correct it: see
//! [`crate::store::OutboxStore::now`]). With the testing-only feature
//! `failpoints`, the failpoint `liaison::clock::skew_ms` configured as
//! `return(<milliseconds>)` moves this process's clock by that much, so a
//! test can run an instance whose clock is wrong. Without the feature it is
//! compiled out and this is `Utc::now()`.

use chrono::{DateTime, Utc};

/// Now, by this host's clock.
pub(crate) fn now() -> DateTime<Utc> {
    let now = Utc::now();
    #[cfg(feature = "failpoints")]
    let now = now + skew();
    now
}

/// The skew a test configured (testing only).
#[cfg(feature = "failpoints")]
fn skew() -> chrono::Duration {
    fail::fail_point!("liaison::clock::skew_ms", |ms: Option<String>| {
        ms.and_then(|ms| ms.trim().parse::<i64>().ok())
            .map(chrono::Duration::milliseconds)
            .unwrap_or_default()
    });
    chrono::Duration::zero()
}
