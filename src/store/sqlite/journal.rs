//! The operations journal in SQLite: append a line, read lines newest first.

use rusqlite::{Connection, Row, params};

use super::db::{db_err, from_millis, to_millis};
use crate::error::Result;
use crate::model::event::Actor;
use crate::ops::journal::{JournalEntry, JournalFilter, JournalLine};

const COLUMNS: &str = "id, at, actor, action, partner, target, reason";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<JournalEntry> {
    Ok(JournalEntry {
        id: row.get(0)?,
        at: from_millis(row.get(1)?),
        actor: Actor::from_stored(row.get(2)?),
        action: row.get(3)?,
        partner: row.get(4)?,
        target: row.get(5)?,
        reason: row.get(6)?,
    })
}

pub(crate) fn write_on(conn: &Connection, line: &JournalLine) -> Result<JournalEntry> {
    conn.prepare_cached(&format!(
        "INSERT INTO liaison_ops_journal (at, actor, action, partner, target, reason) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {COLUMNS}"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(
            params![
                to_millis(line.at),
                line.actor.as_str(),
                line.action.as_str(),
                line.partner,
                line.target,
                line.reason,
            ],
            entry_from_row,
        )
    })
    .map_err(db_err("journal an operations action"))
}

pub(crate) fn read_on(conn: &Connection, filter: &JournalFilter) -> Result<Vec<JournalEntry>> {
    // Only the conditions asked for, so the partner or target index serves.
    let mut clauses = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(partner) = &filter.partner {
        args.push(partner.clone().into());
        clauses.push(format!("partner = ?{}", args.len()));
    }
    if let Some(target) = &filter.target {
        args.push(target.clone().into());
        clauses.push(format!("target = ?{}", args.len()));
    }
    if let Some(before) = filter.before {
        args.push(before.into());
        clauses.push(format!("id < ?{}", args.len()));
    }
    args.push(filter.effective_limit().into());
    let limit = args.len();
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", clauses.join(" AND "))
    };
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM liaison_ops_journal {filter}ORDER BY id DESC LIMIT ?{limit}"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(rusqlite::params_from_iter(args), entry_from_row)?
            .collect()
    })
    .map_err(db_err("read the operations journal"))
}
