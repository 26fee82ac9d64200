//! Alert notifications in PostgreSQL: the journal of (alert, event, sink)
//! tries and the sinks failing now. Every decision was made by
//! `rules::notify`; this reads, locks and writes. Claims skip rows another
//! instance holds (`FOR UPDATE SKIP LOCKED`), so a notification is tried by
//! one instance at a time.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::db::{Db, aid, clean, corrupt, get, int, to_aid};
use crate::error::Result;
use crate::model::alert::AlertId;
use crate::model::notification::{AlertNotification, NotificationId, SinkFailure};
use crate::store::NotificationWrite;
use crate::store::common::{from_millis, to_millis};

const COLUMNS: &str = "id, alert_id, partner, event, sink, owner, state, attempts, last_error, \
    next_try_at, created_at, updated_at, delivered_at";

fn from_row(row: &Row) -> Result<AlertNotification> {
    let event: String = get(row, 3)?;
    let state: String = get(row, 6)?;
    let attempts: i32 = get(row, 7)?;
    Ok(AlertNotification {
        id: NotificationId::from_uuid(get(row, 0)?),
        alert_id: to_aid(get(row, 1)?)?,
        partner: get(row, 2)?,
        event: event.parse().map_err(|e| corrupt("event", e))?,
        sink: get(row, 4)?,
        owner: get(row, 5)?,
        state: state.parse().map_err(|e| corrupt("state", e))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        last_error: get(row, 8)?,
        next_try_at: get::<Option<i64>>(row, 9)?.map(from_millis),
        created_at: from_millis(get(row, 10)?),
        updated_at: from_millis(get(row, 11)?),
        delivered_at: get::<Option<i64>>(row, 12)?.map(from_millis),
    })
}

pub(super) async fn record_on(db: &Db<'_>, rows: &[AlertNotification]) -> Result<()> {
    for n in rows {
        db.execute(
            &format!(
                "INSERT INTO liaison_alert_notifications ({COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
            ),
            &[
                &n.id.uuid(),
                &aid(n.alert_id),
                &clean(&n.partner).as_ref(),
                &n.event.as_str(),
                &clean(&n.sink).as_ref(),
                &clean(&n.owner).as_ref(),
                &n.state.as_str(),
                &int(n.attempts),
                &n.last_error.as_deref().map(clean).as_deref(),
                &n.next_try_at.map(to_millis),
                &to_millis(n.created_at),
                &to_millis(n.updated_at),
                &n.delivered_at.map(to_millis),
            ],
            "record notifications",
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn claim_on(
    db: &Db<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<AlertNotification>> {
    db.query(
        &format!(
            "UPDATE liaison_alert_notifications \
             SET attempts = attempts + 1, next_try_at = $2, updated_at = $1 \
             WHERE seq IN (SELECT seq FROM liaison_alert_notifications \
                 WHERE state = 'pending' AND next_try_at <= $1 \
                 ORDER BY next_try_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        ),
        &[
            &to_millis(now),
            &to_millis(until),
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
        "claim notifications",
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn finish_on(db: &Db<'_>, w: &NotificationWrite) -> Result<bool> {
    let changed = db
        .execute(
            "UPDATE liaison_alert_notifications \
             SET state = $3, next_try_at = $4, last_error = $5, updated_at = $6, \
                 delivered_at = CASE WHEN $3 = 'delivered' THEN $6 ELSE delivered_at END \
             WHERE id = $1 AND attempts = $2 AND state = 'pending'",
            &[
                &w.id.uuid(),
                &int(w.attempt),
                &w.state.as_str(),
                &w.next_try_at.map(to_millis),
                &w.last_error.as_deref().map(clean).as_deref(),
                &to_millis(w.at),
            ],
            "finish notification",
        )
        .await?;
    if changed == 0 {
        return Ok(false);
    }
    if w.keep_status {
        return Ok(true);
    }
    let r = &w.route;
    let (partner, owner, sink) = (clean(&r.partner), clean(&r.owner), clean(&r.sink));
    match &w.failing {
        Some(error) => {
            db.execute(
                "INSERT INTO liaison_alert_sink_failures \
                 (partner, owner, sink, since, error, updated_at) VALUES ($1, $2, $3, $4, $5, $4) \
                 ON CONFLICT (partner, owner, sink) \
                 DO UPDATE SET error = EXCLUDED.error, updated_at = EXCLUDED.updated_at",
                &[
                    &partner.as_ref(),
                    &owner.as_ref(),
                    &sink.as_ref(),
                    &to_millis(w.at),
                    &clean(error).as_ref(),
                ],
                "record sink status",
            )
            .await?
        }
        None => {
            db.execute(
                "DELETE FROM liaison_alert_sink_failures \
                 WHERE partner = $1 AND owner = $2 AND sink = $3",
                &[&partner.as_ref(), &owner.as_ref(), &sink.as_ref()],
                "record sink status",
            )
            .await?
        }
    };
    Ok(true)
}

pub(super) async fn of_alert_on(db: &Db<'_>, id: AlertId) -> Result<Vec<AlertNotification>> {
    db.query(
        &format!(
            "SELECT {COLUMNS} FROM liaison_alert_notifications WHERE alert_id = $1 ORDER BY seq"
        ),
        &[&aid(id)],
        "list alert notifications",
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn pending_on(db: &Db<'_>, limit: usize) -> Result<Vec<AlertNotification>> {
    db.query(
        &format!(
            "SELECT {COLUMNS} FROM liaison_alert_notifications \
             WHERE state = 'pending' ORDER BY next_try_at LIMIT $1"
        ),
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        "list pending notifications",
    )
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) async fn failures_on(db: &Db<'_>) -> Result<Vec<SinkFailure>> {
    db.query(
        "SELECT partner, owner, sink, error, since FROM liaison_alert_sink_failures \
         ORDER BY partner, owner, sink",
        &[],
        "list sink failures",
    )
    .await?
    .iter()
    .map(|row| {
        Ok(SinkFailure {
            partner: get(row, 0)?,
            owner: get(row, 1)?,
            sink: get(row, 2)?,
            error: get(row, 3)?,
            since: from_millis(get(row, 4)?),
        })
    })
    .collect()
}
