//! What every instance shares about a partner: its announced pause.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::db::{db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::event::Actor;
use crate::store::Pause;

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
