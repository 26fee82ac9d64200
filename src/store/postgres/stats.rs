//! Health statistics from PostgreSQL: counters kept by a trigger
//! (migration 0003), windows read through indexes. The caller runs these in
//! one read-only snapshot, so counts and windows agree with each other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::db::{Db, get};
use crate::error::Result;
use crate::model::callback::Disposition;
use crate::model::submission::SubmissionState;
use crate::store::common::{count, duration_ms, from_millis, to_millis};
use crate::store::impact::{self, age_limits, budget_cutoff, deadline_window};
use crate::store::{MAX_LATENCY_SAMPLES, Outcomes, PartnerStats, StatsQuery, Totals};

pub(super) async fn stats_on(db: &Db<'_>, query: &StatsQuery) -> Result<Vec<PartnerStats>> {
    let partners = if query.partners.is_empty() {
        // Byte order, as SQLite sorts, whatever the database's collation.
        db.query(
            "SELECT partner FROM liaison_state_counts GROUP BY partner \
             ORDER BY partner COLLATE \"C\"",
            &[],
            "list partners",
        )
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect::<Result<Vec<String>>>()?
    } else {
        query.partners.clone()
    };
    let mut out = Vec::with_capacity(partners.len());
    for partner in partners {
        out.push(partner_stats(db, partner, query).await?);
    }
    Ok(out)
}

async fn partner_stats(db: &Db<'_>, partner: String, query: &StatsQuery) -> Result<PartnerStats> {
    let now = to_millis(query.now);
    let window = duration_ms(query.window);
    let start = now.saturating_sub(window);
    let cutoff = budget_cutoff(query, &partner);
    let past_delay_budget = match cutoff {
        Some(cutoff) => past_budget(db, &partner, cutoff).await?,
        None => Totals::default(),
    };
    let [hour, day, week] = age_limits(query.now);
    let at_risk = impact::impact_of(
        db.query(
            &impact::at_risk_sql(placeholder),
            &[&partner, &hour, &day, &week, &cutoff.unwrap_or(i64::MIN)],
            "sum the value at risk",
        )
        .await?
        .iter()
        .map(|row| {
            Ok((
                get(row, 0)?,
                get(row, 1)?,
                get(row, 2)?,
                get(row, 3)?,
                get(row, 4)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?,
    );
    let (at, horizon) = deadline_window(query, &partner);
    let deadline_rows = db
        .query(
            &impact::deadlines_sql(placeholder),
            &[&partner, &at, &horizon],
            "count work near its business deadline",
        )
        .await?
        .iter()
        .map(|row| {
            Ok((
                get(row, 0)?,
                get(row, 1)?,
                get(row, 2)?,
                get(row, 3)?,
                get(row, 4)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let deadlines = impact::deadlines_of(query, &partner, deadline_rows);
    Ok(PartnerStats {
        by_state: by_state(db, &partner).await?,
        window: outcomes(db, &partner, start, now).await?,
        previous: outcomes(db, &partner, start.saturating_sub(window), start).await?,
        enqueue_to_accepted_ms: samples(
            db,
            "SELECT accepted_at - created_at FROM liaison_submissions \
             WHERE partner = $1 AND accepted_at >= $2 AND accepted_at < $3 \
             ORDER BY accepted_at DESC LIMIT $4",
            &partner,
            start,
            now,
        )
        .await?,
        accepted_to_result_ms: samples(
            db,
            "SELECT terminal_at - accepted_at FROM liaison_submissions \
             WHERE partner = $1 AND terminal_at >= $2 AND terminal_at < $3 \
               AND accepted_at IS NOT NULL AND state IN ('succeeded', 'failed') \
             ORDER BY terminal_at DESC LIMIT $4",
            &partner,
            start,
            now,
        )
        .await?,
        oldest_queued_at: oldest_queued(db, &partner).await?,
        past_delay_budget,
        at_risk,
        deadlines,
        callbacks: callbacks(db, &partner, start, now).await?,
        partner,
    })
}

/// PostgreSQL's numbered placeholder.
fn placeholder(n: usize) -> String {
    format!("${n}")
}

async fn past_budget(db: &Db<'_>, partner: &str, cutoff: i64) -> Result<Totals> {
    let rows = db
        .query(
            &impact::past_budget_sql(placeholder),
            &[&partner, &cutoff],
            "count work past its delay budget",
        )
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?, get(row, 2)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(impact::totals_of(rows))
}

async fn by_state(db: &Db<'_>, partner: &str) -> Result<BTreeMap<SubmissionState, Totals>> {
    let rows = db
        .query(
            "SELECT state, currency, n, value FROM liaison_state_counts WHERE partner = $1",
            &[&partner],
            "read state counts",
        )
        .await?
        .iter()
        .map(|row| Ok((get(row, 0)?, get(row, 1)?, get(row, 2)?, get(row, 3)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(impact::by_state_of(rows))
}

async fn outcomes(db: &Db<'_>, partner: &str, from: i64, until: i64) -> Result<Outcomes> {
    let rows = db
        .query(
            "SELECT state, COUNT(*) FROM liaison_submissions \
             WHERE partner = $1 AND terminal_at >= $2 AND terminal_at < $3 GROUP BY state",
            &[&partner, &from, &until],
            "count outcomes",
        )
        .await?;
    let mut by_state = BTreeMap::new();
    for row in &rows {
        let state: String = get(row, 0)?;
        if let Ok(state) = state.parse() {
            by_state.insert(state, count(get(row, 1)?));
        }
    }
    Ok(Outcomes { by_state })
}

async fn samples(db: &Db<'_>, sql: &str, partner: &str, from: i64, until: i64) -> Result<Vec<i64>> {
    let limit = i64::try_from(MAX_LATENCY_SAMPLES).unwrap_or(i64::MAX);
    db.query(sql, &[&partner, &from, &until, &limit], "read latencies")
        .await?
        .iter()
        .map(|row| get(row, 0))
        .collect()
}

async fn oldest_queued(db: &Db<'_>, partner: &str) -> Result<Option<DateTime<Utc>>> {
    let row = db
        .query_opt(
            "SELECT created_at FROM liaison_submissions WHERE partner = $1 AND state = 'queued' \
             ORDER BY seq LIMIT 1",
            &[&partner],
            "find the oldest queued submission",
        )
        .await?;
    row.map(|row| get(&row, 0).map(from_millis)).transpose()
}

async fn callbacks(
    db: &Db<'_>,
    partner: &str,
    from: i64,
    until: i64,
) -> Result<BTreeMap<Disposition, u64>> {
    let rows = db
        .query(
            "SELECT disposition, COUNT(*) FROM liaison_callbacks \
             WHERE partner = $1 AND received_at >= $2 AND received_at < $3 GROUP BY disposition",
            &[&partner, &from, &until],
            "count callbacks",
        )
        .await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let disposition: String = get(row, 0)?;
        if let Ok(disposition) = disposition.parse() {
            out.insert(disposition, count(get(row, 1)?));
        }
    }
    Ok(out)
}
