//! Expected traffic: how much a partner should see, and when, so that
//! silence is a problem someone hears about instead of a quiet "healthy".

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What counts as a partner's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrafficKind {
    /// Submissions that reached a result in the period: they ended
    /// `Succeeded` or `Failed` (the partner answered, either way).
    Finished,
    /// Callbacks that arrived from the partner in the period, except those
    /// that failed verification.
    Callbacks,
}

/// At least N finished submissions (or N callbacks) per period, optionally
/// only on some weekdays and hours in a time zone. Set on a partner with
/// [`crate::Partner::expect_traffic`]; breaking it makes the partner at
/// least `Degraded` and opens a "silent partner" alert.
///
/// The expectation is checked only while the whole period before now lies
/// inside its windows: with `hours(8, 18)` and a period of one hour, from
/// 09:00 to 18:00. Consecutive whole days (no `hours`, or `hours(0, 24)`)
/// form one window across midnight.
///
/// ```
/// use chrono::Weekday::{Fri, Mon};
/// use liaison::engine::ExpectedTraffic;
/// use std::time::Duration;
///
/// let office_hours = ExpectedTraffic::finished(1)
///     .per(Duration::from_secs(3600))
///     .weekdays(Mon..=Fri)
///     .hours(8, 18)
///     .time_zone("Europe/Berlin");
/// assert_eq!(
///     office_hours.to_string(),
///     "at least 1 per hour on weekdays 08:00-18:00 Europe/Berlin"
/// );
/// ```
///
/// Bad settings (a zero count or period, hours out of range or an empty
/// window, an unknown time zone, a period longer than any window) are
/// refused with [`crate::Error::InvalidInput`] naming the field when the
/// hub is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTraffic {
    pub(crate) kind: TrafficKind,
    pub(crate) at_least: u32,
    pub(crate) period: Duration,
    /// From one weekday to another, forward through the week (`Fri..=Mon`
    /// is Friday to Monday). `None`: every day.
    pub(crate) weekdays: Option<(Weekday, Weekday)>,
    /// `[start, end)` in whole hours of the local day. `None`: all day.
    pub(crate) hours: Option<(u32, u32)>,
    /// An IANA name. `None`: UTC.
    pub(crate) time_zone: Option<String>,
}

/// The period when none is given: one hour.
const DEFAULT_PERIOD: Duration = Duration::from_secs(3600);

impl ExpectedTraffic {
    /// At least `at_least` submissions reach a result per period (default:
    /// one hour).
    pub fn finished(at_least: u32) -> Self {
        Self::new(TrafficKind::Finished, at_least)
    }

    /// At least `at_least` callbacks arrive per period (default: one hour).
    pub fn callbacks(at_least: u32) -> Self {
        Self::new(TrafficKind::Callbacks, at_least)
    }

    fn new(kind: TrafficKind, at_least: u32) -> Self {
        ExpectedTraffic {
            kind,
            at_least,
            period: DEFAULT_PERIOD,
            weekdays: None,
            hours: None,
            time_zone: None,
        }
    }

