//! Alerts in SQLite: one open alert per (partner, class), by a unique index.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::{corrupt, db_err, from_millis, to_millis};
use crate::error::{Error, Result};
use crate::model::alert::{Alert, AlertId};
use crate::model::event::Actor;
use crate::store::NewAlert;

const ALERT_COLUMNS: &str = "id, partner, class, owner, opened_at, last_notified_at, notify_count, \
    acknowledged_by, acknowledged_at, resolved_at, expected, details";

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<Alert> {
    let id: String = row.get(0)?;
    let class: String = row.get(2)?;
    let owner: String = row.get(3)?;
    Ok(Alert {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        partner: row.get(1)?,
        class: class.parse().map_err(|e| corrupt("class", e))?,
        owner: serde_json::from_str(&owner).map_err(|e| corrupt("owner", e))?,
        opened_at: from_millis(row.get(4)?),
        last_notified_at: row.get::<_, Option<i64>>(5)?.map(from_millis),
        notify_count: row.get(6)?,
        acknowledged_by: row.get::<_, Option<String>>(7)?.map(Actor::from_stored),
        acknowledged_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
        resolved_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
        expected: row.get(10)?,
        details: row.get::<_, Option<String>>(11)?.unwrap_or_default(),
    })
}

pub(crate) fn get_alert(conn: &Connection, id: AlertId) -> Result<Alert> {
    conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM liaison_alerts WHERE id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![id.to_string()], alert_from_row)
            .optional()
    })
    .map_err(db_err("read alert"))?
    .ok_or_else(|| Error::not_found("alert", id))
}

pub(crate) fn open_alert_on(conn: &Connection, new: &NewAlert) -> Result<(Alert, bool)> {
    let open: Option<Alert> = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM liaison_alerts \
             WHERE partner = ?1 AND class = ?2 AND resolved_at IS NULL"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![new.partner, new.class.as_str()], alert_from_row)
                .optional()
        })
        .map_err(db_err("read open alert"))?;
    if let Some(alert) = open {
        conn.prepare_cached("UPDATE liaison_alerts SET details = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![alert.id.to_string(), new.details]))
            .map_err(db_err("update alert"))?;
        return Ok((get_alert(conn, alert.id)?, false));
    }
    let id = AlertId::new();
    let owner = serde_json::to_string(&new.owner).map_err(|e| Error::Storage {
        operation: "encode alert owner",
        source: Box::new(e),
    })?;
    conn.prepare_cached(
        "INSERT INTO liaison_alerts (id, partner, class, owner, opened_at, expected, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id.to_string(),
            new.partner,
            new.class.as_str(),
            owner,
            to_millis(new.at),
            new.expected,
            new.details,
        ])
    })
    .map_err(db_err("open alert"))?;
    Ok((get_alert(conn, id)?, true))
}

pub(crate) fn notified_on(conn: &Connection, id: AlertId, at: DateTime<Utc>) -> Result<()> {
    // SET reads the row as it was: a round is counted once, the latest kept.
    conn.prepare_cached(
        "UPDATE liaison_alerts SET \
         notify_count = notify_count + CASE WHEN last_notified_at IS ?2 THEN 0 ELSE 1 END, \
         last_notified_at = max(coalesce(last_notified_at, ?2), ?2) WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![id.to_string(), to_millis(at)]))
    .map_err(db_err("record alert notification"))?;
    Ok(())
}

pub(crate) fn resolve_on(conn: &Connection, id: AlertId, at: DateTime<Utc>) -> Result<Alert> {
    conn.prepare_cached(
        "UPDATE liaison_alerts SET resolved_at = ?2 WHERE id = ?1 AND resolved_at IS NULL",
    )
    .and_then(|mut stmt| stmt.execute(params![id.to_string(), to_millis(at)]))
    .map_err(db_err("resolve alert"))?;
    get_alert(conn, id)
}

pub(crate) fn acknowledge_on(
    conn: &Connection,
    id: AlertId,
    actor: &Actor,
    at: DateTime<Utc>,
) -> Result<Alert> {
    let alert = get_alert(conn, id)?;
    if !alert.is_open() {
        return Err(Error::invalid(
            "alert",
            format!("alert {id} is already resolved"),
        ));
    }
    conn.prepare_cached(
        "UPDATE liaison_alerts SET acknowledged_by = ?2, acknowledged_at = ?3 WHERE id = ?1",
    )
    .and_then(|mut stmt| stmt.execute(params![id.to_string(), actor.as_str(), to_millis(at)]))
    .map_err(db_err("acknowledge alert"))?;
    get_alert(conn, id)
}

pub(crate) fn alerts_on(conn: &Connection, open_only: bool, limit: usize) -> Result<Vec<Alert>> {
    let filter = if open_only {
        "WHERE resolved_at IS NULL"
    } else {
        ""
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM liaison_alerts {filter} ORDER BY seq DESC LIMIT ?1"
        ))
        .map_err(db_err("list alerts"))?;
    let rows = stmt
        .query_map(
            params![i64::try_from(limit).unwrap_or(i64::MAX)],
            alert_from_row,
        )
        .map_err(db_err("list alerts"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list alerts"))
}
