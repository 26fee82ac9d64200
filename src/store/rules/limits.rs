//! How much of a claim a partner's limits grant: decided once, in the
//! claim's transaction, from what the store read under the partner row's
//! lock (its live leases, its rate state and who waits for a slot). Every
//! claimer of the partner, in any instance or process, takes that lock
//! first, so the grants of two claimers never add up past a limit.
//!
//! The rate is a GCRA (generic cell rate algorithm): the partner row keeps
//! one time, the *theoretical arrival time* (TAT) of the next attempt were
//! the partner used at the steady pace. A claim of `n` at `now` conforms
//! when `max(TAT, now) + n·interval <= now + burst·interval`, and moves the
//! TAT to `max(TAT, now) + n·interval`. Times are microseconds of the
//! store's clock.
//!
//! The concurrency is shared fairly. A claimer that names itself
//! ([`crate::store::ClaimRequest::claimer`]) and is refused a slot it
//! wants is recorded on the partner row as *waiting* (since when, and
//! until when the record lives without being renewed). While others wait,
//! the limit is split between the waiters and the claimer asking: each
//! gets `limit / n`, the longest waiting get one more each until the
//! remainder is used up, and a claimer already holding its share gets
//! nothing. So the instance whose attempt just finished, which always
//! hears of the freed slot first, cannot take it back while another waits
//! (at a concurrency of 1 the slot goes round, longest waiting first).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{Limited, PartnerLimits, Rate};

/// How long a waiter's record lives without being renewed: a claimer that
/// was refused looks again well within it (the dispatcher's longest wait
/// between looks is 50 ms). A waiter that died or stopped asking holds the
/// others back at most this long.
pub(crate) const WAITER_TTL_US: i64 = 1_000_000;

/// What a claim read under the partner row's lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LimitState {
    /// The partner's submissions in flight under a lease that has not
    /// ended.
    pub(crate) in_flight: u32,
    /// The rate's theoretical arrival time (µs), if a rate was ever spent.
    pub(crate) rate_tat_us: Option<i64>,
    /// The claimers waiting for a slot, as stored (see [`Waiters`]).
    pub(crate) waiters: Option<String>,
}

/// The claimer asking, as [`crate::store::ClaimRequest::claimer`] names
/// it: who, and how many of the partner's slots it holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimer<'a> {
    pub(crate) id: &'a str,
    pub(crate) holding: u32,
}

/// One claimer waiting for a slot of the partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    /// The claimer's name.
    #[serde(rename = "c")]
    claimer: String,
    /// Since when it waits (µs of the store's clock): the longest waiting
    /// come first.
    #[serde(rename = "s")]
    since_us: i64,
    /// Until when the record lives unless renewed.
    #[serde(rename = "u")]
    until_us: i64,
}

/// The claimers waiting for the partner's slots, kept on its row as a
/// short JSON list (one entry per waiting claimer; entries that ran out
/// are dropped at the next write).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Waiters(Vec<Waiter>);

impl Waiters {
    /// The live waiters of a stored list. A list that does not parse (it
    /// is only ever written here) counts as nobody waiting: fairness
    /// degrades, the limits still hold.
    fn read(stored: Option<&str>, now_us: i64) -> Waiters {
        let mut all: Vec<Waiter> = stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        all.retain(|w| w.until_us > now_us);
        Waiters::sorted(all)
    }

    /// Longest waiting first (ties by name, so every claimer sees one
    /// order).
    fn sorted(mut all: Vec<Waiter>) -> Waiters {
        all.sort_by(|a, b| (a.since_us, &a.claimer).cmp(&(b.since_us, &b.claimer)));
        Waiters(all)
    }

    fn mine(&self, id: &str) -> Option<&Waiter> {
        self.0.iter().find(|w| w.claimer == id)
    }

    fn stored(&self) -> Option<String> {
        if self.0.is_empty() {
            None
        } else {
            serde_json::to_string(&self.0).ok()
        }
    }
}

/// How many a claim may take, and which limit (if any) held it below what
/// was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    pub(crate) take: usize,
    pub(crate) limited: Option<Limited>,
    /// The concurrency (the free slots or the claimer's fair share) cut
    /// the claim: the claimer still wants slots.
    pub(crate) wants_slots: bool,
}