    /// The period the count is taken over (at least one second).
    pub fn per(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// Only on these days, e.g. `Mon..=Fri`. A range runs forward through
    /// the week: `Fri..=Mon` is Friday, Saturday, Sunday and Monday.
    pub fn weekdays(mut self, days: RangeInclusive<Weekday>) -> Self {
        self.weekdays = Some((*days.start(), *days.end()));
        self
    }

    /// Only from `start` to `end` o'clock (`[start, end)`, whole hours,
    /// `end` at most 24), e.g. `hours(8, 18)`. A window over midnight is
    /// not supported: use two partners' worth of care, or whole days.
    pub fn hours(mut self, start: u32, end: u32) -> Self {
        self.hours = Some((start, end));
        self
    }

    /// The time zone of the windows, an IANA name such as `Europe/Berlin`
    /// (default UTC). Daylight saving time is followed.
    pub fn time_zone(mut self, name: impl Into<String>) -> Self {
        self.time_zone = Some(name.into());
        self
    }

    /// What counts.
    pub fn kind(&self) -> TrafficKind {
        self.kind
    }

    /// The least count expected per period.
    pub fn at_least(&self) -> u32 {
        self.at_least
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Refuse settings that could never be checked.
    pub(crate) fn check(&self) -> Result<()> {
        if self.at_least == 0 {
            return Err(Error::invalid(
                "expect_traffic.at_least",
                "must be at least 1 (no expectation: leave expect_traffic out)",
            ));
        }
        if self.period < Duration::from_secs(1) {
            return Err(Error::invalid(
                "expect_traffic.period",
                "must be at least one second",
            ));
        }
        if let Some((start, end)) = self.hours {
            if start > 23 || end > 24 {
                return Err(Error::invalid(
                    "expect_traffic.hours",
                    format!("{start} to {end} is out of range: start 0 to 23, end 1 to 24"),
                ));
            }
            if start >= end {
                return Err(Error::invalid(
                    "expect_traffic.hours",
                    format!(
                        "{start} to {end} is an empty window: the end must come after the start \
                         on the same day"
                    ),
                ));
            }
        }
        self.tz()?;
        if let Some(longest) = self.longest_window()
            && self.period > longest
        {
            return Err(Error::invalid(
                "expect_traffic.period",
                format!(
                    "{} is longer than the longest window ({}): it would never be checked",
                    period_words(self.period),
                    period_words(longest)
                ),
            ));
        }
        Ok(())
    }

    /// The time zone, parsed.
    pub(crate) fn tz(&self) -> Result<Tz> {
        match &self.time_zone {
            None => Ok(Tz::UTC),
            Some(name) => name.parse().map_err(|_| {
                Error::invalid(
                    "expect_traffic.time_zone",
                    format!("unknown time zone {name:?}: give an IANA name such as Europe/Berlin"),
                )
            }),
        }
    }

    /// Whether `day` is one of the window's days.
    fn on(&self, day: Weekday) -> bool {
        let Some((from, to)) = self.weekdays else {
            return true;
        };
        let (from, to, day) = (
            from.num_days_from_monday(),
            to.num_days_from_monday(),
            day.num_days_from_monday(),
        );
        if from <= to {
            (from..=to).contains(&day)
        } else {
            day >= from || day <= to
        }
    }

    fn span(&self) -> (u32, u32) {
        self.hours.unwrap_or((0, 24))
    }

    /// The longest stretch of time inside the windows (ignoring daylight
    /// saving shifts); `None` when it never ends (every day, all day).
    fn longest_window(&self) -> Option<Duration> {
        let (start, end) = self.span();
        let hour = |n: u32| Duration::from_secs(u64::from(n) * 3600);
        if (start, end) != (0, 24) {
            return Some(hour(end - start));
        }
        let days: Vec<bool> = WEEK.iter().map(|d| self.on(*d)).collect();
        if days.iter().all(|d| *d) {
            return None;
        }
        // The longest circular run of window days.
        let mut longest = 0;
        for first in 0..7 {
            let run = (0..7).take_while(|i| days[(first + i) % 7]).count();
            longest = longest.max(run);
        }
        Some(hour(24 * longest as u32))
    }

    /// The start of the window `now` is in (the first instant of a run of
    /// adjoining windows), or `None` when `now` is outside every window.
    /// `DateTime::MIN_UTC` when the windows never end.
    fn window_start(&self, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz);
        let (start, end) = self.span();
        if !self.on(local.weekday()) || local.hour() < start || local.hour() >= end {
            return None;
        }
        let mut day = local.date_naive();
        // Whole days run into the day before when it is a window day too.
        for _ in 0..7 {
            let previous = day.pred_opt()?;
            if (start, end) == (0, 24) && self.on(previous.weekday()) {
                day = previous;
            } else {
                return Some(local_start(tz, day, start));
            }
        }
        Some(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether the expectation is checked at `now`: `now` is inside a
    /// window and so is the whole period before it.
    pub(crate) fn checked_at(&self, now: DateTime<Utc>) -> bool {
        let Ok(tz) = self.tz() else {
            return false;
        };
        let Some(start) = self.window_start(tz, now) else {
            return false;
        };
        chrono::Duration::from_std(self.period)
            .ok()
            .and_then(|period| now.checked_sub_signed(period))
            .is_some_and(|from| from >= start)
    }

    /// The windows in words, after "expected": "on weekdays 08:00-18:00
    /// Europe/Berlin"; empty when there are none.
    pub(crate) fn window_words(&self) -> String {
        if self.weekdays.is_none() && self.hours.is_none() {
            return String::new();
        }
        let days = match self.weekdays {
            None => "every day".to_owned(),
            Some((Weekday::Mon, Weekday::Fri)) => "on weekdays".to_owned(),
            Some((Weekday::Sat, Weekday::Sun)) => "at weekends".to_owned(),
            Some((from, to)) if from == to => format!("on {from}"),
            Some((from, to)) => format!("on {from}-{to}"),
        };
        let hours = match self.hours {
            Some((start, end)) => format!(" {start:02}:00-{end:02}:00"),
            None => String::new(),
        };
        let zone = self.time_zone.as_deref().unwrap_or("UTC");
        format!(" {days}{hours} {zone}")
    }

    /// "per hour", "per 2 h".
    pub(crate) fn per_words(&self) -> String {
        match self.period.as_secs() {
            60 if self.period.subsec_nanos() == 0 => "per minute".into(),
            3600 if self.period.subsec_nanos() == 0 => "per hour".into(),
            86_400 if self.period.subsec_nanos() == 0 => "per day".into(),
            _ => format!("per {}", period_words(self.period)),
        }
    }

    /// The form kept in the store (`liaison_partners.expected_traffic`).
    pub(crate) fn to_stored(&self) -> String {
        let stored = Stored {
            kind: self.kind,
            at_least: self.at_least,
            period_ms: u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX),
            weekdays: self
                .weekdays
                .map(|(a, b)| [a.num_days_from_monday(), b.num_days_from_monday()]),
            hours: self.hours.map(|(a, b)| [a, b]),
            time_zone: self.time_zone.clone(),
        };
        // A struct of plain fields always serializes.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Read the stored form back, checked as at build time.
    pub(crate) fn from_stored(partner: &str, text: &str) -> Result<Self> {
        let corrupt = |source: crate::error::BoxError| {
            Error::corrupt(
                format!("the expected traffic stored for {partner:?}"),
                Some(source),
            )
        };
        let stored: Stored = serde_json::from_str(text).map_err(|e| corrupt(Box::new(e)))?;
        let day = |n: u32| {
            WEEK.get(n as usize)
                .copied()
                .ok_or_else(|| corrupt(format!("no weekday {n}").into()))
        };
        let weekdays = match stored.weekdays {
            Some([a, b]) => Some((day(a)?, day(b)?)),
            None => None,
        };
        let expected = ExpectedTraffic {
            kind: stored.kind,
            at_least: stored.at_least,
            period: Duration::from_millis(stored.period_ms),
            weekdays,
            hours: stored.hours.map(|[a, b]| (a, b)),
            time_zone: stored.time_zone,
        };
        expected.check().map_err(|e| corrupt(Box::new(e)))?;
        Ok(expected)
    }
}

impl fmt::Display for ExpectedTraffic {
    /// "at least 1 per hour on weekdays 08:00-18:00 Europe/Berlin".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at least {} {}{}",
            self.at_least,
            self.per_words(),
            self.window_words()
        )
    }
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

#[derive(Serialize, Deserialize)]
struct Stored {
    kind: TrafficKind,
    at_least: u32,
    period_ms: u64,
    #[serde(default)]
    weekdays: Option<[u32; 2]>,
    #[serde(default)]
    hours: Option<[u32; 2]>,
    #[serde(default)]
    time_zone: Option<String>,
}

/// The first instant of `day` at `hour` o'clock in `tz`: the earlier one
/// when the clock passes that hour twice, the end of the gap when it skips
/// it (daylight saving time starting).
fn local_start(tz: Tz, day: NaiveDate, hour: u32) -> DateTime<Utc> {
    let Some(naive) = day.and_hms_opt(hour, 0, 0) else {
        return DateTime::<Utc>::MIN_UTC;
    };
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // In a gap: the first minute that exists after it.
            (1..=24 * 60)
                .filter_map(|m| {
                    tz.from_local_datetime(&(naive + chrono::Duration::minutes(m)))
                        .earliest()
                })
                .next()
                .map_or(DateTime::<Utc>::MIN_UTC, |t| t.with_timezone(&Utc))
        }
    }
}

