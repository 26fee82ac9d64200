//! What every instance shares about a partner: its announced pause, and
//! what its limits need in a claim.

use chrono::{DateTime, Utc};

use super::db::{Db, clean, get};
use crate::error::Result;
use crate::model::event::Actor;
use crate::store::Pause;
use crate::store::common::{from_millis, to_millis};
use crate::store::rules::limits::LimitState;

pub(super) async fn set_pause_on(
    db: &Db<'_>,
    partner: &str,
    pause: Option<&Pause>,
    now: DateTime<Utc>,
) -> Result<()> {
    db.execute(
        "INSERT INTO liaison_partners (partner, paused_until, pause_reason, paused_by, updated_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (partner) DO UPDATE SET paused_until = excluded.paused_until, \
           pause_reason = excluded.pause_reason, paused_by = excluded.paused_by, \
           updated_at = excluded.updated_at",
        &[
            &partner,
            &pause.map(|p| to_millis(p.until)),
            &pause.map(|p| clean(&p.reason).into_owned()),
            &pause.map(|p| clean(p.actor.as_str()).into_owned()),
            &to_millis(now),
        ],
        "record partner pause",
    )
    .await
    .map(drop)
}

pub(super) async fn pauses_on(db: &Db<'_>, now: DateTime<Utc>) -> Result<Vec<Pause>> {
    db.query(
        "SELECT partner, paused_until, pause_reason, paused_by FROM liaison_partners \
         WHERE paused_until > $1 ORDER BY partner",
        &[&to_millis(now)],
        "read partner pauses",
    )
    .await?
    .iter()
    .map(|row| {
        Ok(Pause {
            partner: get(row, 0)?,
            until: from_millis(get(row, 1)?),
            reason: get::<Option<String>>(row, 2)?.unwrap_or_default(),
            actor: Actor::from_stored(get::<Option<String>>(row, 3)?.unwrap_or_default()),
        })
    })
    .collect()
}

/// A claim's read of the partner's limits: the partner's row locked
/// (created when missing) and read, then its live leases counted in a statement of
/// their own, so the count sees every claim of the partner that committed
/// while this one waited for the lock.
pub(super) async fn lock_limits_on(
    db: &Db<'_>,
    partner: &str,
    now: DateTime<Utc>,
) -> Result<LimitState> {
    const LOCK: &str =
        "SELECT rate_tat_us, limit_waiters FROM liaison_partners WHERE partner = $1 FOR UPDATE";
    let mut row = db.query_opt(LOCK, &[&partner], "lock partner").await?;
    if row.is_none() {
        db.execute(
            "INSERT INTO liaison_partners (partner, updated_at) VALUES ($1, $2) \
             ON CONFLICT (partner) DO NOTHING",
            &[&partner, &to_millis(now)],
            "record partner",
        )
        .await?;
        row = db.query_opt(LOCK, &[&partner], "lock partner").await?;
    }
    let (rate_tat_us, waiters): (Option<i64>, Option<String>) = match &row {
        Some(row) => (get(row, 0)?, get(row, 1)?),
        None => (None, None),
    };
    let in_flight: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM liaison_submissions \
             WHERE partner = $1 AND state = 'in_flight' AND lease_expires_at > $2",
            &[&partner, &to_millis(now)],
            "count live leases",
        )
        .await
        .and_then(|row| get(&row, 0))?;
    Ok(LimitState {
        in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
        rate_tat_us,
        waiters,
    })
}

/// Store who waits for a partner's slots (its row is locked).
pub(super) async fn write_waiters_on(
    db: &Db<'_>,
    partner: &str,
    waiters: Option<&str>,
) -> Result<()> {
    db.execute(
        "UPDATE liaison_partners SET limit_waiters = $2 WHERE partner = $1",
        &[&partner, &waiters],
        "record partner waiters",
    )
    .await
    .map(drop)
}

/// Store a partner's rate state (its row is locked).
pub(super) async fn write_rate_on(db: &Db<'_>, partner: &str, tat_us: i64) -> Result<()> {
    db.execute(
        "UPDATE liaison_partners SET rate_tat_us = $2 WHERE partner = $1",
        &[&partner, &tat_us],
        "record partner rate",
    )
    .await
    .map(drop)
}
