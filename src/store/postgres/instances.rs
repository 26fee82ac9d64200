//! Engine instances and what they record about their partners on
//! PostgreSQL: beats, stops, pruning, expected traffic. Every instance
//! sharing the database writes its own row; none locks another's.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::db::{Db, clean, get};
use crate::error::Result;
use crate::model::traffic::ExpectedTraffic;
use crate::store::Instance;
use crate::store::common::{duration_ms, from_millis, to_millis};

pub(super) async fn beat_on(db: &Db<'_>, i: &Instance) -> Result<()> {
    db.execute(
        "INSERT INTO liaison_instances (id, host, pid, version, started_at, partners, \
           beat_interval_ms, last_beat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET partners = excluded.partners, \
           beat_interval_ms = excluded.beat_interval_ms, last_beat_at = excluded.last_beat_at \
         WHERE liaison_instances.stopped_at IS NULL",
        &[
            &clean(&i.id),
            &clean(&i.host),
            &i64::from(i.pid),
            &clean(&i.version),
            &to_millis(i.started_at),
            &clean(&i.partners_json()),
            &duration_ms(i.beat_interval),
            &to_millis(i.last_beat_at),
        ],
        "record an instance's beat",
    )
    .await
    .map(drop)
}

pub(super) async fn stop_on(db: &Db<'_>, id: &str, at: DateTime<Utc>) -> Result<()> {
    db.execute(
        "UPDATE liaison_instances SET stopped_at = $2, last_beat_at = $2 \
         WHERE id = $1 AND stopped_at IS NULL",
        &[&clean(id), &to_millis(at)],
        "record an instance's stop",
    )
    .await
    .map(drop)
}

pub(super) async fn instances_on(db: &Db<'_>) -> Result<Vec<Instance>> {
    db.query(
        "SELECT id, host, pid, version, started_at, partners, beat_interval_ms, \
           last_beat_at, stopped_at FROM liaison_instances \
         ORDER BY last_beat_at DESC, id COLLATE \"C\"",
        &[],
        "read instances",
    )
    .await?
    .iter()
    .map(|row| {
        let pid: i64 = get(row, 2)?;
        let interval: i64 = get(row, 6)?;
        Ok(Instance {
            id: get(row, 0)?,
            host: get(row, 1)?,
            pid: u32::try_from(pid).unwrap_or(0),
            version: get(row, 3)?,
            started_at: from_millis(get(row, 4)?),
            partners: Instance::partners_from_json(&get::<String>(row, 5)?)?,
            beat_interval: Duration::from_millis(interval.max(0).unsigned_abs()),
            last_beat_at: from_millis(get(row, 7)?),
            stopped_at: get::<Option<i64>>(row, 8)?.map(from_millis),
        })
    })
    .collect()
}

pub(super) async fn prune_on(
    db: &Db<'_>,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let before = to_millis(before);
    // Keep, per partner, the last beat of the instances about to go.
    db.execute(
        "INSERT INTO liaison_partners (partner, last_served_at, updated_at) \
         SELECT j.partner, MAX(i.last_beat_at), $2 \
         FROM liaison_instances i \
           CROSS JOIN LATERAL json_array_elements_text(i.partners::json) AS j(partner) \
         WHERE i.last_beat_at < $1 GROUP BY j.partner \
         ON CONFLICT (partner) DO UPDATE SET last_served_at = \
           GREATEST(liaison_partners.last_served_at, excluded.last_served_at)",
        &[&before, &to_millis(now)],
        "keep the last beat of pruned instances",
    )
    .await?;
    db.execute(
        "DELETE FROM liaison_instances WHERE last_beat_at < $1",
        &[&before],
        "prune instances",
    )
    .await
}

pub(super) async fn set_expected_traffic_on(
    db: &Db<'_>,
    partner: &str,
    expected: Option<&ExpectedTraffic>,
    now: DateTime<Utc>,
) -> Result<()> {
    db.execute(
        "INSERT INTO liaison_partners (partner, expected_traffic, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (partner) DO UPDATE SET expected_traffic = excluded.expected_traffic, \
           updated_at = excluded.updated_at",
        &[
            &partner,
            &expected.map(|e| clean(&e.to_stored()).into_owned()),
            &to_millis(now),
        ],
        "record expected traffic",
    )
    .await
    .map(drop)
}

pub(super) async fn expected_traffic_on(db: &Db<'_>) -> Result<Vec<(String, ExpectedTraffic)>> {
    db.query(
        "SELECT partner, expected_traffic FROM liaison_partners \
         WHERE expected_traffic IS NOT NULL ORDER BY partner COLLATE \"C\"",
        &[],
        "read expected traffic",
    )
    .await?
    .iter()
    .map(|row| {
        let partner: String = get(row, 0)?;
        let expected = ExpectedTraffic::from_stored(&partner, &get::<String>(row, 1)?)?;
        Ok((partner, expected))
    })
    .collect()
}
