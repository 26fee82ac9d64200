//! Alerts in PostgreSQL: one open alert per (partner, class), decided by the
//! partial unique index `liaison_alerts_open` whatever the number of
//! instances. Opening inserts and lets the index refuse a second open alert
//! (`ON CONFLICT DO NOTHING`), then reads the holder: never read-then-write.
//!
//! `details` is a JSON column (as in migration 0001); the text is stored as a
//! JSON string and read back as the same text.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::db::{Db, aid, clean, corrupt, get, to_aid};
use crate::error::{Error, Result};
use crate::model::alert::{Alert, AlertId};
use crate::model::event::Actor;
use crate::store::NewAlert;
use crate::store::common::{from_millis, to_millis};

/// How often opening retries when the open alert it ran into was resolved
/// before it could be read.
const OPEN_ROUNDS: usize = 8;

const ALERT_COLUMNS: &str = "id, partner, class, owner::text, opened_at, last_notified_at, \
    notify_count, acknowledged_by, acknowledged_at, resolved_at, expected, details #>> '{}'";

fn alert_from_row(row: &Row) -> Result<Alert> {
    let class: String = get(row, 2)?;
    let owner: Option<String> = get(row, 3)?;
    let notify_count: i32 = get(row, 6)?;
    Ok(Alert {
        id: to_aid(get(row, 0)?)?,
        partner: get(row, 1)?,
        class: class.parse().map_err(|e| corrupt("class", e))?,
        owner: serde_json::from_str(owner.as_deref().unwrap_or("null"))
            .map_err(|e| corrupt("owner", e))?,
        opened_at: from_millis(get(row, 4)?),
        last_notified_at: get::<Option<i64>>(row, 5)?.map(from_millis),
        notify_count: u32::try_from(notify_count).map_err(|e| corrupt("notify_count", e))?,
        acknowledged_by: get::<Option<String>>(row, 7)?.map(Actor::from_stored),
        acknowledged_at: get::<Option<i64>>(row, 8)?.map(from_millis),
        resolved_at: get::<Option<i64>>(row, 9)?.map(from_millis),
        expected: get(row, 10)?,
        details: get::<Option<String>>(row, 11)?.unwrap_or_default(),
    })
}

pub(super) async fn get_alert(db: &Db<'_>, id: AlertId, lock: bool) -> Result<Alert> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = db
        .query_opt(
            &format!("SELECT {ALERT_COLUMNS} FROM liaison_alerts WHERE id = $1{lock}"),
            &[&aid(id)],
            "read alert",
        )
        .await?
        .ok_or_else(|| Error::not_found("alert", id))?;
    alert_from_row(&row)
}

pub(super) async fn open_alert_on(db: &Db<'_>, new: &NewAlert) -> Result<(Alert, bool)> {
    let owner = serde_json::to_string(&new.owner).map_err(|e| Error::Storage {
        operation: "encode alert owner",
        source: Box::new(e),
    })?;
    let details = clean(&new.details);
    for _ in 0..OPEN_ROUNDS {
        // An open alert being opened by another transaction makes this
        // insert wait for that one's commit, then do nothing.
        let inserted = db
            .query_opt(
                &format!(
                    "INSERT INTO liaison_alerts \
                     (id, partner, class, owner, opened_at, expected, details) \
                     VALUES ($1, $2, $3, $4::text::json, $5, $6, to_json($7::text)) \
                     ON CONFLICT (partner, class) WHERE resolved_at IS NULL DO NOTHING \
                     RETURNING {ALERT_COLUMNS}"
                ),
                &[
                    &aid(AlertId::new()),
                    &new.partner,
                    &new.class.as_str(),
                    &owner,
                    &to_millis(new.at),
                    &new.expected,
                    &details.as_ref(),
                ],
                "open alert",
            )
            .await?;
        if let Some(row) = inserted {
            return Ok((alert_from_row(&row)?, true));
        }
        let updated = db
            .query_opt(
                &format!(
                    "UPDATE liaison_alerts SET details = to_json($3::text) \
                     WHERE partner = $1 AND class = $2 AND resolved_at IS NULL \
                     RETURNING {ALERT_COLUMNS}"
                ),
                &[&new.partner, &new.class.as_str(), &details.as_ref()],
                "update alert",
            )
            .await?;
        if let Some(row) = updated {
            return Ok((alert_from_row(&row)?, false));
        }
        // Resolved between the two statements: the slot is free again.
    }
    Err(Error::Busy {
        operation: "open alert",
        source: "the open alert kept being resolved; retry".into(),
    })
}

pub(super) async fn notified_on(db: &Db<'_>, id: AlertId, at: DateTime<Utc>) -> Result<()> {
    db.execute(
        // SET reads the row as it was: a round is counted once, the latest kept.
        "UPDATE liaison_alerts SET \
         notify_count = notify_count + CASE WHEN last_notified_at IS NOT DISTINCT FROM $2 \
             THEN 0 ELSE 1 END, \
         last_notified_at = GREATEST(coalesce(last_notified_at, $2), $2) WHERE id = $1",
        &[&aid(id), &to_millis(at)],
        "record alert notification",
    )
    .await
    .map(drop)
}

pub(super) async fn resolve_on(db: &Db<'_>, id: AlertId, at: DateTime<Utc>) -> Result<Alert> {
    let resolved = db
        .query_opt(
            &format!(
                "UPDATE liaison_alerts SET resolved_at = $2 \
                 WHERE id = $1 AND resolved_at IS NULL RETURNING {ALERT_COLUMNS}"
            ),
            &[&aid(id), &to_millis(at)],
            "resolve alert",
        )
        .await?;
    match resolved {
        Some(row) => alert_from_row(&row),
        // Already resolved (the first resolution stands), or unknown.
        None => get_alert(db, id, false).await,
    }
}

pub(super) async fn acknowledge_on(
    db: &Db<'_>,
    id: AlertId,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<Alert> {
    // Locked, so a resolution cannot slip in between the check and the write.
    let alert = get_alert(db, id, true).await?;
    if !alert.is_open() {
        return Err(Error::invalid(
            "alert",
            format!("alert {id} is already resolved"),
        ));
    }
    let row = db
        .query_one(
            &format!(
                "UPDATE liaison_alerts SET acknowledged_by = $2, acknowledged_at = $3 \
                 WHERE id = $1 RETURNING {ALERT_COLUMNS}"
            ),
            &[&aid(id), &clean(actor.as_str()).as_ref(), &to_millis(at)],
            "acknowledge alert",
        )
        .await?;
    alert_from_row(&row)
}

pub(super) async fn alerts_on(db: &Db<'_>, open_only: bool, limit: usize) -> Result<Vec<Alert>> {
    let filter = if open_only {
        "WHERE resolved_at IS NULL"
    } else {
        ""
    };
    db.query(
        &format!("SELECT {ALERT_COLUMNS} FROM liaison_alerts {filter} ORDER BY seq DESC LIMIT $1"),
        &[&i64::try_from(limit).unwrap_or(i64::MAX)],
        "list alerts",
    )
    .await?
    .iter()
    .map(alert_from_row)
    .collect()
}