/// "45 s", "30 min", "2 h", "1 d", "90 min".
pub(crate) fn period_words(period: Duration) -> String {
    let secs = period.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Weekday::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn hour() -> Duration {
        Duration::from_secs(3600)
    }

    fn office() -> ExpectedTraffic {
        ExpectedTraffic::finished(1)
            .per(hour())
            .weekdays(Mon..=Fri)
            .hours(8, 18)
            .time_zone("Europe/Berlin")
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |e: ExpectedTraffic| match e.check() {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(ExpectedTraffic::finished(0)),
            "expect_traffic.at_least"
        );
        assert_eq!(
            field(ExpectedTraffic::finished(1).per(Duration::ZERO)),
            "expect_traffic.period"
        );
        assert_eq!(
            field(ExpectedTraffic::finished(1).per(Duration::from_millis(999))),
            "expect_traffic.period"
        );
        for (start, end) in [(24, 24), (8, 25), (30, 31)] {
            assert_eq!(
                field(ExpectedTraffic::finished(1).hours(start, end)),
                "expect_traffic.hours",
                "{start}-{end}"
            );
        }
        // Empty, or running backwards.
        for (start, end) in [(8, 8), (18, 8)] {
            let err = ExpectedTraffic::callbacks(1)
                .hours(start, end)
                .check()
                .unwrap_err();
            assert!(err.to_string().contains("empty window"), "{err}");
        }
        assert_eq!(
            field(ExpectedTraffic::finished(1).time_zone("Mars/Olympus_Mons")),
            "expect_traffic.time_zone"
        );
        // A period no window can hold would never be checked.
        assert_eq!(
            field(
                ExpectedTraffic::finished(1)
                    .hours(8, 18)
                    .per(Duration::from_secs(11 * 3600))
            ),
            "expect_traffic.period"
        );
        assert_eq!(
            field(
                ExpectedTraffic::finished(1)
                    .weekdays(Mon..=Fri)
                    .per(Duration::from_secs(6 * 86_400))
            ),
            "expect_traffic.period"
        );
        office().check().unwrap();
        ExpectedTraffic::finished(1)
            .weekdays(Mon..=Fri)
            .per(Duration::from_secs(5 * 86_400))
            .check()
            .unwrap();
        ExpectedTraffic::finished(1)
            .per(Duration::from_secs(30 * 86_400))
            .check()
            .unwrap();
    }

    #[test]
    fn office_hours_are_checked_once_a_whole_period_is_inside() {
        let e = office();
        // Monday 2026-03-02, Berlin is UTC+1 in winter.
        assert!(!e.checked_at(at("2026-03-02T08:30:00+01:00")), "too early");
        assert!(e.checked_at(at("2026-03-02T09:00:00+01:00")));
        assert!(e.checked_at(at("2026-03-02T17:59:00+01:00")));
        assert!(!e.checked_at(at("2026-03-02T18:00:00+01:00")), "closed");
        assert!(!e.checked_at(at("2026-03-07T12:00:00+01:00")), "Saturday");
        // 09:30 in Berlin is 08:30 UTC: the time zone decides, not UTC.
        assert!(e.checked_at(at("2026-03-02T08:30:00Z")));
        assert!(!e.checked_at(at("2026-03-02T07:30:00Z")));
    }

    #[test]
    fn daylight_saving_time_moves_the_window_in_utc() {
        let e = office();
        // Summer: Berlin is UTC+2, so 09:00 local is 07:00 UTC.
        assert!(e.checked_at(at("2026-07-06T07:00:00Z")));
        assert!(!e.checked_at(at("2026-07-06T06:59:00Z")));
        assert!(!e.checked_at(at("2026-07-06T16:00:00Z")), "18:00 local");
        // Winter: 09:00 local is 08:00 UTC.
        assert!(!e.checked_at(at("2026-01-05T07:30:00Z")));
        assert!(e.checked_at(at("2026-01-05T08:00:00Z")));

        // The night the clocks go forward (Sunday 2026-03-29, 02:00 -> 03:00):
        // a window from 02:00 starts at the end of the gap, 03:00 CEST.
        let night = ExpectedTraffic::callbacks(1)
            .hours(2, 6)
            .time_zone("Europe/Berlin");
        assert!(!night.checked_at(at("2026-03-29T03:30:00+02:00")));
        assert!(night.checked_at(at("2026-03-29T04:00:00+02:00")));
        // The night they go back (Sunday 2026-10-25, 03:00 -> 02:00): 02:00
        // comes twice, the window starts at the first.
        assert!(night.checked_at(at("2026-10-25T03:00:00+02:00")));
        assert!(night.checked_at(at("2026-10-25T02:30:00+01:00")));
        assert!(!night.checked_at(at("2026-10-25T02:30:00+02:00")));
    }

    #[test]
    fn zones_far_apart_disagree_about_the_day() {
        // Monday 2026-03-02 06:00 UTC is Monday 15:00 in Tokyo and Sunday
        // 22:00 in Los Angeles.
        let now = at("2026-03-02T06:00:00Z");
        let tokyo = office().time_zone("Asia/Tokyo");
        let la = office().time_zone("America/Los_Angeles");
        assert!(tokyo.checked_at(now));
        assert!(!la.checked_at(now));
        // Half-hour zones: 09:00 in Kolkata is 03:30 UTC.
        let kolkata = office().time_zone("Asia/Kolkata");
        assert!(!kolkata.checked_at(at("2026-03-02T03:29:00Z")));
        assert!(kolkata.checked_at(at("2026-03-02T03:30:00Z")));
    }

    #[test]
    fn whole_days_run_across_midnight() {
        let weekdays = ExpectedTraffic::finished(1)
            .per(Duration::from_secs(6 * 3600))
            .weekdays(Mon..=Fri);
        // Tuesday 02:00 UTC: the period reaches back into Monday, a window day.
        assert!(weekdays.checked_at(at("2026-03-03T02:00:00Z")));
        // Monday 02:00: it reaches back into Sunday.
        assert!(!weekdays.checked_at(at("2026-03-02T02:00:00Z")));
        assert!(weekdays.checked_at(at("2026-03-02T06:00:00Z")));
        // A range wrapping over the week's end.
        let weekend = ExpectedTraffic::callbacks(1).weekdays(Fri..=Mon);
        assert!(weekend.checked_at(at("2026-03-08T12:00:00Z")), "Sunday");
        assert!(weekend.checked_at(at("2026-03-09T12:00:00Z")), "Monday");
        assert!(!weekend.checked_at(at("2026-03-10T12:00:00Z")), "Tuesday");
        // Every day, all day: always checked.
        assert!(ExpectedTraffic::finished(1).checked_at(at("2026-03-02T00:00:00Z")));
    }

    #[test]
    fn words_and_the_stored_form() {
        assert_eq!(
            office().to_string(),
            "at least 1 per hour on weekdays 08:00-18:00 Europe/Berlin"
        );
        assert_eq!(
            ExpectedTraffic::callbacks(5)
                .per(Duration::from_secs(7200))
                .to_string(),
            "at least 5 per 2 h"
        );
        assert_eq!(
            ExpectedTraffic::finished(2)
                .per(Duration::from_secs(1800))
                .hours(6, 22)
                .to_string(),
            "at least 2 per 30 min every day 06:00-22:00 UTC"
        );
        for e in [
            office(),
            ExpectedTraffic::callbacks(3).weekdays(Sat..=Sun),
            ExpectedTraffic::finished(1).per(Duration::from_millis(1500)),
        ] {
            let back = ExpectedTraffic::from_stored("lab", &e.to_stored()).unwrap();
            assert_eq!(back, e);
        }
        let err = ExpectedTraffic::from_stored("lab", "{\"kind\":\"finished\"}").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
        let bad = office().time_zone("Nowhere/Else").to_stored();
        assert!(ExpectedTraffic::from_stored("lab", &bad).is_err());
    }
}
