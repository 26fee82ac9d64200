//! The last 24 hours of one partner as an inline SVG: what ended each hour
//! (stacked bars) and the unfinished work at each hour's end (a line).
//!
//! Computed from the store's grouped counts ([`OutboxStore::hourly_counts`]):
//! the submissions created in the 24 hours, and those created before that
//! and still unfinished. Work created earlier that ended within the 24 hours
//! is not in the bars.

use chrono::{DateTime, Duration as Span, DurationRound, Utc};

use maud::{Markup, html};

use super::html::{CELL_CHARS, inert};
use crate::error::Result;
use crate::model::submission::SubmissionState;
use crate::store::{HourlyCount, HourlyQuery, OutboxStore};

const HOURS: usize = 24;

/// One hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Bucket {
    pub(super) succeeded: u32,
    pub(super) failed: u32,
    pub(super) dead_lettered: u32,
    /// Unfinished at the end of the hour (or now, for the current hour).
    pub(super) backlog: u32,
}

impl Bucket {
    fn ended(&self) -> u32 {
        self.succeeded + self.failed + self.dead_lettered
    }
}

/// 24 hourly buckets, the last one the hour under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Day {
    pub(super) start: DateTime<Utc>,
    pub(super) buckets: [Bucket; HOURS],
}

/// Count and bucket one partner's last 24 hours.
pub(super) async fn load(
    store: &dyn OutboxStore,
    partner: &str,
    now: DateTime<Utc>,
) -> Result<Day> {
    let start = window_start(now);
    let counts = store
        .hourly_counts(&HourlyQuery::new(partner, start, HOURS as u32, now))
        .await?;
    Ok(Day {
        start,
        buckets: bucketize(&counts),
    })
}

/// The start of the hour 23 hours before the current one.
pub(super) fn window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let hour = now.duration_trunc(Span::hours(1)).unwrap_or(now);
    hour - Span::hours(HOURS as i64 - 1)
}

/// Count outcomes by the hour they ended and the unfinished work at each
/// hour's end, from counts grouped by the hours of [`window_start`] (as of
/// now, the current hour the last). Those created before the window are
/// unfinished now, so they were unfinished all along.
pub(super) fn bucketize(counts: &[HourlyCount]) -> [Bucket; HOURS] {
    let mut buckets = [Bucket::default(); HOURS];
    let saturate = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    for (i, bucket) in buckets.iter_mut().enumerate() {
        let hour = i as i64;
        let last = i == HOURS - 1;
        let mut backlog = 0u32;
        for c in counts {
            let n = saturate(c.count);
            if c.created < 0 {
                backlog = backlog.saturating_add(n);
                continue;
            }
            if c.ended == Some(hour) {
                let outcome = match c.state {
                    SubmissionState::Succeeded => Some(&mut bucket.succeeded),
                    SubmissionState::Failed => Some(&mut bucket.failed),
                    SubmissionState::DeadLettered => Some(&mut bucket.dead_lettered),
                    _ => None,
                };
                if let Some(outcome) = outcome {
                    *outcome = outcome.saturating_add(n);
                }
            }
            // Unfinished at the hour's end (now, for the current hour): created
            // before it and not ended before it.
            let open_then = if last {
                c.created < HOURS as i64 && !c.ended_by_now
            } else {
                c.created <= hour && c.ended.is_none_or(|e| e > hour)
            };
            if open_then {
                backlog = backlog.saturating_add(n);
            }
        }
        bucket.backlog = backlog;
    }
    buckets
}

const WIDTH: f64 = 360.0;
const LEFT: f64 = 34.0;
const TOP: f64 = 12.0;
const PLOT_W: f64 = WIDTH - LEFT - 8.0;
const PLOT_H: f64 = 110.0;
const HEIGHT: f64 = TOP + PLOT_H + 22.0;
const GREEN: &str = "#2e7d32";
const ORANGE: &str = "#ef6c00";
const RED: &str = "#c62828";
const BLUE: &str = "#1565c0";

