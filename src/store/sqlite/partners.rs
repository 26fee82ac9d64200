//! What every instance shares about a partner: its announced pause, and
//! what its limits need in a claim.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::db::{db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::event::Actor;
use crate::store::Pause;
use crate::store::rules::limits::LimitState;

pub(crate) fn set_pause_on(
    conn: &Connection,
    partner: &str,
    pause: Option<&Pause>,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO liaison_partners (partner, paused_until, pause_reason, paused_by, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (partner) DO UPDATE SET paused_until = excluded.paused_until, \
           pause_reason = excluded.pause_reason, paused_by = excluded.paused_by, \
           updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            partner,
            pause.map(|p| to_millis(p.until)),
            pause.map(|p| p.reason.as_str()),
            pause.map(|p| p.actor.as_str()),
            to_millis(now),
        ])
    })
    .map_err(db_err("record partner pause"))?;
    Ok(())
}

pub(crate) fn pauses_on(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<Pause>> {
    conn.prepare_cached(
        "SELECT partner, paused_until, pause_reason, paused_by FROM liaison_partners \
         WHERE paused_until > ?1 ORDER BY partner",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![to_millis(now)], |row| {
            Ok(Pause {
                partner: row.get(0)?,
                until: from_millis(row.get(1)?),
                reason: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                actor: Actor::from_stored(row.get::<_, Option<String>>(3)?.unwrap_or_default()),
            })
        })?
        .collect()
    })
    .map_err(db_err("read partner pauses"))
}

/// A claim's read of the partner's limits. The claim's `BEGIN IMMEDIATE`
/// transaction already holds the database's write lock (against every
/// process on the file), so there is no row to lock: the row is created
/// when missing and read.
pub(crate) fn lock_limits_on(
    conn: &Connection,
    partner: &str,
    now: DateTime<Utc>,
) -> Result<LimitState> {
    let row: Option<(Option<i64>, Option<String>)> = conn
        .prepare_cached(
            "SELECT rate_tat_us, limit_waiters FROM liaison_partners WHERE partner = ?1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![partner], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(db_err("read partner limits"))?;
    if row.is_none() {
        conn.prepare_cached(
            "INSERT INTO liaison_partners (partner, updated_at) VALUES (?1, ?2) \
             ON CONFLICT (partner) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![partner, to_millis(now)]))
        .map_err(db_err("record partner"))?;
    }
    let in_flight: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM liaison_submissions \
             WHERE partner = ?1 AND state = 'in_flight' AND lease_expires_at > ?2",
        )
        .and_then(|mut stmt| stmt.query_row(params![partner, to_millis(now)], |row| row.get(0)))
        .map_err(db_err("count live leases"))?;
    let (rate_tat_us, waiters) = row.unwrap_or_default();
    Ok(LimitState {
        in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        rate_tat_us,
        waiters,
    })
}

/// Store who waits for a partner's slots.
pub(crate) fn write_waiters_on(
    conn: &Connection,
    partner: &str,
    waiters: Option<&str>,
) -> Result<()> {
    conn.prepare_cached("UPDATE liaison_partners SET limit_waiters = ?2 WHERE partner = ?1")
        .and_then(|mut stmt| stmt.execute(params![partner, waiters]))
        .map_err(db_err("record partner waiters"))
        .map(drop)
}

/// Store a partner's rate state.
pub(crate) fn write_rate_on(conn: &Connection, partner: &str, tat_us: i64) -> Result<()> {
    conn.prepare_cached("UPDATE liaison_partners SET rate_tat_us = ?2 WHERE partner = ?1")
        .and_then(|mut stmt| stmt.execute(params![partner, tat_us]))
        .map_err(db_err("record partner rate"))
        .map(drop)
}
