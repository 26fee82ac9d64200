//! Impact in business terms, decided once for both stores: which rows are
//! at risk, the age bands, which work counts as open for a business
//! deadline — as SQL text both stores run (with their own placeholders)
//! and the folding of its rows into [`Impact`], [`DeadlineRisk`] and
//! per-currency [`Totals`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::model::money::currency_from_counter;
use crate::model::submission::SubmissionState;
use crate::store::common::{HOUR_MS, count, duration_ms, from_millis, to_millis};
use crate::store::{AgeBand, DeadlineRisk, Impact, StatsQuery, Totals};

/// Open work for a business deadline: not succeeded, cancelled or resolved
/// by hand (a failed or dead-lettered submission still has to be recovered
/// in time). Word for word the predicate of migration 14's partial indexes,
/// so SQLite uses them.
pub(crate) const DEADLINE_OPEN: &str = "business_deadline IS NOT NULL \
    AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck', 'failed', 'dead_lettered')";

/// The placeholder for parameter `n` (1-based) in a store's dialect.
pub(crate) type Placeholder = fn(usize) -> String;

/// Unfinished work past a cutoff is found through the partner's unfinished
/// states: `+created_at` keeps SQLite (without statistics) from reading it
/// through `(partner, created_at)` instead, which holds the partner's whole
/// history before the cutoff (the plan test checks this).
///
/// At-risk rows of one partner grouped by (kind, currency, age band):
/// failed, dead-lettered and stuck ones, and unfinished ones enqueued at or
/// before the delay-budget cutoff. Parameters: 1 partner, 2-4 the age band
/// limits ([`age_limits`]), 5 the budget cutoff ([`budget_cutoff`]).
/// Columns: kind, currency ('' unspecified), band, count, value.
pub(crate) fn at_risk_sql(p: Placeholder) -> String {
    let select = format!(
        "SELECT kind, COALESCE(currency, ''), \
         CAST(CASE WHEN created_at > {h} THEN 0 WHEN created_at > {d} THEN 1 \
                   WHEN created_at > {w} THEN 2 ELSE 3 END AS BIGINT), \
         COUNT(*), CAST(COALESCE(SUM(business_value), 0) AS BIGINT) \
         FROM liaison_submissions WHERE partner = {partner}",
        partner = p(1),
        h = p(2),
        d = p(3),
        w = p(4),
    );
    format!(
        "{select} AND state IN ('failed', 'dead_lettered', 'stuck') GROUP BY 1, 2, 3 \
         UNION ALL \
         {select} AND state IN ('queued', 'in_flight', 'awaiting_result') \
           AND +created_at <= {cutoff} GROUP BY 1, 2, 3",
        cutoff = p(5),
    )
}

/// Unfinished work of one partner enqueued at or before the cutoff, per
/// currency. Parameters: 1 partner, 2 the cutoff. Columns: currency, count,
/// value.
pub(crate) fn past_budget_sql(p: Placeholder) -> String {
    format!(
        "SELECT COALESCE(currency, ''), COUNT(*), CAST(COALESCE(SUM(business_value), 0) AS BIGINT) \
         FROM liaison_submissions \
         WHERE partner = {} AND state IN ('queued', 'in_flight', 'awaiting_result', 'stuck') \
           AND +created_at <= {} GROUP BY 1",
        p(1),
        p(2)
    )
}

/// Open work of one partner whose business deadline is at or before the
/// horizon, grouped by (missed, currency). Parameters: 1 partner, 2 now,
/// 3 the horizon (now + lead time). Columns: missed (1/0), currency,
/// count, value, nearest deadline.
pub(crate) fn deadlines_sql(p: Placeholder) -> String {
    format!(
        "SELECT CAST(CASE WHEN business_deadline <= {now} THEN 1 ELSE 0 END AS BIGINT), \
         COALESCE(currency, ''), COUNT(*), CAST(COALESCE(SUM(business_value), 0) AS BIGINT), \
         MIN(business_deadline) \
         FROM liaison_submissions \
         WHERE partner = {partner} AND {DEADLINE_OPEN} AND business_deadline <= {horizon} \
         GROUP BY 1, 2",
        partner = p(1),
        now = p(2),
        horizon = p(3),
    )
}

/// The age band limits for [`at_risk_sql`]: enqueued after each of these is
/// younger than 1 h, 1 d, 7 d.
pub(crate) fn age_limits(now: DateTime<Utc>) -> [i64; 3] {
    let now = to_millis(now);
    [
        now.saturating_sub(HOUR_MS),
        now.saturating_sub(24 * HOUR_MS),
        now.saturating_sub(7 * 24 * HOUR_MS),
    ]
}

/// The delay-budget cutoff for `partner` (no budget: nothing is past it).
pub(crate) fn budget_cutoff(query: &StatsQuery, partner: &str) -> Option<i64> {
    query
        .delay_budgets
        .get(partner)
        .map(|budget| to_millis(query.now).saturating_sub(duration_ms(*budget)))
}

/// (now, horizon) for [`deadlines_sql`].
pub(crate) fn deadline_window(query: &StatsQuery, partner: &str) -> (i64, i64) {
    let now = to_millis(query.now);
    (
        now,
        now.saturating_add(duration_ms(query.lead_time_for(partner))),
    )
}

/// Fold [`at_risk_sql`] rows.
pub(crate) fn impact_of(rows: impl IntoIterator<Item = (String, String, i64, i64, i64)>) -> Impact {
    let mut impact = Impact::default();
    for (kind, currency, band, n, value) in rows {
        impact.add(
            kind,
            AgeBand::from_index(band),
            Totals::of(count(n), currency_from_counter(&currency), value),
        );
    }
    impact
}

/// Fold [`past_budget_sql`] rows.
pub(crate) fn totals_of(rows: impl IntoIterator<Item = (String, i64, i64)>) -> Totals {
    let mut totals = Totals::default();
    for (currency, n, value) in rows {
        totals.add(&Totals::of(
            count(n),
            currency_from_counter(&currency),
            value,
        ));
    }
    totals
}

/// Fold [`deadlines_sql`] rows.
pub(crate) fn deadlines_of(
    query: &StatsQuery,
    partner: &str,
    rows: impl IntoIterator<Item = (i64, String, i64, i64, i64)>,
) -> DeadlineRisk {
    let mut risk = DeadlineRisk {
        lead_time_secs: query.lead_time_for(partner).as_secs(),
        ..DeadlineRisk::default()
    };
    for (missed, currency, n, value, nearest) in rows {
        let totals = Totals::of(count(n), currency_from_counter(&currency), value);
        if missed == 1 {
            risk.missed.add(&totals);
        } else {
            risk.at_risk.add(&totals);
        }
        let nearest = from_millis(nearest);
        risk.nearest = Some(risk.nearest.map_or(nearest, |n| n.min(nearest)));
    }
    risk
}

/// Fold the counters' rows (state, currency, n, value) into totals per state.
pub(crate) fn by_state_of(
    rows: impl IntoIterator<Item = (String, String, i64, i64)>,
) -> BTreeMap<SubmissionState, Totals> {
    let mut out: BTreeMap<SubmissionState, Totals> = BTreeMap::new();
    for (state, currency, n, value) in rows {
        let Ok(state) = state.parse() else { continue };
        if n <= 0 {
            continue;
        }
        out.entry(state).or_default().add(&Totals::of(
            count(n),
            currency_from_counter(&currency),
            value,
        ));
    }
    out
}
