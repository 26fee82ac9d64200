//! What every instance shares about a partner: its announced pause.

use chrono::{DateTime, Utc};

use super::db::{Db, clean, get};
use crate::error::Result;
use crate::model::event::Actor;
use crate::store::Pause;
use crate::store::common::{from_millis, to_millis};

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
