//! How much of a claim a partner's limits grant: decided once, in the
//! claim's transaction, from what the store read under the partner row's
//! lock (its live leases and its rate state). Every claimer of the partner,
//! in any instance or process, takes that lock first, so the grants of two
//! claimers never add up past a limit.
//!
//! The rate is a GCRA (generic cell rate algorithm): the partner row keeps
//! one time, the *theoretical arrival time* (TAT) of the next attempt were
//! the partner used at the steady pace. A claim of `n` at `now` conforms
//! when `max(TAT, now) + n·interval <= now + burst·interval`, and moves the
//! TAT to `max(TAT, now) + n·interval`. Times are microseconds of the
//! store's clock.

use chrono::{DateTime, TimeZone, Utc};

use crate::store::{Limited, PartnerLimits, Rate};

/// What a claim read under the partner row's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LimitState {
    /// The partner's submissions in flight under a lease that has not
    /// ended.
    pub(crate) in_flight: u32,
    /// The rate's theoretical arrival time (µs), if a rate was ever spent.
    pub(crate) rate_tat_us: Option<i64>,
}

/// How many a claim may take, and which limit (if any) held it below what
/// was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) take: usize,
    pub(crate) limited: Option<Limited>,
}

/// The grant for a claim of `asked` at `now`.
pub(crate) fn grant(
    limits: &PartnerLimits,
    state: &LimitState,
    asked: usize,
    now: DateTime<Utc>,
) -> Grant {
    let mut take = asked;
    let mut limited = None;
    if let Some(limit) = limits.concurrency {
        let free = usize::try_from(limit.saturating_sub(state.in_flight)).unwrap_or(usize::MAX);
        if free < take {
            take = free;
            limited = Some(Limited::Concurrency {
                in_flight: state.in_flight,
                limit,
            });
        }
    }
    if take == 0 {
        return Grant { take, limited };
    }
    if let Some(rate) = &limits.rate {
        let now_us = now.timestamp_micros();
        let budget = rate_budget(rate, state.rate_tat_us, now_us);
        if budget < take {
            take = budget;
            // When the next attempt conforms, once this grant is spent.
            let after = spend(rate, state.rate_tat_us, take, now);
            limited = Some(Limited::Rate {
                retry_at: from_micros(next_conforming(rate, Some(after), now_us)),
            });
        }
    }
    Grant { take, limited }
}

/// The rate's TAT after `taken` attempts started at `now`.
pub(crate) fn spend(rate: &Rate, tat_us: Option<i64>, taken: usize, now: DateTime<Utc>) -> i64 {
    let start = tat_us.unwrap_or(i64::MIN).max(now.timestamp_micros());
    let taken = i64::try_from(taken).unwrap_or(i64::MAX);
    start.saturating_add(taken.saturating_mul(rate.interval_us()))
}

/// How many attempts may start at `now_us`.
fn rate_budget(rate: &Rate, tat_us: Option<i64>, now_us: i64) -> usize {
    let start = tat_us.unwrap_or(i64::MIN).max(now_us);
    let horizon = now_us.saturating_add(i64::from(rate.burst()).saturating_mul(rate.interval_us()));
    let room = horizon.saturating_sub(start);
    usize::try_from(room / rate.interval_us()).unwrap_or(0)
}

