//! Result deliveries on PostgreSQL: row mapping, the list, the partner switch.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::db::{Db, corrupt, get, sid};
use crate::error::Result;
use crate::model::delivery::{Delivery, DeliveryId};
use crate::store::DeliveryFilter;
use crate::store::common::{from_millis, to_millis};

/// The columns [`delivery_from_row`] reads, in its order.
pub(super) const DELIVERY_COLUMNS: &str = "id, submission_id, partner, final_state, state, \
    attempts, due_at, created_at, delivered_at, last_error";

/// How many columns [`DELIVERY_COLUMNS`] has.
pub(super) const DELIVERY_WIDTH: usize = 10;

pub(super) fn delivery_from_row(row: &Row) -> Result<Delivery> {
    let final_state: String = get(row, 3)?;
    let state: String = get(row, 4)?;
    let attempts: i32 = get(row, 5)?;
    Ok(Delivery {
        id: DeliveryId::from_uuid(get::<Uuid>(row, 0)?),
        submission_id: crate::model::submission::SubmissionId::from_uuid(get::<Uuid>(row, 1)?),
        partner: get(row, 2)?,
        final_state: final_state.parse().map_err(|e| corrupt("final_state", e))?,
        state: state.parse().map_err(|e| corrupt("state", e))?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        due_at: from_millis(get(row, 6)?),
        created_at: from_millis(get(row, 7)?),
        delivered_at: get::<Option<i64>>(row, 8)?.map(from_millis),
        last_error: get(row, 9)?,
    })
}

pub(super) async fn list_on(db: &Db<'_>, filter: &DeliveryFilter) -> Result<Vec<Delivery>> {
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM liaison_deliveries WHERE TRUE");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(Box::new(partner.clone()));
        sql.push_str(&format!(" AND partner = ${}", args.len()));
    }
    if let Some(state) = filter.state {
        args.push(Box::new(state.as_str()));
        sql.push_str(&format!(" AND state = ${}", args.len()));
    }
    if let Some(id) = filter.submission {
        args.push(Box::new(sid(id)));
        sql.push_str(&format!(" AND submission_id = ${}", args.len()));
    }
    if let Some(after) = filter.after {
        args.push(Box::new(after.uuid()));
        sql.push_str(&format!(
            " AND seq > (SELECT seq FROM liaison_deliveries WHERE id = ${})",
            args.len()
        ));
    }
    args.push(Box::new(filter.bounded_limit()));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    db.query(&sql, &params, "list deliveries")
        .await?
        .iter()
        .map(delivery_from_row)
        .collect()
}

pub(super) async fn set_result_delivery_on(
    db: &Db<'_>,
    partner: &str,
    on: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    db.execute(
        "INSERT INTO liaison_partners (partner, deliver_results, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (partner) DO UPDATE SET deliver_results = excluded.deliver_results, \
           updated_at = excluded.updated_at",
        &[&partner, &on, &to_millis(now)],
        "record result delivery",
    )
    .await
    .map(drop)
}