/// The chart, with a legend under it.
pub(super) fn render(day: &Day, partner: &str) -> Markup {
    let max = day
        .buckets
        .iter()
        .map(|b| b.ended().max(b.backlog))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = PLOT_H / f64::from(max);
    let slot = PLOT_W / HOURS as f64;
    let base = TOP + PLOT_H;
    let bar = slot - 2.0;
    let line: Vec<String> = day
        .buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let x = LEFT + slot * i as f64 + 1.0;
            format!(
                "{:.1},{:.1}",
                x + bar / 2.0,
                base - f64::from(b.backlog) * scale
            )
        })
        .collect();
    let labels = [
        (0, day.start.format("%H:00").to_string()),
        (
            12,
            (day.start + Span::hours(12)).format("%H:00").to_string(),
        ),
        (HOURS - 1, "now".to_owned()),
    ];
    let px = |v: f64| format!("{v:.1}");
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT)
            role="img" xmlns="http://www.w3.org/2000/svg" {
            title { "The last 24 hours at " (inert(partner, CELL_CHARS).0) }
            line x1=(LEFT) y1=(base) x2=(LEFT + PLOT_W) y2=(base) stroke="#999" {}
            text x=(LEFT - 4.0) y=(TOP + 8.0) font-size="10" text-anchor="end" { (max) }
            text x=(LEFT - 4.0) y=(base) font-size="10" text-anchor="end" { "0" }
            @for (i, b) in day.buckets.iter().enumerate() {
                @let x = LEFT + slot * i as f64 + 1.0;
                @let from = day.start + Span::hours(i as i64);
                g {
                    title {
                        (from.format("%H:00")) ": " (b.succeeded) " succeeded, " (b.failed)
                        " failed, " (b.dead_lettered) " dead-lettered; " (b.backlog) " unfinished"
                    }
                    @for (top, h, color) in stack(b, base, scale) {
                        rect x=(px(x)) y=(px(top)) width=(px(bar)) height=(px(h)) fill=(color) {}
                    }
                    // An invisible full-height target so the hour's title shows on hover.
                    rect x=(px(x)) y=(TOP) width=(px(bar)) height=(PLOT_H) fill="transparent" {}
                }
            }
            polyline class="backlog" points=(line.join(" ")) fill="none" stroke=(BLUE) stroke-width="2" {}
            @for (i, label) in labels {
                text x=(px(LEFT + slot * i as f64 + slot / 2.0)) y=(base + 14.0) font-size="10"
                    text-anchor="middle" { (label) }
            }
        }
        p.legend.muted {
            span style=(format!("color:{GREEN}")) { "■ succeeded" }
            span style=(format!("color:{ORANGE}")) { "■ failed" }
            span style=(format!("color:{RED}")) { "■ dead-lettered" }
            span style=(format!("color:{BLUE}")) { "▬ unfinished (backlog)" }
            " per hour, UTC"
        }
    }
}

/// One hour's stacked bars, bottom up: (top, height, colour).
fn stack(b: &Bucket, base: f64, scale: f64) -> Vec<(f64, f64, &'static str)> {
    let mut top = base;
    let mut bars = Vec::new();
    for (count, color) in [
        (b.succeeded, GREEN),
        (b.failed, ORANGE),
        (b.dead_lettered, RED),
    ] {
        if count == 0 {
            continue;
        }
        let h = f64::from(count) * scale;
        top -= h;
        bars.push((top, h, color));
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::Fingerprint;
    use crate::model::submission::Submission;

    /// What the stores count (one per submission here, ungrouped).
    fn counts(start: DateTime<Utc>, now: DateTime<Utc>, all: &[Submission]) -> Vec<HourlyCount> {
        let hour = |t: DateTime<Utc>| (t - start).num_milliseconds().div_euclid(3_600_000);
        all.iter()
            .filter(|s| s.created_at >= start || !s.state.is_terminal())
            .map(|s| HourlyCount {
                created: if s.created_at < start {
                    -1
                } else if s.created_at >= now {
                    HOURS as i64
                } else {
                    hour(s.created_at).min(HOURS as i64)
                },
                ended: s.terminal_at.map(|t| hour(t).clamp(-1, HOURS as i64)),
                ended_by_now: s.terminal_at.is_some_and(|t| t < now),
                state: s.state,
                count: 1,
            })
            .collect()
    }

    fn at(hour: i64, minute: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 - 1_700_000_000 % 3600, 0).unwrap()
            + Span::hours(hour)
            + Span::minutes(minute)
    }

    fn submission(
        created: DateTime<Utc>,
        state: SubmissionState,
        ended: Option<DateTime<Utc>>,
    ) -> Submission {
        Submission {
            id: crate::SubmissionId::new(),
            partner: "p".into(),
            kind: "k".into(),
            payload: None,
            fingerprint: Fingerprint::of_json(&serde_json::json!({})).0,
            idempotency_key: "key".into(),
            ordering_key: None,
            correlation: Default::default(),
            external_ref: None,
            business_value: None,
            currency: None,
            business_deadline: None,
            priority: 0,
            state,
            attempts: 1,
            due_at: created,
            not_before: None,
            lease_expires_at: None,
            result_deadline: None,
            created_at: created,
            updated_at: created,
            terminal_at: ended,
            last_error: None,
            replays: 0,
            result: None,
            attempts_before_cycle: 0,
            cycle_started_at: created,
        }
    }

    #[test]
    fn outcomes_land_in_the_hour_they_ended_and_backlog_follows() {
        use SubmissionState::*;
        let now = at(23, 30);
        let start = window_start(now);
        assert_eq!(start, at(0, 0));
        let all = [
            submission(at(1, 10), Succeeded, Some(at(1, 20))),
            submission(at(1, 15), Failed, Some(at(2, 5))),
            submission(at(2, 0), DeadLettered, Some(at(2, 50))),
            submission(at(3, 0), Stuck, None),
            submission(at(-3, 0), Queued, None),
            submission(at(-2, 0), AwaitingResult, None),
            submission(at(-2, 0), Succeeded, Some(at(1, 0))),
        ];
        let b = bucketize(&counts(start, now, &all));
        assert_eq!((b[1].succeeded, b[1].failed), (1, 0));
        assert_eq!((b[2].failed, b[2].dead_lettered), (1, 1));
        assert_eq!(b[0].backlog, 2, "only the older unfinished work");
        assert_eq!(b[1].backlog, 3, "the failed one is still open at 02:00");
        assert_eq!(b[2].backlog, 2);
        assert_eq!(b[23].backlog, 3, "the stuck one stays");
        let svg = render(&Day { start, buckets: b }, "<lab>").into_string();
        assert!(svg.starts_with("<svg") && svg.contains("&lt;lab&gt;"));
        assert!(svg.contains("<polyline"));
    }
}
