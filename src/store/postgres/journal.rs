//! The operations journal in PostgreSQL: append a line, read lines newest
//! first.

use tokio_postgres::Row;

use super::db::{Db, clean, clean_opt, get};
use crate::error::Result;
use crate::model::event::Actor;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine};
use crate::store::common::{from_millis, to_millis};

const COLUMNS: &str = "id, at, actor, action, partner, target, reason";

fn entry_from_row(row: &Row) -> Result<JournalEntry> {
    Ok(JournalEntry {
        id: get(row, 0)?,
        at: from_millis(get(row, 1)?),
        actor: Actor::from_stored(get(row, 2)?),
        action: get(row, 3)?,
        partner: get(row, 4)?,
        target: get(row, 5)?,
        reason: get(row, 6)?,
    })
}

pub(super) async fn write_on(db: &Db<'_>, line: &JournalLine) -> Result<JournalEntry> {
    let row = db
        .query_one(
            &format!(
                "INSERT INTO liaison_ops_journal (at, actor, action, partner, target, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &to_millis(line.at),
                &clean(line.actor.as_str()),
                &line.action.as_str(),
                &clean_opt(line.partner.clone()),
                &clean_opt(line.target.clone()),
                &clean(&line.reason),
            ],
            "journal an operations action",
        )
        .await?;
    entry_from_row(&row)
}

pub(super) async fn read_on(db: &Db<'_>, filter: &JournalFilter) -> Result<Vec<JournalEntry>> {
    // Only the conditions asked for, so the partner or target index serves.
    let limit = filter.effective_limit();
    let mut clauses = Vec::new();
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(partner);
        clauses.push(format!("partner = ${}", args.len()));
    }
    if let Some(target) = &filter.target {
        args.push(target);
        clauses.push(format!("target = ${}", args.len()));
    }
    if let Some(before) = &filter.before {
        args.push(before);
        clauses.push(format!("id < ${}", args.len()));
    }
    args.push(&limit);
    let n = args.len();
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", clauses.join(" AND "))
    };
    db.query(
        &format!("SELECT {COLUMNS} FROM liaison_ops_journal {filter}ORDER BY id DESC LIMIT ${n}"),
        &args,
        "read the operations journal",
    )
    .await?
    .iter()
    .map(entry_from_row)
    .collect()
}
