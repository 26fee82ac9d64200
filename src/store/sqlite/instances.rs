//! Engine instances and what they record about their partners on SQLite:
//! beats, stops, pruning, expected traffic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::db::{db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::traffic::ExpectedTraffic;
use crate::store::Instance;
use crate::store::common::duration_ms;

pub(crate) fn beat_on(conn: &Connection, i: &Instance) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO liaison_instances (id, host, pid, version, started_at, partners, \
           beat_interval_ms, last_beat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (id) DO UPDATE SET partners = excluded.partners, \
           beat_interval_ms = excluded.beat_interval_ms, last_beat_at = excluded.last_beat_at \
         WHERE liaison_instances.stopped_at IS NULL",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            i.id,
            i.host,
            i.pid,
            i.version,
            to_millis(i.started_at),
            i.partners_json(),
            duration_ms(i.beat_interval),
            to_millis(i.last_beat_at),
        ])
    })
    .map_err(db_err("record an instance's beat"))?;
    Ok(())
}

pub(crate) fn stop_on(conn: &Connection, id: &str, at: DateTime<Utc>) -> Result<()> {
    conn.prepare_cached(
        "UPDATE liaison_instances SET stopped_at = ?2, last_beat_at = ?2 \
         WHERE id = ?1 AND stopped_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![id, to_millis(at)]))
    .map_err(db_err("record an instance's stop"))?;
    Ok(())
}

pub(crate) fn instances_on(conn: &Connection) -> Result<Vec<Instance>> {
    type Row = (
        String,
        String,
        u32,
        String,
        i64,
        String,
        i64,
        i64,
        Option<i64>,
    );
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT id, host, pid, version, started_at, partners, beat_interval_ms, \
               last_beat_at, stopped_at FROM liaison_instances ORDER BY last_beat_at DESC, id",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })?
            .collect()
        })
        .map_err(db_err("read instances"))?;
    rows.into_iter()
        .map(
            |(id, host, pid, version, started, partners, interval, beat, stopped)| {
                Ok(Instance {
                    id,
                    host,
                    pid,
                    version,
                    started_at: from_millis(started),
                    partners: Instance::partners_from_json(&partners)?,
                    beat_interval: Duration::from_millis(interval.max(0).unsigned_abs()),
                    last_beat_at: from_millis(beat),
                    stopped_at: stopped.map(from_millis),
                })
            },
        )
        .collect()
}

pub(crate) fn prune_on(
    conn: &Connection,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let before = to_millis(before);
    // Keep, per partner, the last beat of the instances about to go.
    conn.prepare_cached(
        "INSERT INTO liaison_partners (partner, last_served_at, updated_at) \
         SELECT j.value, MAX(i.last_beat_at), ?2 \
         FROM liaison_instances i, json_each(i.partners) j \
         WHERE i.last_beat_at < ?1 AND j.type = 'text' GROUP BY j.value \
         ON CONFLICT (partner) DO UPDATE SET last_served_at = \
           MAX(COALESCE(liaison_partners.last_served_at, excluded.last_served_at), \
               excluded.last_served_at)",
    )
    .and_then(|mut stmt| stmt.execute(params![before, to_millis(now)]))
    .map_err(db_err("keep the last beat of pruned instances"))?;
    let removed = conn
        .prepare_cached("DELETE FROM liaison_instances WHERE last_beat_at < ?1")
        .and_then(|mut stmt| stmt.execute(params![before]))
        .map_err(db_err("prune instances"))?;
    Ok(removed as u64)
}

pub(crate) fn set_expected_traffic_on(
    conn: &Connection,
    partner: &str,
    expected: Option<&ExpectedTraffic>,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO liaison_partners (partner, expected_traffic, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (partner) DO UPDATE SET expected_traffic = excluded.expected_traffic, \
           updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            partner,
            expected.map(ExpectedTraffic::to_stored),
            to_millis(now)
        ])
    })
    .map_err(db_err("record expected traffic"))?;
    Ok(())
}

pub(crate) fn expected_traffic_on(conn: &Connection) -> Result<Vec<(String, ExpectedTraffic)>> {
    let rows: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT partner, expected_traffic FROM liaison_partners \
             WHERE expected_traffic IS NOT NULL ORDER BY partner",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(db_err("read expected traffic"))?;
    rows.into_iter()
        .map(|(partner, text)| {
            let expected = ExpectedTraffic::from_stored(&partner, &text)?;
            Ok((partner, expected))
        })
        .collect()
}
