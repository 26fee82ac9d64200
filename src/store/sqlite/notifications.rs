//! Alert notifications in SQLite: the journal of (alert, event, sink) tries
//! and the sinks failing now. Every decision was made by
//! `rules::notify`; this reads and writes.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, params};

use super::db::{corrupt, db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::alert::AlertId;
use crate::model::notification::{AlertNotification, SinkFailure};
use crate::store::NotificationWrite;

const COLUMNS: &str = "id, alert_id, partner, event, sink, owner, state, attempts, last_error, \
    next_try_at, created_at, updated_at, delivered_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<AlertNotification> {
    let id: String = row.get(0)?;
    let alert_id: String = row.get(1)?;
    let event: String = row.get(3)?;
    let state: String = row.get(6)?;
    Ok(AlertNotification {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        alert_id: alert_id.parse().map_err(|e| corrupt("alert_id", e))?,
        partner: row.get(2)?,
        event: event.parse().map_err(|e| corrupt("event", e))?,
        sink: row.get(4)?,
        owner: row.get(5)?,
        state: state.parse().map_err(|e| corrupt("state", e))?,
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        next_try_at: row.get::<_, Option<i64>>(9)?.map(from_millis),
        created_at: from_millis(row.get(10)?),
        updated_at: from_millis(row.get(11)?),
        delivered_at: row.get::<_, Option<i64>>(12)?.map(from_millis),
    })
}

fn select(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    operation: &'static str,
) -> Result<Vec<AlertNotification>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db_err(operation))?;
    let rows = stmt
        .query_map(params, from_row)
        .map_err(db_err(operation))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err(operation))
}

pub(crate) fn record_on(conn: &Connection, rows: &[AlertNotification]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "INSERT INTO liaison_alert_notifications ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ))
        .map_err(db_err("record notifications"))?;
    for n in rows {
        stmt.execute(params![
            n.id.to_string(),
            n.alert_id.to_string(),
            n.partner,
            n.event.as_str(),
            n.sink,
            n.owner,
            n.state.as_str(),
            n.attempts,
            n.last_error,
            n.next_try_at.map(to_millis),
            to_millis(n.created_at),
            to_millis(n.updated_at),
            n.delivered_at.map(to_millis),
        ])
        .map_err(db_err("record notifications"))?;
    }
    Ok(())
}

pub(crate) fn claim_on(
    conn: &Connection,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<AlertNotification>> {
    // One writer: nothing else claims between the select and the update.
    select(
        conn,
        &format!(
            "UPDATE liaison_alert_notifications \
             SET attempts = attempts + 1, next_try_at = ?2, updated_at = ?1 \
             WHERE seq IN (SELECT seq FROM liaison_alert_notifications \
                 WHERE state = 'pending' AND next_try_at <= ?1 \
                 ORDER BY next_try_at LIMIT ?3) \
             RETURNING {COLUMNS}"
        ),
        params![
            to_millis(now),
            to_millis(until),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        "claim notifications",
    )
}

pub(crate) fn finish_on(conn: &Connection, w: &NotificationWrite) -> Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE liaison_alert_notifications \
             SET state = ?3, next_try_at = ?4, last_error = ?5, updated_at = ?6, \
                 delivered_at = CASE WHEN ?3 = 'delivered' THEN ?6 ELSE delivered_at END \
             WHERE id = ?1 AND attempts = ?2 AND state = 'pending'",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                w.id.to_string(),
                w.attempt,
                w.state.as_str(),
                w.next_try_at.map(to_millis),
                w.last_error,
                to_millis(w.at),
            ])
        })
        .map_err(db_err("finish notification"))?;
    if changed == 0 {
        return Ok(false);
    }
    if w.keep_status {
        return Ok(true);
    }
    let r = &w.route;
    match &w.failing {
        Some(error) => conn
            .prepare_cached(
                "INSERT INTO liaison_alert_sink_failures \
                 (partner, owner, sink, since, error, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?4) \
                 ON CONFLICT (partner, owner, sink) \
                 DO UPDATE SET error = excluded.error, updated_at = excluded.updated_at",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![r.partner, r.owner, r.sink, to_millis(w.at), error])
            }),
        None => conn
            .prepare_cached(
                "DELETE FROM liaison_alert_sink_failures \
                 WHERE partner = ?1 AND owner = ?2 AND sink = ?3",
            )
            .and_then(|mut stmt| stmt.execute(params![r.partner, r.owner, r.sink])),
    }
    .map_err(db_err("record sink status"))?;
    Ok(true)
}

pub(crate) fn of_alert_on(conn: &Connection, id: AlertId) -> Result<Vec<AlertNotification>> {
    select(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM liaison_alert_notifications WHERE alert_id = ?1 ORDER BY seq"
        ),
        params![id.to_string()],
        "list alert notifications",
    )
}

pub(crate) fn pending_on(conn: &Connection, limit: usize) -> Result<Vec<AlertNotification>> {
    select(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM liaison_alert_notifications \
             WHERE state = 'pending' ORDER BY next_try_at LIMIT ?1"
        ),
        params![i64::try_from(limit).unwrap_or(i64::MAX)],
        "list pending notifications",
    )
}

pub(crate) fn failures_on(conn: &Connection) -> Result<Vec<SinkFailure>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT partner, owner, sink, error, since FROM liaison_alert_sink_failures \
             ORDER BY partner, owner, sink",
        )
        .map_err(db_err("list sink failures"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok(SinkFailure {
                partner: row.get(0)?,
                owner: row.get(1)?,
                sink: row.get(2)?,
                error: row.get(3)?,
                since: from_millis(row.get(4)?),
            })
        })
        .map_err(db_err("list sink failures"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list sink failures"))
}