/// The first time at or after `now_us` when one attempt conforms.
fn next_conforming(rate: &Rate, tat_us: Option<i64>, now_us: i64) -> i64 {
    let start = tat_us.unwrap_or(i64::MIN).max(now_us);
    // max(TAT, t) + interval <= t + burst·interval  <=>  t >= TAT - (burst-1)·interval
    let slack = i64::from(rate.burst().saturating_sub(1)).saturating_mul(rate.interval_us());
    start.saturating_sub(slack).max(now_us)
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at_ms(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn per_second(n: u32) -> PartnerLimits {
        PartnerLimits::none().rate(Rate::per_second(n).unwrap())
    }

    #[test]
    fn no_limits_grant_what_was_asked() {
        let g = grant(&PartnerLimits::none(), &LimitState::default(), 7, at_ms(0));
        assert_eq!(g.take, 7);
        assert_eq!(g.limited, None);
    }

    #[test]
    fn concurrency_grants_the_free_slots_only() {
        let limits = PartnerLimits::none().concurrency(4);
        let state = |in_flight| LimitState {
            in_flight,
            rate_tat_us: None,
        };
        assert_eq!(grant(&limits, &state(0), 3, at_ms(0)).take, 3);
        assert_eq!(grant(&limits, &state(0), 3, at_ms(0)).limited, None);
        let g = grant(&limits, &state(1), 8, at_ms(0));
        assert_eq!(g.take, 3);
        assert_eq!(
            g.limited,
            Some(Limited::Concurrency {
                in_flight: 1,
                limit: 4
            })
        );
        assert_eq!(grant(&limits, &state(4), 8, at_ms(0)).take, 0);
        // More in flight than the limit (another instance's setting was
        // higher): nothing, never an underflow.
        assert_eq!(grant(&limits, &state(9), 8, at_ms(0)).take, 0);
        // A limit of 0 grants nothing.
        let zero = PartnerLimits::none().concurrency(0);
        assert_eq!(grant(&zero, &LimitState::default(), 1, at_ms(0)).take, 0);
    }

    #[test]
    fn a_fresh_rate_allows_one_burst_then_the_steady_pace() {
        let rate = Rate::per_second(20).unwrap().with_burst(20).unwrap();
        let limits = PartnerLimits::none().rate(rate);
        let now = at_ms(1_000_000);
        let g = grant(&limits, &LimitState::default(), 64, now);
        assert_eq!(g.take, 20, "the burst at once");
        assert_eq!(
            g.limited,
            Some(Limited::Rate {
                retry_at: at_ms(1_000_050)
            }),
            "the next one conforms an interval after the burst"
        );
        let tat = spend(&rate, None, 20, now);
        assert_eq!(tat, now.timestamp_micros() + 1_000_000);

        // Right after: nothing, and the next one is due one interval later.
        let state = LimitState {
            in_flight: 0,
            rate_tat_us: Some(tat),
        };
        let g = grant(&limits, &state, 64, now);
        assert_eq!(g.take, 0);
        assert_eq!(
            g.limited,
            Some(Limited::Rate {
                retry_at: at_ms(1_000_050)
            })
        );
        // At that time exactly one conforms.
        let g = grant(&limits, &state, 64, at_ms(1_000_050));
        assert_eq!(g.take, 1);
        // Half a second later, ten.
        assert_eq!(grant(&limits, &state, 64, at_ms(1_000_500)).take, 10);
    }

    #[test]
    fn the_default_burst_paces_strictly() {
        let limits = per_second(20);
        let rate = limits.rate.unwrap();
        let now = at_ms(5_000);
        let g = grant(&limits, &LimitState::default(), 64, now);
        assert_eq!(g.take, 1);
        assert_eq!(
            g.limited,
            Some(Limited::Rate {
                retry_at: at_ms(5_050)
            })
        );
        // After a quiet minute, still one: no catching up.
        let tat = spend(&rate, None, 1, now);
        let state = LimitState {
            in_flight: 0,
            rate_tat_us: Some(tat),
        };
        assert_eq!(grant(&limits, &state, 64, at_ms(65_000)).take, 1);
    }

    #[test]
    fn a_steady_claimer_gets_the_rate_and_no_more() {
        // Claims every 10 ms for 10 s, with stalls: never more than the
        // burst ahead of the pace.
        let limits = per_second(20);
        let rate = limits.rate.unwrap();
        let mut tat = None;
        let mut starts = Vec::new();
        for step in 0..1_000 {
            if (300..340).contains(&step) {
                continue; // a stall of 400 ms: no catching up after it
            }
            let now = at_ms(step * 10);
            let g = grant(
                &limits,
                &LimitState {
                    in_flight: 0,
                    rate_tat_us: tat,
                },
                64,
                now,
            );
            if g.take > 0 {
                tat = Some(spend(&rate, tat, g.take, now));
                starts.extend(std::iter::repeat_n(step * 10, g.take));
            }
        }
        for second in [0, 1, 2, 5, 8] {
            let in_window = starts
                .iter()
                .filter(|t| **t >= second * 1_000 && **t < (second + 1) * 1_000)
                .count();
            assert_eq!(in_window, 20, "second {second}");
        }
        // Every sliding window of one second holds at most the rate (plus
        // one at its edges).
        for from in (0..9_000).step_by(10) {
            let n = starts
                .iter()
                .filter(|t| **t >= from && **t < from + 1_000)
                .count();
            assert!(n <= 21, "{n} starts in [{from}, {from}+1000)");
        }
    }

    #[test]
    fn both_limits_take_the_smaller_grant() {
        let limits = PartnerLimits::none()
            .concurrency(2)
            .rate(Rate::per_second(20).unwrap().with_burst(20).unwrap());
        let g = grant(&limits, &LimitState::default(), 10, at_ms(0));
        assert_eq!(g.take, 2);
        assert!(matches!(g.limited, Some(Limited::Concurrency { .. })));
        // Concurrency full: the rate is not consulted (nothing spent).
        let full = LimitState {
            in_flight: 2,
            rate_tat_us: Some(i64::MAX),
        };
        assert_eq!(grant(&limits, &full, 10, at_ms(0)).take, 0);
    }

    #[test]
    fn extreme_times_saturate() {
        let limits = per_second(1);
        let rate = limits.rate.unwrap();
        let far = LimitState {
            in_flight: 0,
            rate_tat_us: Some(i64::MAX),
        };
        let g = grant(&limits, &far, 1, at_ms(0));
        assert_eq!(g.take, 0);
        assert!(matches!(g.limited, Some(Limited::Rate { .. })));
        assert_eq!(spend(&rate, Some(i64::MAX), 5, at_ms(0)), i64::MAX);
        assert_eq!(spend(&rate, None, usize::MAX, at_ms(0)), i64::MAX);
    }

    #[test]
    fn rates_round_their_pace_down_never_up() {
        let rate = Rate::new(3, Duration::from_secs(1)).unwrap();
        assert_eq!(rate.interval_us(), 333_334);
        assert!(Rate::new(1_000_000, Duration::from_secs(1)).is_ok());
        assert!(Rate::new(1_000_001, Duration::from_secs(1)).is_err());
        assert!(Rate::new(1, Duration::ZERO).is_err());
        assert!(Rate::new(1, Rate::MAX_PERIOD + Duration::from_secs(1)).is_err());
        assert!(Rate::new(u32::MAX, Rate::MAX_PERIOD).is_ok());
        let rate = Rate::per_second(10).unwrap();
        assert!(rate.with_burst(0).is_err());
        assert!(rate.with_burst(11).is_err());
        assert_eq!(rate.with_burst(10).unwrap().burst(), 10);
    }
}
