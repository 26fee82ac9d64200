//! Health statistics from PostgreSQL: counts by state from
//! `liaison_state_totals` (the folded counts plus the deltas statements
//! appended since, migration 0018), windows read through indexes. The
//! caller runs these in one read-only snapshot, so counts and windows agree
//! with each other.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::db::{Db, get};
use crate::error::Result;
use crate::model::callback::Disposition;
use crate::model::submission::SubmissionState;
use crate::model::traffic::{ExpectedTraffic, TrafficKind};
use crate::store::common::{count, duration_ms, from_millis, to_millis};
use crate::store::impact::{self, age_limits, budget_cutoff, deadline_window};
use crate::store::rules::callbacks::sql_list;
use crate::store::{MAX_LATENCY_SAMPLES, Outcomes, PartnerStats, StatsQuery, Totals};

pub(super) async fn stats_on(db: &Db<'_>, query: &StatsQuery) -> Result<Vec<PartnerStats>> {
    let partners = if query.partners.is_empty() {
        // Byte order, as SQLite sorts, whatever the database's collation.
        db.query(
            "SELECT partner FROM liaison_state_totals GROUP BY partner \
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
    let traffic = match query.expected_traffic.get(&partner) {
        Some(expected) => Some(traffic(db, &partner, expected, now).await?),
        None => None,
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
        .map(five)
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
        .map(five)
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
        worker_crashed: worker_crashed(db, &partner).await?,
        oldest_due_at: oldest_due(db, &partner).await?,
        last_served_at: last_served(db, &partner).await?,
        traffic,
        quarantined: quarantined(db, &partner).await?,
        partner,
    })
}

/// Dead letters the reaper left (see `rules::transition`'s
/// `lease_expiries`), on the partial index `liaison_submissions_worker_crashed`.
async fn worker_crashed(db: &Db<'_>, partner: &str) -> Result<u64> {
    let row = db
        .query_one(
            "SELECT COUNT(*) FROM liaison_submissions \
             WHERE partner = $1 AND state = 'dead_lettered' AND lease_expiries > 0",
            &[&partner],
            "count dead letters of crashed workers",
        )
        .await?;
    Ok(count(get(&row, 0)?))
}

/// The earliest due time of queued work, or end of a lease in flight.
async fn oldest_due(db: &Db<'_>, partner: &str) -> Result<Option<DateTime<Utc>>> {
    let row = db
        .query_one(
            "SELECT LEAST( \
               (SELECT MIN(due_at) FROM liaison_submissions \
                  WHERE partner = $1 AND state = 'queued'), \
               (SELECT MIN(lease_expires_at) FROM liaison_submissions \
                  WHERE partner = $1 AND state = 'in_flight'))",
            &[&partner],
            "find the earliest due work",
        )
        .await?;
    Ok(get::<Option<i64>>(&row, 0)?.map(from_millis))
}

async fn last_served(db: &Db<'_>, partner: &str) -> Result<Option<DateTime<Utc>>> {
    let row = db
        .query_opt(
            "SELECT last_served_at FROM liaison_partners WHERE partner = $1",
            &[&partner],
            "read when a partner was last served",
        )
        .await?;
    Ok(match row {
        Some(row) => get::<Option<i64>>(&row, 0)?.map(from_millis),
        None => None,
    })
}

/// What counts as `expected` traffic in `[now - period, now)`, up to its least.
async fn traffic(db: &Db<'_>, partner: &str, expected: &ExpectedTraffic, now: i64) -> Result<u64> {
    let from = now.saturating_sub(duration_ms(expected.period()));
    let sql = match expected.kind() {
        TrafficKind::Finished => {
            "SELECT COUNT(*) FROM (SELECT 1 FROM liaison_submissions \
               WHERE partner = $1 AND terminal_at >= $2 AND terminal_at < $3 \
                 AND state IN ('succeeded', 'failed') LIMIT $4) AS counted"
        }
        TrafficKind::Callbacks => {
            "SELECT COUNT(*) FROM (SELECT 1 FROM liaison_callbacks \
               WHERE partner = $1 AND received_at >= $2 AND received_at < $3 \
                 AND disposition <> 'rejected' LIMIT $4) AS counted"
        }
    };
    let row = db
        .query_one(
            sql,
            &[&partner, &from, &now, &i64::from(expected.at_least())],
            "count a partner's traffic",
        )
        .await?;
    Ok(count(get(&row, 0)?))
}

/// The five columns of an impact row (`store::impact`'s queries).
fn five<'r, A, B, C, D, E>(row: &'r tokio_postgres::Row) -> Result<(A, B, C, D, E)>
where
    A: tokio_postgres::types::FromSql<'r>,
    B: tokio_postgres::types::FromSql<'r>,
    C: tokio_postgres::types::FromSql<'r>,
    D: tokio_postgres::types::FromSql<'r>,
    E: tokio_postgres::types::FromSql<'r>,
{
    Ok((
        get(row, 0)?,
        get(row, 1)?,
        get(row, 2)?,
        get(row, 3)?,
        get(row, 4)?,
    ))
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
            "SELECT state, currency, n, value FROM liaison_state_totals WHERE partner = $1",
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

/// The partner's quarantine now, by disposition, read from the partial index
/// that holds only the quarantine (migration 0013).
async fn quarantined(db: &Db<'_>, partner: &str) -> Result<BTreeMap<Disposition, u64>> {
    let rows = db
        .query(
            &format!(
                "SELECT disposition, COUNT(*) FROM liaison_callbacks \
                 WHERE partner = $1 AND disposition IN ({}) GROUP BY disposition",
                sql_list(&Disposition::QUARANTINED)
            ),
            &[&partner],
            "count quarantined callbacks",
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

/// Fold the committed state-count deltas into `liaison_state_counts` (one
/// fold at a time per schema; another caller returns at once). Returns the
/// delta rows folded.
pub(super) async fn fold_counts_on(db: &Db<'_>) -> Result<i64> {
    let row = db
        .query_one(
            "SELECT liaison_state_counts_fold()",
            &[],
            "fold state counts",
        )
        .await?;
    get(&row, 0)
}