/// The grant for a claim of `asked` at `now` by `claimer` (`None`: a
/// claimer that does not name itself, treated as holding nothing and
/// never recorded as waiting).
pub(crate) fn grant(
    limits: &PartnerLimits,
    state: &LimitState,
    asked: usize,
    now: DateTime<Utc>,
    claimer: Option<Claimer<'_>>,
) -> Grant {
    let now_us = now.timestamp_micros();
    let mut take = asked;
    let mut limited = None;
    let mut wants_slots = false;
    if let Some(limit) = limits.concurrency {
        let free = limit.saturating_sub(state.in_flight);
        let waiters = Waiters::read(state.waiters.as_deref(), now_us);
        let (allowed, share) = fair_share(limit, free, &waiters, claimer);
        let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
        if allowed < take {
            take = allowed;
            wants_slots = true;
            limited = Some(match share {
                Some((share, waiting)) if free > 0 => Limited::FairShare {
                    holding: claimer.map_or(0, |c| c.holding),
                    share,
                    waiting,
                },
                _ => Limited::Concurrency {
                    in_flight: state.in_flight,
                    limit,
                },
            });
        }
    }
    if take == 0 {
        return Grant {
            take,
            limited,
            wants_slots,
        };
    }
    if let Some(rate) = &limits.rate {
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
    Grant {
        take,
        limited,
        wants_slots,
    }
}

/// The slots a claimer may take of `free`: all of them while nobody else
/// waits; otherwise what is left of its share, and the share with the
/// number of others waiting.
fn fair_share(
    limit: u32,
    free: u32,
    waiters: &Waiters,
    claimer: Option<Claimer<'_>>,
) -> (u32, Option<(u32, u32)>) {
    let id = claimer.map(|c| c.id);
    let others = waiters
        .0
        .iter()
        .filter(|w| Some(w.claimer.as_str()) != id)
        .count();
    if others == 0 {
        return (free, None);
    }
    let others = u32::try_from(others).unwrap_or(u32::MAX);
    let n = others.saturating_add(1);
    // The asking claimer's place: among the waiters if it is one (they are
    // sorted, longest waiting first), else after all of them.
    let place = id
        .and_then(|id| waiters.0.iter().position(|w| w.claimer == id))
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(others);
    let share = limit / n + u32::from(place < limit % n);
    let holding = claimer.map_or(0, |c| c.holding);
    (
        free.min(share.saturating_sub(holding)),
        Some((share, others)),
    )
}

/// The partner row's waiter list after a claim by `claimer` that was
/// granted `grant` and took `took`: `None` when it stays as stored,
/// `Some(None)` when nobody waits any more.
///
/// A claimer the concurrency cut (it got fewer than it asked for, though
/// more was due) waits: refused outright it keeps its place, served in
/// part it goes to the back. A claimer that got what it asked, or all
/// that was due, waits no longer.
pub(crate) fn waiters_after(
    state: &LimitState,
    claimer: Option<Claimer<'_>>,
    grant: &Grant,
    took: usize,
    now: DateTime<Utc>,
) -> Option<Option<String>> {
    let claimer = claimer?;
    let now_us = now.timestamp_micros();
    let stored = Waiters::read(state.waiters.as_deref(), now_us);
    let mine = stored.mine(claimer.id).cloned();
    let mut next = stored;
    next.0.retain(|w| w.claimer != claimer.id);
    // Fewer than granted: nothing more was due, so no slot is wanted.
    if grant.wants_slots && took == grant.take {
        let since_us = match (&mine, took) {
            (Some(w), 0) => w.since_us,
            _ => now_us,
        };
        let until_us = now_us.saturating_add(WAITER_TTL_US);
        // A fresh record is not renewed at every look: half its life left
        // is enough.
        let fresh = mine
            .as_ref()
            .is_some_and(|w| w.since_us == since_us && w.until_us - now_us > WAITER_TTL_US / 2);
        next.0.push(match (fresh, mine) {
            (true, Some(w)) => w,
            _ => Waiter {
                claimer: claimer.id.to_owned(),
                since_us,
                until_us,
            },
        });
    }
    let next = Waiters::sorted(next.0);
    // Unchanged only when byte for byte what is stored (a list that did
    // not parse, or held records that ran out, is rewritten).
    let next = next.stored();
    if next == state.waiters {
        None
    } else {
        Some(next)
    }
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
        let g = grant(
            &PartnerLimits::none(),
            &LimitState::default(),
            7,
            at_ms(0),
            None,
        );
        assert_eq!(g.take, 7);
        assert_eq!(g.limited, None);
    }

    #[test]
    fn concurrency_grants_the_free_slots_only() {
        let limits = PartnerLimits::none().concurrency(4);
        let state = |in_flight| LimitState {
            in_flight,
            rate_tat_us: None,
            ..LimitState::default()
        };
        assert_eq!(grant(&limits, &state(0), 3, at_ms(0), None).take, 3);
        assert_eq!(grant(&limits, &state(0), 3, at_ms(0), None).limited, None);
        let g = grant(&limits, &state(1), 8, at_ms(0), None);
        assert_eq!(g.take, 3);
        assert_eq!(
            g.limited,
            Some(Limited::Concurrency {
                in_flight: 1,
                limit: 4
            })
        );
        assert_eq!(grant(&limits, &state(4), 8, at_ms(0), None).take, 0);
        // More in flight than the limit (another instance's setting was
        // higher): nothing, never an underflow.
        assert_eq!(grant(&limits, &state(9), 8, at_ms(0), None).take, 0);
        // A limit of 0 grants nothing.
        let zero = PartnerLimits::none().concurrency(0);
        assert_eq!(
            grant(&zero, &LimitState::default(), 1, at_ms(0), None).take,
            0
        );
    }

    #[test]
    fn a_fresh_rate_allows_one_burst_then_the_steady_pace() {
        let rate = Rate::per_second(20).unwrap().with_burst(20).unwrap();
        let limits = PartnerLimits::none().rate(rate);
        let now = at_ms(1_000_000);
        let g = grant(&limits, &LimitState::default(), 64, now, None);
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
            ..LimitState::default()
        };
        let g = grant(&limits, &state, 64, now, None);
        assert_eq!(g.take, 0);
        assert_eq!(
            g.limited,
            Some(Limited::Rate {
                retry_at: at_ms(1_000_050)
            })
        );
        // At that time exactly one conforms.
        let g = grant(&limits, &state, 64, at_ms(1_000_050), None);
        assert_eq!(g.take, 1);
        // Half a second later, ten.
        assert_eq!(grant(&limits, &state, 64, at_ms(1_000_500), None).take, 10);
    }

    #[test]
    fn the_default_burst_paces_strictly() {
        let limits = per_second(20);
        let rate = limits.rate.unwrap();
        let now = at_ms(5_000);
        let g = grant(&limits, &LimitState::default(), 64, now, None);
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
            ..LimitState::default()
        };
        assert_eq!(grant(&limits, &state, 64, at_ms(65_000), None).take, 1);
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
                    ..LimitState::default()
                },
                64,
                now,
                None,
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
        let g = grant(&limits, &LimitState::default(), 10, at_ms(0), None);
        assert_eq!(g.take, 2);
        assert!(matches!(g.limited, Some(Limited::Concurrency { .. })));
        // Concurrency full: the rate is not consulted (nothing spent).
        let full = LimitState {
            in_flight: 2,
            rate_tat_us: Some(i64::MAX),
            ..LimitState::default()
        };
        assert_eq!(grant(&limits, &full, 10, at_ms(0), None).take, 0);
    }

    #[test]
    fn extreme_times_saturate() {
        let limits = per_second(1);
        let rate = limits.rate.unwrap();
        let far = LimitState {
            in_flight: 0,
            rate_tat_us: Some(i64::MAX),
            ..LimitState::default()
        };
        let g = grant(&limits, &far, 1, at_ms(0), None);
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

    /// A store of one partner's slots, as the claim transaction sees it:
    /// claimers finish attempts, claim with the fairness protocol, and the
    /// waiter list is written back as a store would.
    struct Slots {
        limits: PartnerLimits,
        waiters: Option<String>,
        holding: Vec<u32>,
    }

    impl Slots {
        fn new(limit: u32, claimers: usize) -> Self {
            Slots {
                limits: PartnerLimits::none().concurrency(limit),
                waiters: None,
                holding: vec![0; claimers],
            }
        }

        /// Claimer `who` asks for `asked` at `now_ms`; there is always more
        /// due than asked. Returns how many it got.
        fn claim(&mut self, who: usize, asked: usize, now_ms: i64) -> usize {
            let id = format!("instance-{who}");
            let claimer = Some(Claimer {
                id: &id,
                holding: self.holding[who],
            });
            let state = LimitState {
                in_flight: self.holding.iter().sum(),
                rate_tat_us: None,
                waiters: self.waiters.clone(),
            };
            let g = grant(&self.limits, &state, asked, at_ms(now_ms), claimer);
            if let Some(next) = waiters_after(&state, claimer, &g, g.take, at_ms(now_ms)) {
                self.waiters = next;
            }
            self.holding[who] += u32::try_from(g.take).unwrap();
            g.take
        }
    }

    #[test]
    fn at_a_concurrency_of_one_a_freed_slot_goes_to_the_longest_waiting() {
        let mut slots = Slots::new(1, 3);
        assert_eq!(slots.claim(0, 1, 0), 1, "nobody waits: the slot is free");
        assert_eq!(slots.claim(1, 1, 1), 0);
        assert_eq!(slots.claim(2, 1, 2), 0);
        // 0 finishes and, hearing of it first, asks at once: 1 waits longest.
        slots.holding[0] = 0;
        assert_eq!(slots.claim(0, 1, 3), 0, "the holder does not take it back");
        assert_eq!(slots.claim(2, 1, 4), 0, "2 waits behind 1");
        assert_eq!(slots.claim(1, 1, 5), 1);
        // Round and round: 2, then 0, then 1 again.
        let mut order = vec![1];
        for step in 0..30 {
            let now = 10 + step * 10;
            let holder = slots.holding.iter().position(|h| *h == 1).unwrap();
            slots.holding[holder] = 0;
            // Everyone asks, the one that just finished first.
            for who in [holder, (holder + 1) % 3, (holder + 2) % 3] {
                if slots.claim(who, 1, now) == 1 {
                    order.push(who);
                }
            }
        }
        let counts: Vec<usize> = (0..3)
            .map(|w| order.iter().filter(|o| **o == w).count())
            .collect();
        assert!(
            counts.iter().all(|c| *c >= 9),
            "every claimer gets its turn: {counts:?} from {order:?}"
        );
    }

    #[test]
    fn a_claimer_holding_its_share_gets_no_more_while_others_wait() {
        let mut slots = Slots::new(4, 3);
        assert_eq!(slots.claim(0, 4, 0), 4, "alone: every slot");
        assert_eq!(slots.claim(1, 4, 1), 0);
        assert_eq!(slots.claim(2, 4, 2), 0);
        // Two of 0's attempts finish; 0 holds 2, over its share of 4/3.
        slots.holding[0] = 2;
        let state = LimitState {
            in_flight: 2,
            rate_tat_us: None,
            waiters: slots.waiters.clone(),
        };
        let g = grant(
            &slots.limits,
            &state,
            2,
            at_ms(3),
            Some(Claimer {
                id: "instance-0",
                holding: 2,
            }),
        );
        assert_eq!(g.take, 0);
        assert_eq!(
            g.limited,
            Some(Limited::FairShare {
                holding: 2,
                share: 1,
                waiting: 2
            })
        );
        // The waiters take the two: 1 waited longest and gets the extra
        // slot of 4 = 3·1 + 1, but only 2 are free.
        assert_eq!(slots.claim(1, 4, 4), 2);
        assert_eq!(slots.claim(2, 4, 5), 0, "all four in flight");
        // Attempts finish over time; everyone asks: it settles at a share
        // each, the extra slot going round.
        for step in 0..200 {
            let now = 10 + step;
            let who = usize::try_from(step % 3).unwrap();
            if slots.holding[who] > 0 {
                slots.holding[who] -= 1;
            }
            for asker in 0..3 {
                slots.claim(asker, 4, now);
            }
            assert!(slots.holding.iter().sum::<u32>() <= 4);
        }
        assert!(
            slots.holding.iter().all(|h| *h >= 1),
            "every claimer holds a share: {:?}",
            slots.holding
        );
    }

    #[test]
    fn a_waiter_that_stops_asking_holds_nobody_back_past_its_record() {
        let mut slots = Slots::new(1, 2);
        assert_eq!(slots.claim(0, 1, 0), 1);
        assert_eq!(slots.claim(1, 1, 1), 0, "1 waits");
        slots.holding[0] = 0;
        // 1 died: 0 is refused while 1's record lives...
        assert_eq!(slots.claim(0, 1, 500), 0);
        // ...and served once it ran out.
        let after = 1 + WAITER_TTL_US / 1_000 + 1;
        assert_eq!(slots.claim(0, 1, after), 1);
        assert_eq!(slots.waiters, None, "nobody waits any more");
    }

    #[test]
    fn a_claimer_served_in_full_or_finding_nothing_due_waits_no_longer() {
        let mut slots = Slots::new(2, 2);
        assert_eq!(slots.claim(0, 2, 0), 2);
        assert_eq!(slots.claim(1, 1, 1), 0);
        assert!(slots.waiters.as_deref().unwrap().contains("instance-1"));
        slots.holding[0] = 1;
        assert_eq!(slots.claim(1, 1, 2), 1);
        assert_eq!(slots.waiters, None, "served in full");

        // Granted a slot, but nothing was due: not waiting either.
        slots.holding = vec![2, 0];
        assert_eq!(slots.claim(1, 1, 3), 0);
        slots.holding[0] = 1;
        let id = "instance-1";
        let claimer = Some(Claimer { id, holding: 0 });
        let state = LimitState {
            in_flight: 1,
            rate_tat_us: None,
            waiters: slots.waiters.clone(),
        };
        let g = grant(&slots.limits, &state, 1, at_ms(4), claimer);
        assert_eq!(g.take, 1);
        assert_eq!(waiters_after(&state, claimer, &g, 0, at_ms(4)), Some(None));
    }

    #[test]
    fn a_claimer_without_a_name_never_waits_and_counts_as_holding_nothing() {
        let mut slots = Slots::new(1, 2);
        assert_eq!(slots.claim(0, 1, 0), 1);
        assert_eq!(slots.claim(1, 1, 1), 0, "1 waits");
        slots.holding[0] = 0;
        let state = LimitState {
            in_flight: 0,
            rate_tat_us: None,
            waiters: slots.waiters.clone(),
        };
        let g = grant(&slots.limits, &state, 1, at_ms(2), None);
        assert_eq!(g.take, 0, "it queues behind the waiter");
        assert_eq!(waiters_after(&state, None, &g, 0, at_ms(2)), None);
    }

    #[test]
    fn a_stored_list_that_does_not_parse_counts_as_nobody_waiting() {
        for stored in ["", "not json", "{\"c\":1}", "[{\"c\":\"x\"}]", "[1,2,3]"] {
            let state = LimitState {
                in_flight: 0,
                rate_tat_us: None,
                waiters: Some(stored.to_owned()),
            };
            let limits = PartnerLimits::none().concurrency(1);
            let claimer = Some(Claimer {
                id: "a",
                holding: 0,
            });
            let g = grant(&limits, &state, 1, at_ms(0), claimer);
            assert_eq!(g.take, 1, "{stored}");
            // And the next write replaces it.
            assert_eq!(
                waiters_after(&state, claimer, &g, 1, at_ms(0)),
                Some(None),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_waiting_record_is_renewed_only_past_half_its_life() {
        let mut slots = Slots::new(1, 2);
        assert_eq!(slots.claim(0, 1, 0), 1);
        assert_eq!(slots.claim(1, 1, 10), 0);
        let first = slots.waiters.clone();
        let state = LimitState {
            in_flight: 1,
            rate_tat_us: None,
            waiters: first.clone(),
        };
        let claimer = Some(Claimer {
            id: "instance-1",
            holding: 0,
        });
        let g = grant(&slots.limits, &state, 1, at_ms(60), claimer);
        assert_eq!(waiters_after(&state, claimer, &g, 0, at_ms(60)), None);
        let late = at_ms(10 + WAITER_TTL_US / 1_000 * 3 / 4);
        let g = grant(&slots.limits, &state, 1, late, claimer);
        let renewed = waiters_after(&state, claimer, &g, 0, late)
            .unwrap()
            .unwrap();
        assert_ne!(Some(renewed.clone()), first);
        assert!(
            renewed.contains("\"s\":10000"),
            "its place is kept: {renewed}"
        );
    }
}
