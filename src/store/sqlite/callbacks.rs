//! Inbound callbacks in SQLite: stored, read and listed. Settling (and
//! storing with the settlement in one transaction) is the shared flow
//! (`store::flow::settle`, `record_and_settle`) over [`super::driver::Sql`].

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::{corrupt, db_err, from_millis, to_millis};
use crate::error::{Error, Result};
use crate::model::callback::{CallbackId, Correlation, StoredCallback};
use crate::store::CallbackFilter;
use crate::store::common::{bounded, columns, dismissal};
use crate::store::rules::callbacks::CallbackRow;

pub(super) const CALLBACK_COLUMNS: &str = "id, partner, received_at, headers, body, body_hash, size, \
    event_id, reference, disposition, error, submission_id, processed_at, \
    dismissed_by, dismissed_at, dismissed_reason, dismissed_from";

pub(super) fn callback_from_row(row: &Row<'_>) -> rusqlite::Result<StoredCallback> {
    let id: String = row.get(0)?;
    let headers: String = row.get(3)?;
    let reference: Option<String> = row.get(8)?;
    let disposition: String = row.get(9)?;
    let submission: Option<String> = row.get(11)?;
    Ok(StoredCallback {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        partner: row.get(1)?,
        received_at: from_millis(row.get(2)?),
        headers: serde_json::from_str(&headers).map_err(|e| corrupt("headers", e))?,
        body: row.get(4)?,
        body_hash: row.get(5)?,
        size: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
        event_id: row.get(7)?,
        correlation: reference.as_deref().and_then(Correlation::from_stored),
        disposition: disposition.parse().map_err(|e| corrupt("disposition", e))?,
        error: row.get(10)?,
        submission_id: submission
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| corrupt("submission_id", e))?,
        processed_at: row.get::<_, Option<i64>>(12)?.map(from_millis),
        dismissal: dismissal(row.get(13)?, row.get(14)?, row.get(15)?, row.get(16)?)
            .map_err(|e| corrupt("dismissed_from", e))?,
    })
}

/// Write a callback's row whole, in one insert (see [`CallbackRow`]).
pub(crate) fn insert_on(conn: &Connection, row: &CallbackRow<'_>) -> Result<()> {
    let headers = serde_json::to_string(row.headers()).map_err(|e| Error::Storage {
        operation: "encode callback headers",
        source: Box::new(e),
    })?;
    let new = row.new;
    conn.prepare_cached(
        "INSERT OR FAIL INTO liaison_callbacks (id, partner, received_at, headers, body, \
         body_hash, size, event_id, reference, outcome, disposition, error, submission_id, \
         processed_at, match_until) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            row.id.to_string(),
            new.partner,
            to_millis(new.received_at),
            headers,
            row.body(),
            new.body_hash,
            i64::try_from(new.size).unwrap_or(i64::MAX),
            row.event_id(),
            row.reference(),
            row.outcome(),
            row.disposition().as_str(),
            bounded(row.error()),
            row.submission().map(|s| s.to_string()),
            row.processed_at().map(to_millis),
            row.match_until().map(to_millis),
        ])
    })
    .map_err(db_err("store callback"))?;
    Ok(())
}

pub(crate) fn callback_on(conn: &Connection, id: CallbackId) -> Result<StoredCallback> {
    conn.prepare_cached(&format!(
        "SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = ?1"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![id.to_string()], callback_from_row)
            .optional()
    })
    .map_err(db_err("read callback"))?
    .ok_or_else(|| Error::not_found("callback", id))
}

pub(crate) fn list_on(conn: &Connection, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
    // Filtered by disposition (the quarantine): read through the disposition
    // index whatever statistics say. Averages per disposition hide that the
    // quarantined ones are rare, and a walk of every callback in `seq` order
    // until LIMIT of them match would then cover the whole history.
    let index = if !filter.dispositions.is_empty() && filter.submission_id.is_none() {
        " INDEXED BY liaison_callbacks_disposition"
    } else {
        ""
    };
    let columns = columns(CALLBACK_COLUMNS, filter.without_body, "body,", "NULL,");
    let mut sql = format!("SELECT {columns} FROM liaison_callbacks{index} WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(partner.clone().into());
        sql.push_str(&format!(" AND partner = ?{}", args.len()));
    }
    if let Some(id) = filter.submission_id {
        args.push(id.to_string().into());
        sql.push_str(&format!(" AND submission_id = ?{}", args.len()));
    }
    if !filter.dispositions.is_empty() {
        let mut marks = Vec::new();
        for d in &filter.dispositions {
            args.push(d.as_str().to_owned().into());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND disposition IN ({})", marks.join(", ")));
    }
    if let Some(after) = filter.after {
        args.push(after.to_string().into());
        sql.push_str(&format!(
            " AND seq {} (SELECT seq FROM liaison_callbacks WHERE id = ?{})",
            filter.after_op(),
            args.len()
        ));
    }
    args.push(
        i64::try_from(filter.effective_limit())
            .unwrap_or(100)
            .into(),
    );
    sql.push_str(&format!(
        " ORDER BY seq {} LIMIT ?{}",
        filter.order(),
        args.len()
    ));
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db_err("list callbacks"))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), callback_from_row)
        .map_err(db_err("list callbacks"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err("list callbacks"))
}
