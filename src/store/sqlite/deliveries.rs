//! Result deliveries on SQLite: row mapping, the list, the partner switch.

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params};

use super::db::{corrupt, db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::delivery::Delivery;
use crate::store::DeliveryFilter;

/// The columns [`delivery_from_row`] reads, in its order.
pub(super) const DELIVERY_COLUMNS: &str = "id, submission_id, partner, final_state, state, \
    attempts, due_at, created_at, delivered_at, last_error";

/// How many columns [`DELIVERY_COLUMNS`] has.
pub(super) const DELIVERY_WIDTH: usize = 10;

pub(super) fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let text = |i: usize, column: &'static str| -> rusqlite::Result<String> {
        row.get::<_, String>(i).map_err(|e| corrupt(column, e))
    };
    Ok(Delivery {
        id: text(0, "id")?.parse().map_err(|e| corrupt("id", e))?,
        submission_id: text(1, "submission_id")?
            .parse()
            .map_err(|e| corrupt("submission_id", e))?,
        partner: row.get(2)?,
        final_state: text(3, "final_state")?
            .parse()
            .map_err(|e| corrupt("final_state", e))?,
        state: text(4, "state")?.parse().map_err(|e| corrupt("state", e))?,
        attempts: row.get(5)?,
        due_at: from_millis(row.get(6)?),
        created_at: from_millis(row.get(7)?),
        delivered_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
        last_error: row.get(9)?,
    })
}

pub(crate) fn list_on(conn: &Connection, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM liaison_deliveries WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(partner.clone().into());
        sql.push_str(&format!(" AND partner = ?{}", args.len()));
    }
    if let Some(state) = filter.state {
        args.push(state.as_str().to_owned().into());
        sql.push_str(&format!(" AND state = ?{}", args.len()));
    }
    if let Some(id) = filter.submission {
        args.push(id.to_string().into());
        sql.push_str(&format!(" AND submission_id = ?{}", args.len()));
    }
    if let Some(after) = filter.after {
        args.push(after.to_string().into());
        sql.push_str(&format!(
            " AND seq > (SELECT seq FROM liaison_deliveries WHERE id = ?{})",
            args.len()
        ));
    }
    args.push(filter.bounded_limit().into());
    sql.push_str(&format!(" ORDER BY seq LIMIT ?{}", args.len()));
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params_from_iter(args), delivery_from_row)?
                .collect()
        })
        .map_err(db_err("list deliveries"))
}

pub(crate) fn set_result_delivery_on(
    conn: &Connection,
    partner: &str,
    on: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO liaison_partners (partner, deliver_results, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (partner) DO UPDATE SET deliver_results = excluded.deliver_results, \
           updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| stmt.execute(params![partner, on, to_millis(now)]))
    .map_err(db_err("record result delivery"))?;
    Ok(())
}
