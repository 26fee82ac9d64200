//! Personal data on SQLite: the statements that clear what
//! [`crate::store::rules::privacy`] lists, for retention (a batch of
//! finished submissions past their period) and for `forget` (one
//! submission). Nothing is decided here.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::db::{db_err, to_millis};
use crate::error::{Error, Result};
use crate::model::submission::SubmissionId;
use crate::store::common::{PURGE_BATCH, state_names};
use crate::store::rules::privacy::{
    ATTEMPT_SET, DELIVERY_SET, EVENT_DATA_KEYS, SYSTEM_ACTORS, Scope, callback_set, events_all,
    submission_set, with_now,
};

/// The ids as a JSON array, for `json_each`.
fn id_list(ids: &[String]) -> Result<String> {
    serde_json::to_string(ids).map_err(|e| Error::Storage {
        operation: "encode submission ids",
        source: Box::new(e),
    })
}

/// Clear what `scope` lists in the rows that belong to `ids` (attempts,
/// events, correlation rows, deliveries; with `forget`, callbacks too).
/// Their submission rows are cleared by the caller.
fn clear_children(conn: &Connection, ids: &[String], scope: Scope, now: i64) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = id_list(ids)?;
    let within = "submission_id IN (SELECT value FROM json_each(?1))";
    let run = |sql: String, operation: &'static str| {
        conn.prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(params![ids]))
            .map_err(db_err(operation))
            .map(drop)
    };
    run(
        format!("UPDATE liaison_attempts SET {ATTEMPT_SET} WHERE {within} AND error IS NOT NULL"),
        "clear attempt errors",
    )?;
    run(
        format!(
            "UPDATE liaison_deliveries SET {DELIVERY_SET} WHERE {within} AND last_error IS NOT NULL"
        ),
        "clear delivery errors",
    )?;
    run(
        "DELETE FROM liaison_correlations WHERE submission_seq IN \
         (SELECT seq FROM liaison_submissions WHERE id IN (SELECT value FROM json_each(?1)))"
            .to_owned(),
        "delete correlation rows",
    )?;
    let events = if events_all(scope) {
        format!("UPDATE liaison_events SET reason = NULL, data = NULL WHERE {within}")
    } else {
        let paths: Vec<String> = EVENT_DATA_KEYS.iter().map(|k| format!("'$.{k}'")).collect();
        format!(
            "UPDATE liaison_events SET \
               reason = CASE WHEN actor LIKE '{SYSTEM_ACTORS}' THEN NULL ELSE reason END, \
               data = CASE WHEN json_valid(data) THEN json_remove(data, {}) ELSE data END \
             WHERE {within}",
            paths.join(", ")
        )
    };
    run(events, "clear event reasons")?;
    if scope == Scope::Forget {
        let set = with_now(&callback_set(scope), &now.to_string());
        run(
            format!("UPDATE liaison_callbacks SET {set} WHERE {within}"),
            "erase callbacks",
        )?;
    }
    Ok(())
}

/// `forget`: erase one submission's personal data.
pub(crate) fn erase_on(conn: &Connection, id: SubmissionId, now: DateTime<Utc>) -> Result<()> {
    let set = with_now(&submission_set(Scope::Forget), "?2");
    conn.prepare_cached(&format!(
        "UPDATE liaison_submissions SET {set} WHERE id = ?1"
    ))
    .and_then(|mut stmt| stmt.execute(params![id.to_string(), to_millis(now)]))
    .map_err(db_err("erase submission"))?;
    clear_children(conn, &[id.to_string()], Scope::Forget, to_millis(now))
}

/// Retention: clear the personal data of at most [`PURGE_BATCH`] finished
/// submissions that became terminal before `cutoff` (never one whose
/// result is not yet delivered to the host), and of their rows. Returns how
/// many.
pub(crate) fn clear_finished(
    conn: &Connection,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let terminal: Vec<String> = state_names(|s| s.is_terminal())
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect();
    let set = with_now(&submission_set(Scope::Retention), "?2");
    let ids: Vec<String> = conn
        .prepare_cached(&format!(
            "UPDATE liaison_submissions SET {set} \
             WHERE seq IN (SELECT seq FROM liaison_submissions \
                 INDEXED BY liaison_submissions_uncleared \
                 WHERE terminal_at IS NOT NULL AND terminal_at <= ?1 \
                   AND personal_cleared_at IS NULL \
                   AND state IN ({}) \
                   AND NOT EXISTS (SELECT 1 FROM liaison_deliveries d \
                        WHERE d.submission_id = liaison_submissions.id AND d.state <> 'delivered') \
                 LIMIT ?3) \
             RETURNING id",
            terminal.join(", ")
        ))
        .and_then(|mut stmt| {
            stmt.query_map(
                params![to_millis(cutoff), to_millis(now), PURGE_BATCH],
                |row| row.get(0),
            )?
            .collect()
        })
        .map_err(db_err("clear personal data"))?;
    clear_children(conn, &ids, Scope::Retention, to_millis(now))?;
    Ok(ids.len() as u64)
}

/// Retention: clear the personal data (headers, error, reference) of
/// callbacks on the same terms as their bodies go: received before
/// `finished` (rejected ones before `rejected`), never one still waiting to
/// be processed or matched, nor one about unfinished work. Returns how
/// many.
pub(crate) fn clear_callbacks(
    conn: &Connection,
    finished: DateTime<Utc>,
    rejected: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64> {
    let terminal: Vec<String> = state_names(|s| s.is_terminal())
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect();
    let set = with_now(&callback_set(Scope::Retention), "?2");
    let cleared = conn
        .prepare_cached(&format!(
            "UPDATE liaison_callbacks SET {set} \
             WHERE seq IN (SELECT c.seq FROM liaison_callbacks c \
                 INDEXED BY liaison_callbacks_uncleared \
                 WHERE c.personal_cleared_at IS NULL \
                   AND c.received_at <= max(?1, ?4) \
                   AND c.received_at <= CASE c.disposition WHEN 'rejected' THEN ?4 ELSE ?1 END \
                   AND c.disposition NOT IN ('received', 'unmatched') \
                   AND NOT EXISTS (SELECT 1 FROM liaison_submissions s \
                        WHERE s.id = c.submission_id AND s.state NOT IN ({})) \
                 LIMIT ?3)",
            terminal.join(", ")
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                to_millis(finished),
                to_millis(now),
                PURGE_BATCH,
                to_millis(rejected)
            ])
        })
        .map_err(db_err("clear callback headers"))?;
    Ok(cleared as u64)
}
