//! Inbound callbacks in PostgreSQL: stored, read and listed.
//!
//! Settling is the shared flow (`store::flow::settle`) over this store's
//! [`super::driver`]: it locks the callback's own row, then serializes with
//! every other settle of the same partner event id and of the same body
//! (advisory locks), and with the recording of the partner reference it
//! names; the submission's row is locked before anything is decided about
//! it. So the same callback delivered to several instances at once is
//! applied once, and a callback racing the acceptance it depends on is
//! either applied by its own settle or matched by the acceptance's
//! transaction.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::db::{Db, cid, clean, clean_opt, corrupt, get, sid, to_cid, to_sid};
use crate::error::{Error, Result};
use crate::model::callback::{CallbackId, Correlation, StoredCallback};
use crate::store::CallbackFilter;
use crate::store::common::{bounded, columns, dismissal, from_millis, to_millis};
use crate::store::rules::callbacks::CallbackRow;

pub(super) const CALLBACK_COLUMNS: &str = "id, partner, received_at, headers::text, body, body_hash, size, \
    event_id, reference, disposition, error, submission_id, processed_at, \
    dismissed_by, dismissed_at, dismissed_reason, dismissed_from";

pub(super) fn callback_from_row(row: &Row) -> Result<StoredCallback> {
    let headers: String = get(row, 3)?;
    let reference: Option<String> = get(row, 8)?;
    let disposition: String = get(row, 9)?;
    let submission: Option<Uuid> = get(row, 11)?;
    Ok(StoredCallback {
        id: to_cid(get(row, 0)?)?,
        partner: get(row, 1)?,
        received_at: from_millis(get(row, 2)?),
        headers: serde_json::from_str(&headers).map_err(|e| corrupt("headers", e))?,
        body: get(row, 4)?,
        body_hash: get(row, 5)?,
        size: u64::try_from(get::<i64>(row, 6)?).unwrap_or(0),
        event_id: get(row, 7)?,
        correlation: reference.as_deref().and_then(Correlation::from_stored),
        disposition: disposition.parse().map_err(|e| corrupt("disposition", e))?,
        error: get(row, 10)?,
        submission_id: submission.map(|s| to_sid("submission_id", s)).transpose()?,
        processed_at: get::<Option<i64>>(row, 12)?.map(from_millis),
        dismissal: dismissal(get(row, 13)?, get(row, 14)?, get(row, 15)?, get(row, 16)?)
            .map_err(|e| corrupt("dismissed_from", e))?,
    })
}

/// Write a callback's row whole, in one insert (see [`CallbackRow`]).
pub(super) async fn insert_on(db: &Db<'_>, row: &CallbackRow<'_>) -> Result<()> {
    let headers: Vec<(String, String)> = row
        .headers()
        .iter()
        .map(|(k, v)| (clean(k).into_owned(), clean(v).into_owned()))
        .collect();
    let headers = serde_json::to_string(&headers).map_err(|e| Error::Storage {
        operation: "encode callback headers",
        source: Box::new(e),
    })?;
    let new = row.new;
    db.execute(
        "INSERT INTO liaison_callbacks (id, partner, received_at, headers, body, body_hash, \
         size, event_id, reference, outcome, disposition, error, submission_id, processed_at, \
         match_until) \
         VALUES ($1, $2, $3, $4::text::json, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &cid(row.id),
            &clean(&new.partner).as_ref(),
            &to_millis(new.received_at),
            &headers,
            &row.body(),
            &clean(&new.body_hash).as_ref(),
            &i64::try_from(new.size).unwrap_or(i64::MAX),
            &row.event_id().map(clean).as_deref(),
            &row.reference().as_deref().map(clean).as_deref(),
            &row.outcome(),
            &row.disposition().as_str(),
            &clean_opt(bounded(row.error())),
            &row.submission().map(sid),
            &row.processed_at().map(to_millis),
            &row.match_until().map(to_millis),
        ],
        "store callback",
    )
    .await
    .map(drop)
}

pub(super) async fn callback_on(db: &Db<'_>, id: CallbackId) -> Result<StoredCallback> {
    db.query_opt(
        &format!("SELECT {CALLBACK_COLUMNS} FROM liaison_callbacks WHERE id = $1"),
        &[&cid(id)],
        "read callback",
    )
    .await?
    .as_ref()
    .map(callback_from_row)
    .transpose()?
    .ok_or_else(|| Error::not_found("callback", id))
}

pub(super) async fn list_on(db: &Db<'_>, filter: &CallbackFilter) -> Result<Vec<StoredCallback>> {
    let columns = columns(
        CALLBACK_COLUMNS,
        filter.without_body,
        "body,",
        "NULL::bytea,",
    );
    let mut sql = format!("SELECT {columns} FROM liaison_callbacks WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(Box::new(clean(partner).into_owned()));
        sql.push_str(&format!(" AND partner = ${}", args.len()));
    }
    if let Some(id) = filter.submission_id {
        args.push(Box::new(sid(id)));
        sql.push_str(&format!(" AND submission_id = ${}", args.len()));
    }
    if !filter.dispositions.is_empty() {
        let names: Vec<String> = filter
            .dispositions
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        args.push(Box::new(names));
        sql.push_str(&format!(" AND disposition = ANY(${})", args.len()));
    }
    if let Some(after) = filter.after {
        args.push(Box::new(cid(after)));
        sql.push_str(&format!(
            " AND seq {} (SELECT seq FROM liaison_callbacks WHERE id = ${})",
            filter.after_op(),
            args.len()
        ));
    }
    args.push(Box::new(
        i64::try_from(filter.effective_limit()).unwrap_or(100),
    ));
    sql.push_str(&format!(
        " ORDER BY seq {} LIMIT ${}",
        filter.order(),
        args.len()
    ));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    db.query(&sql, &params, "list callbacks")
        .await?
        .iter()
        .map(callback_from_row)
        .collect()
}
