//! Health statistics from SQLite: maintained counters, indexed windows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::db::{db_err, from_millis, to_millis};
use crate::error::Result;

use crate::model::callback::Disposition;
use crate::model::submission::SubmissionState;
use crate::model::traffic::{ExpectedTraffic, TrafficKind};
use crate::store::common::{count, duration_ms};
use crate::store::impact::{self, age_limits, budget_cutoff, deadline_window};
use crate::store::rules::callbacks::sql_list;
use crate::store::{
    DeadlineRisk, Impact, MAX_LATENCY_SAMPLES, Outcomes, PartnerStats, StatsQuery, Totals,
};

fn window_ms(query: &StatsQuery) -> i64 {
    duration_ms(query.window)
}

pub(crate) fn stats_on(conn: &Connection, query: &StatsQuery) -> Result<Vec<PartnerStats>> {
    let partners = if query.partners.is_empty() {
        conn.prepare_cached("SELECT DISTINCT partner FROM liaison_state_counts ORDER BY partner")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(db_err("list partners"))?
    } else {
        query.partners.clone()
    };
    partners
        .into_iter()
        .map(|partner| partner_stats(conn, partner, query))
        .collect()
}

fn partner_stats(conn: &Connection, partner: String, query: &StatsQuery) -> Result<PartnerStats> {
    let now = to_millis(query.now);
    let window = window_ms(query);
    let start = now.saturating_sub(window);
    let mut stats = PartnerStats {
        by_state: by_state(conn, &partner)?,
        window: outcomes(conn, &partner, start, now)?,
        previous: outcomes(conn, &partner, start.saturating_sub(window), start)?,
        enqueue_to_accepted_ms: samples(
            conn,
            "SELECT accepted_at - created_at FROM liaison_submissions \
             WHERE partner = ?1 AND accepted_at >= ?2 AND accepted_at < ?3 \
             ORDER BY accepted_at DESC LIMIT ?4",
            &partner,
            start,
            now,
        )?,
        accepted_to_result_ms: samples(
            conn,
            "SELECT terminal_at - accepted_at FROM liaison_submissions \
             WHERE partner = ?1 AND terminal_at >= ?2 AND terminal_at < ?3 \
               AND accepted_at IS NOT NULL AND state IN ('succeeded', 'failed') \
             ORDER BY terminal_at DESC LIMIT ?4",
            &partner,
            start,
            now,
        )?,
        oldest_queued_at: oldest_queued(conn, &partner)?,
        past_delay_budget: Totals::default(),
        at_risk: Impact::default(),
        deadlines: DeadlineRisk::default(),
        callbacks: callbacks(conn, &partner, start, now)?,
        worker_crashed: worker_crashed(conn, &partner)?,
        oldest_due_at: oldest_due(conn, &partner)?,
        last_served_at: last_served(conn, &partner)?,
        traffic: None,
        quarantined: quarantined(conn, &partner)?,
        partner,
    };
    if let Some(expected) = query.expected_traffic.get(&stats.partner) {
        stats.traffic = Some(traffic(conn, &stats.partner, expected, now)?);
    }
    let cutoff = budget_cutoff(query, &stats.partner);
    if let Some(cutoff) = cutoff {
        stats.past_delay_budget = conn
            .prepare_cached(&impact::past_budget_sql(placeholder))
            .and_then(|mut stmt| {
                stmt.query_map(params![stats.partner, cutoff], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map(impact::totals_of)
            .map_err(db_err("count work past its delay budget"))?;
    }
    let [hour, day, week] = age_limits(query.now);
    stats.at_risk = conn
        .prepare_cached(&impact::at_risk_sql(placeholder))
        .and_then(|mut stmt| {
            stmt.query_map(
                params![stats.partner, hour, day, week, cutoff.unwrap_or(i64::MIN)],
                |row| <(_, _, _, _, _)>::try_from(row),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map(impact::impact_of)
        .map_err(db_err("sum the value at risk"))?;
    let (at, horizon) = deadline_window(query, &stats.partner);
    let rows = conn
        .prepare_cached(&impact::deadlines_sql(placeholder))
        .and_then(|mut stmt| {
            stmt.query_map(params![stats.partner, at, horizon], |row| {
                <(_, _, _, _, _)>::try_from(row)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_err("count work near its business deadline"))?;
    stats.deadlines = impact::deadlines_of(query, &stats.partner, rows);
    Ok(stats)
}

/// Dead letters the reaper left (see `rules::transition`'s
/// `lease_expiries`), on the partial index `liaison_submissions_worker_crashed`
/// (named: without statistics SQLite counted every dead letter of the
/// partner through `(partner, state)`).
fn worker_crashed(conn: &Connection, partner: &str) -> Result<u64> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM liaison_submissions INDEXED BY liaison_submissions_worker_crashed \
         WHERE partner = ?1 AND state = 'dead_lettered' AND lease_expiries > 0",
    )
    .and_then(|mut stmt| stmt.query_row(params![partner], |row| row.get(0)))
    .map(count)
    .map_err(db_err("count dead letters of crashed workers"))
}

/// SQLite's numbered placeholder.
fn placeholder(n: usize) -> String {
    format!("?{n}")
}

fn by_state(conn: &Connection, partner: &str) -> Result<BTreeMap<SubmissionState, Totals>> {
    conn.prepare_cached(
        "SELECT state, currency, n, value FROM liaison_state_counts WHERE partner = ?1",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![partner], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map(impact::by_state_of)
    .map_err(db_err("read state counts"))
}

fn outcomes(conn: &Connection, partner: &str, from: i64, until: i64) -> Result<Outcomes> {
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT state, COUNT(*) FROM liaison_submissions \
             WHERE partner = ?1 AND terminal_at >= ?2 AND terminal_at < ?3 GROUP BY state",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![partner, from, until], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .map_err(db_err("count outcomes"))?;
    Ok(Outcomes {
        by_state: rows
            .into_iter()
            .filter_map(|(state, n)| Some((state.parse().ok()?, count(n))))
            .collect(),
    })
}

fn samples(conn: &Connection, sql: &str, partner: &str, from: i64, until: i64) -> Result<Vec<i64>> {
    let limit = i64::try_from(MAX_LATENCY_SAMPLES).unwrap_or(i64::MAX);
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_map(params![partner, from, until, limit], |row| row.get(0))?
                .collect()
        })
        .map_err(db_err("read latencies"))
}

fn oldest_queued(conn: &Connection, partner: &str) -> Result<Option<DateTime<Utc>>> {
    conn.prepare_cached(
        "SELECT created_at FROM liaison_submissions WHERE partner = ?1 AND state = 'queued' \
         ORDER BY seq LIMIT 1",
    )
    .and_then(|mut stmt| {
        stmt.query_row(params![partner], |row| row.get(0))
            .optional()
    })
    .map(|ms: Option<i64>| ms.map(from_millis))
    .map_err(db_err("find the oldest queued submission"))
}

/// The earliest due time of queued work, or end of a lease in flight.
/// Queued work is read from the claim's own index, covering (whatever the
/// priority: the partner's queued entries, never a row): an index of its
/// own on (partner, due_at) would be chosen by the claim, which would then
/// sort every due row on each claim.
fn oldest_due(conn: &Connection, partner: &str) -> Result<Option<DateTime<Utc>>> {
    conn.prepare_cached(
        "SELECT MIN(t) FROM ( \
           SELECT MIN(due_at) AS t FROM liaison_submissions \
             INDEXED BY liaison_submissions_due \
             WHERE partner = ?1 AND state = 'queued' \
           UNION ALL \
           SELECT MIN(lease_expires_at) FROM liaison_submissions \
             WHERE partner = ?1 AND state = 'in_flight')",
    )
    .and_then(|mut stmt| stmt.query_row(params![partner], |row| row.get(0)))
    .map(|ms: Option<i64>| ms.map(from_millis))
    .map_err(db_err("find the earliest due work"))
}

fn last_served(conn: &Connection, partner: &str) -> Result<Option<DateTime<Utc>>> {
    conn.prepare_cached("SELECT last_served_at FROM liaison_partners WHERE partner = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![partner], |row| row.get(0))
                .optional()
        })
        .map(|ms: Option<Option<i64>>| ms.flatten().map(from_millis))
        .map_err(db_err("read when a partner was last served"))
}

/// What counts as `expected` traffic in `[now - period, now)`, up to its least.
fn traffic(conn: &Connection, partner: &str, expected: &ExpectedTraffic, now: i64) -> Result<u64> {
    let from = now.saturating_sub(duration_ms(expected.period()));
    let sql = match expected.kind() {
        TrafficKind::Finished => {
            "SELECT COUNT(*) FROM (SELECT 1 FROM liaison_submissions \
               WHERE partner = ?1 AND terminal_at >= ?2 AND terminal_at < ?3 \
                 AND state IN ('succeeded', 'failed') LIMIT ?4)"
        }
        TrafficKind::Callbacks => {
            "SELECT COUNT(*) FROM (SELECT 1 FROM liaison_callbacks \
               WHERE partner = ?1 AND received_at >= ?2 AND received_at < ?3 \
                 AND disposition <> 'rejected' LIMIT ?4)"
        }
    };
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_row(
                params![partner, from, now, i64::from(expected.at_least())],
                |row| row.get(0),
            )
        })
        .map(count)
        .map_err(db_err("count a partner's traffic"))
}

fn callbacks(
    conn: &Connection,
    partner: &str,
    from: i64,
    until: i64,
) -> Result<BTreeMap<Disposition, u64>> {
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT disposition, COUNT(*) FROM liaison_callbacks \
             WHERE partner = ?1 AND received_at >= ?2 AND received_at < ?3 GROUP BY disposition",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![partner, from, until], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect()
        })
        .map_err(db_err("count callbacks"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(d, n)| Some((d.parse().ok()?, count(n))))
        .collect())
}

/// The partner's quarantine now, by disposition, read from the partial index
/// that holds only the quarantine (migration 0013): the statement repeats
/// its condition so that SQLite uses it.
fn quarantined(conn: &Connection, partner: &str) -> Result<BTreeMap<Disposition, u64>> {
    let rows: Vec<(String, i64)> = conn
        .prepare_cached(&format!(
            "SELECT disposition, COUNT(*) FROM liaison_callbacks \
             WHERE partner = ?1 AND disposition IN ({}) GROUP BY disposition",
            sql_list(&Disposition::QUARANTINED)
        ))
        .and_then(|mut stmt| {
            stmt.query_map(params![partner], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(db_err("count quarantined callbacks"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(d, n)| Some((d.parse().ok()?, count(n))))
        .collect())
}
